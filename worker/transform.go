package worker

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Line is one received line as a [Transform] sees it.
type Line struct {
	// ID identifies the line for its whole life and keys its row in the
	// raw landing table: the header topology.HeaderLineID if the message
	// has one (a replayed dead letter), else its Nats-Msg-Id (the gateway's
	// "<instance>.<conn>.<line>"), else "<stream created>.<seq>" (see
	// [Options.StreamCreated]). Unlike the stream sequence it is the same
	// for every copy of the line: one JetStream stored twice because a
	// publish was retried across a server restart, or one replayed from
	// the dead letters.
	ID string
	// Seq is the message's sequence in the ingest stream: where to find it
	// in NATS, and the order lines arrived in.
	Seq uint64
	// Source is the listener the line arrived on (from the subject).
	Source string
	// ReceivedAt is when the gateway read the line, or when JetStream stored
	// it if the header is missing or malformed.
	ReceivedAt time.Time
	// Data is the line without its newline. It stays valid until the batch
	// is acknowledged, so rows may refer to it without copying.
	Data []byte
}

// Outcome is what a [Transform] decided for one line.
type Outcome uint8

const (
	// Insert means the line becomes a row; the store may still find it a
	// duplicate of a row already stored, or reject it.
	Insert Outcome = iota
	// Filter means the line was read correctly but is not wanted.
	Filter
	// Reject means the line cannot be stored; Result.Reason says why.
	Reject
)

// String returns "insert", "filter" or "reject".
func (o Outcome) String() string {
	switch o {
	case Insert:
		return "insert"
	case Filter:
		return "filter"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Result is the outcome of transforming one line.
type Result struct {
	// Outcome is what happens to the line.
	Outcome Outcome
	// Reason names, for Filter and Reject, why: a short snake_case word
	// such as "invalid_json", used to count outcomes, so it must come
	// from a small fixed set.
	Reason string
	// Detail is free text for the log, such as the offset of a syntax
	// error. Optional.
	Detail string
}

// Transform turns received lines into rows of one or more tables. The
// default is [RawLanding]; declarative pipelines implement it too.
//
// The worker calls Tables once, at start, and then Transform for every
// line from several goroutines at once, so implementations must be safe
// for concurrent use. Transform must not block or do I/O: it runs between
// a fetch and the database transaction of the batch.
type Transform interface {
	// Tables describes the tables rows are written to, at least one. All
	// rows of a batch, in every table, are stored in one transaction.
	Tables() []Table
	// Transform decides the outcome of line. For Insert it adds the
	// line's rows with [Rows.Add], any number in any of the tables (none
	// at all is fine: an exploded empty array), filling each with values
	// pgx can encode in binary for the column's type (int64, string,
	// time.Time, []byte for json/jsonb, …); for Filter and Reject what it
	// added is dropped. Values may refer to line.Data. Transform must not
	// keep rows or line after it returns.
	Transform(line *Line, rows *Rows) Result
}

// Column is one column of a [Table].
type Column struct {
	// Name is the column name, an SQL identifier.
	Name string
	// Type is the column's PostgreSQL type as written in CREATE TABLE,
	// such as "bigint", "text" or "timestamptz".
	Type string
	// NotNull adds NOT NULL to the column.
	NotNull bool
	// Default is the column's DEFAULT, an SQL expression such as now();
	// empty for none.
	Default string
	// Compression is the TOAST compression of large values, "lz4" or
	// "pglz"; empty keeps the server's default (pglz unless
	// default_toast_compression says otherwise).
	Compression string
}

// Table describes the table a [Transform] fills, so the store needs no
// knowledge of any particular table.
type Table struct {
	// Schema is the schema holding the table; empty means the search path
	// (normally "public").
	Schema string
	// Name is the table name.
	Name string
	// Columns are the columns rows supply, in row order.
	Columns []Column
	// Key names the columns whose values identify a row: its primary key.
	// A row whose key is already stored is a duplicate and is skipped,
	// which makes redelivered batches harmless. Required.
	Key []string
	// Update makes a row whose key is stored replace the stored row
	// instead of being skipped (INSERT … ON CONFLICT DO UPDATE). Of the
	// rows of one key in one batch only one is written: the greatest by
	// Version, else the last in stream order.
	Update bool
	// Version, with Update, names the column that orders a key's rows: a
	// row replaces the stored one only if its version is greater, so the
	// outcome does not depend on the order concurrent workers commit in.
	// Empty means the last committed row wins.
	Version string
	// Tombstones makes the table remember the keys deleted from it, in
	// [Table.TombstoneTable], and drop rows of those keys from then on.
	Tombstones bool
	// Delete makes this a delete entry rather than a table: its rows are
	// keys (its Columns, which are its Key) of rows to delete from the
	// table of the same Schema and Name, another of the Transform's
	// tables, whose Tombstones must be set.
	Delete bool
}

var identPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// ParseTableName splits "name" or "schema.name" into its parts and checks
// each is a plain SQL identifier (letters, digits and '_', not starting
// with a digit, at most 63 characters).
func ParseTableName(s string) (schema, name string, err error) {
	schema, name, qualified := strings.Cut(s, ".")
	if !qualified {
		schema, name = "", s
	}
	if qualified && !identPattern.MatchString(schema) || !identPattern.MatchString(name) {
		return "", "", fmt.Errorf("table name %q is not valid: use name or schema.name, each 1 to 63 letters, digits or '_', not starting with a digit", s)
	}
	return schema, name, nil
}

// Validate reports what is wrong with t: bad identifiers, no columns, a
// missing or unknown key column.
func (t Table) Validate() error {
	qualified := t.Name
	if t.Schema != "" {
		qualified = t.Schema + "." + t.Name
	}
	if _, _, err := ParseTableName(qualified); err != nil {
		return err
	}
	if len(t.Columns) == 0 {
		return fmt.Errorf("table %s has no columns", qualified)
	}
	seen := make(map[string]bool, len(t.Columns))
	for _, c := range t.Columns {
		if !identPattern.MatchString(c.Name) {
			return fmt.Errorf("table %s: column name %q is not a plain SQL identifier", qualified, c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("table %s: column %q appears twice", qualified, c.Name)
		}
		if strings.TrimSpace(c.Type) == "" || strings.ContainsAny(c.Type+c.Default, ";") {
			return fmt.Errorf("table %s: column %q has no usable type (got %q)", qualified, c.Name, c.Type)
		}
		if c.Compression != "" && c.Compression != "lz4" && c.Compression != "pglz" {
			return fmt.Errorf("table %s: column %q: compression must be lz4, pglz or empty (got %q)", qualified, c.Name, c.Compression)
		}
		seen[c.Name] = true
	}
	if len(t.Key) == 0 {
		return errors.New("table " + qualified + " has no key: without one a redelivered batch would insert rows twice")
	}
	for _, k := range t.Key {
		if !seen[k] {
			return fmt.Errorf("table %s: key column %q is not one of its columns", qualified, k)
		}
	}
	switch {
	case t.Version != "" && !t.Update:
		return fmt.Errorf("table %s: a version orders updates; set Update too", qualified)
	case t.Version != "" && !seen[t.Version]:
		return fmt.Errorf("table %s: version column %q is not one of its columns", qualified, t.Version)
	case t.Delete && (t.Update || t.Tombstones || len(t.Key) != len(t.Columns)):
		return fmt.Errorf("table %s: a delete entry has only its key columns, and no Update or Tombstones", qualified)
	}
	return nil
}

// TombstoneTable returns the table that remembers the keys deleted from t
// (see [Table.Tombstones]): t's name with "_tombstones", in t's schema,
// holding t's key columns and when the key was deleted.
func (t Table) TombstoneTable() Table {
	tomb := Table{Schema: t.Schema, Name: tombstoneName(t.Name), Key: t.Key}
	for _, k := range t.Key {
		for _, c := range t.Columns {
			if c.Name == k {
				tomb.Columns = append(tomb.Columns, Column{Name: c.Name, Type: c.Type, NotNull: true})
			}
		}
	}
	tomb.Columns = append(tomb.Columns, Column{Name: "deleted_at", Type: "timestamptz", NotNull: true, Default: "now()"})
	return tomb
}

// tombstoneName is name with "_tombstones", shortened to fit an
// identifier's 63 characters.
func tombstoneName(name string) string {
	const suffix = "_tombstones"
	return name[:min(len(name), 63-len(suffix))] + suffix
}

// Ident returns the table's name as a pgx identifier.
func (t Table) Ident() pgx.Identifier {
	if t.Schema == "" {
		return pgx.Identifier{t.Name}
	}
	return pgx.Identifier{t.Schema, t.Name}
}

// ColumnNames returns the names of t's columns in row order.
func (t Table) ColumnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// CreateSQL returns the CREATE TABLE IF NOT EXISTS statement for t, with
// its key as primary key.
func (t Table) CreateSQL() string {
	var b strings.Builder
	b.WriteString("CREATE TABLE IF NOT EXISTS ")
	b.WriteString(t.Ident().Sanitize())
	b.WriteString(" (\n")
	for _, c := range t.Columns {
		fmt.Fprintf(&b, "\t%s %s", pgx.Identifier{c.Name}.Sanitize(), c.Type)
		if c.Compression != "" {
			b.WriteString(" COMPRESSION ")
			b.WriteString(c.Compression)
		}
		if c.Default != "" {
			b.WriteString(" DEFAULT ")
			b.WriteString(c.Default)
		}
		if c.NotNull {
			b.WriteString(" NOT NULL")
		}
		b.WriteString(",\n")
	}
	b.WriteString("\tPRIMARY KEY (")
	b.WriteString(quoteList(t.Key))
	b.WriteString(")\n)")
	return b.String()
}

func quoteList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(quoted, ", ")
}

// Reasons the raw landing rejects a line.
const (
	// ReasonInvalidJSON: the line is not one JSON value in UTF-8.
	ReasonInvalidJSON = "invalid_json"
	// ReasonUnsupportedEscape: the line is JSON, but jsonb cannot hold it
	// (a \u0000 escape or an unpaired surrogate escape).
	ReasonUnsupportedEscape = "unsupported_escape"
)

// RawLanding is the default [Transform]: every line that is valid JSON
// becomes one row (line_id, seq, source, received_at, payload) keyed by
// the line's identity ([Line].ID). The zero value is not usable; use
// [NewRawLanding].
type RawLanding struct {
	table Table
}

// NewRawLanding returns the raw landing into table, "name" or
// "schema.name" (WORKER_TABLE, "events" by default).
func NewRawLanding(table string) (*RawLanding, error) {
	schema, name, err := ParseTableName(table)
	if err != nil {
		return nil, err
	}
	return &RawLanding{table: Table{
		Schema: schema,
		Name:   name,
		Columns: []Column{
			// The key is the line's identity, not its stream sequence: a
			// line JetStream stored twice (a publish retried after a
			// server restart, which forgets the ids of lines the workers
			// already took) has two sequences but one identity.
			{Name: LineIDColumn, Type: "text", NotNull: true},
			{Name: "seq", Type: "bigint", NotNull: true},
			{Name: "source", Type: "text", NotNull: true},
			{Name: "received_at", Type: "timestamptz", NotNull: true},
			// Payloads of a few KB are compressed; lz4 doubles the rows
			// a backend stores per second compared with the default pglz
			// (~10,000 against ~5,500 tweet-sized rows/s).
			{Name: "payload", Type: "jsonb", NotNull: true, Compression: "lz4"},
		},
		Key: []string{LineIDColumn},
	}}, nil
}

// LineIDColumn is the key column of tables keyed by the line's identity
// ([Line].ID): the raw landing table and pipelines without a key.
const LineIDColumn = "line_id"

// Tables returns the raw landing table: line_id text primary key, seq
// bigint, source text, received_at timestamptz, payload jsonb.
func (r *RawLanding) Tables() []Table { return []Table{r.table} }

// Transform accepts line if it is one JSON value that jsonb can store.
// It checks the syntax with a single allocation-free pass rather than
// decoding: the payload is stored as it came, and Postgres parses it again
// for jsonb anyway.
func (r *RawLanding) Transform(line *Line, rows *Rows) Result {
	switch verdict, off := scanJSON(line.Data); verdict {
	case jsonInvalid:
		return Result{Outcome: Reject, Reason: ReasonInvalidJSON, Detail: fmt.Sprintf("syntax error at byte %d of %d", off, len(line.Data))}
	case jsonUnsupportedEscape:
		return Result{Outcome: Reject, Reason: ReasonUnsupportedEscape, Detail: fmt.Sprintf("jsonb cannot store the \\u escape at byte %d", off)}
	}
	row := rows.Add(0)
	row[0] = line.ID
	row[1] = int64(line.Seq)
	row[2] = line.Source
	row[3] = line.ReceivedAt
	row[4] = line.Data
	return Result{Outcome: Insert}
}
