package worker

// Rows holds the rows a batch's lines make, table by table, each row with
// the line it came from. A [Transform] adds a line's rows with [Rows.Add];
// a [Store] writes them all in one transaction. Its buffers are reused
// from batch to batch.
type Rows struct {
	tables []TableRows
	// line is the line rows added now belong to.
	line int
	// marks are the tables' lengths before the current line's rows.
	marks []int
}

// TableRows are the rows of one table.
type TableRows struct {
	// Rows are the rows; Lines[i] is the index of the line Rows[i] came
	// from (in the batch, in the order its lines were transformed).
	Rows  [][]any
	Lines []int

	slots   []any
	columns int
}

// NewRows returns empty rows for tables, a [Transform]'s Tables.
func NewRows(tables []Table) *Rows {
	r := &Rows{tables: make([]TableRows, len(tables)), marks: make([]int, len(tables))}
	for i, t := range tables {
		r.tables[i].columns = len(t.Columns)
	}
	return r
}

// Add returns a new row of table t (an index into the Transform's
// Tables), with a nil slot per column, for the line being transformed.
func (r *Rows) Add(t int) []any {
	tr := &r.tables[t]
	n, c := len(tr.Rows), tr.columns
	if need := (n + 1) * c; need > len(tr.slots) {
		// Slots grow with the batch's rows, which the batch's byte bound
		// keeps bounded; rows already handed out move to the new slots.
		slots := make([]any, max(2*len(tr.slots), need, 64*c))
		copy(slots, tr.slots)
		tr.slots = slots
		for i := range tr.Rows {
			tr.Rows[i] = tr.slots[i*c : (i+1)*c : (i+1)*c]
		}
	}
	row := tr.slots[n*c : (n+1)*c : (n+1)*c]
	clear(row)
	tr.Rows = append(tr.Rows, row)
	tr.Lines = append(tr.Lines, r.line)
	return row
}

// Table returns the rows of table t.
func (r *Rows) Table(t int) *TableRows { return &r.tables[t] }

// Tables returns how many tables the rows are for.
func (r *Rows) Tables() int { return len(r.tables) }

// Len returns how many rows there are in all tables.
func (r *Rows) Len() int {
	n := 0
	for i := range r.tables {
		n += len(r.tables[i].Rows)
	}
	return n
}

// Reset empties r, keeping its buffers but not the values in them: a row
// holds its line's bytes, which are part of the frame the line came in,
// and a slot left holding them would keep that frame alive.
func (r *Rows) Reset() {
	for i := range r.tables {
		tr := &r.tables[i]
		clear(tr.slots)
		tr.Rows, tr.Lines = tr.Rows[:0], tr.Lines[:0]
	}
	r.line = 0
}

// begin starts the rows of line.
func (r *Rows) begin(line int) {
	r.line = line
	for i := range r.tables {
		r.marks[i] = len(r.tables[i].Rows)
	}
}

// drop removes the rows the current line added since begin: it was
// filtered or rejected.
func (r *Rows) drop() {
	for i := range r.tables {
		tr := &r.tables[i]
		tr.Rows, tr.Lines = tr.Rows[:r.marks[i]], tr.Lines[:r.marks[i]]
	}
}

// Transform runs tf on line, which is line number n of the batch, keeping
// the rows it adds only if it inserts. It is how the batch engine and
// `worker check-spec` call a Transform.
func (r *Rows) Transform(tf Transform, line *Line, n int) Result {
	r.begin(n)
	res := tf.Transform(line, r)
	if res.Outcome != Insert {
		r.drop()
	}
	return res
}
