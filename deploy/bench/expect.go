package main

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetline/jetline/worker"
	pipespec "github.com/jetline/jetline/worker/pipeline"
)

// expected is what a pipeline spec makes of the corpus, worked out in the
// bench's own process with worker/pipeline, independently of the running
// workers. It is read-only once built.
type expected struct {
	// Spec is the spec file and Source its source.
	Spec   string `json:"spec"`
	Source string `json:"source"`
	// Tables is what each table must hold once every line is stored, in
	// the spec's order; a delete entry stands for the tombstone table it
	// fills. Tables[0] is the spec's first table, whose rows the latency
	// is measured on.
	Tables []tableExpect `json:"tables"`
	// Kept, Filtered and Rejected count the lines by outcome;
	// RejectedBy counts the rejected ones by reason.
	Kept       int            `json:"kept"`
	Filtered   int            `json:"filtered"`
	Rejected   int            `json:"rejected"`
	RejectedBy map[string]int `json:"rejected_by,omitempty"`
	// Seconds is how long working it out took.
	Seconds float64 `json:"seconds"`

	// receivedAt is the column of Tables[0] holding the line's
	// received_at, or "".
	receivedAt string
	// keys[i] is the key, in text form (see [keyText]), of the row line i
	// makes in Tables[0], or "" when it makes none.
	keys []string
	// rowPerLine says every line is one row, so the last commit ends the
	// run.
	rowPerLine bool
}

// tableExpect is what one table must hold.
type tableExpect struct {
	// Table is "name" or "schema.name"; Key names its key columns.
	Table string   `json:"table"`
	Key   []string `json:"key"`
	// Rows is how many rows it holds at the end: the distinct keys of the
	// rows the kept lines make in it, less the keys a delete entry
	// tombstones. Most is how many it may hold on the way, before the
	// deletes of keys already stored.
	Rows int64 `json:"rows"`
	Most int64 `json:"most"`

	// keySet holds the keys of the rows it holds at the end; nil when
	// they are not known in advance. distinct is what tells its rows'
	// lines apart, its key when empty.
	keySet   map[string]struct{}
	distinct string
}

// keySep separates the values of a composite key in its text form.
const keySep = "\x1f"

// qualified returns t's name as a spec writes it.
func qualified(t worker.Table) string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// expect loads the spec at path and runs its transform over every line
// of c, as the workers will. A table with tombstones holds, at the end,
// none of the keys the spec's delete entries for it delete, whatever the
// order the lines come in, and its tombstone table holds those keys.
func expect(path string, c *corpus) (*expected, error) {
	start := time.Now()
	p, err := pipespec.Load(path)
	if err != nil {
		return nil, err
	}
	spec, tables := p.Spec(), p.Tables()
	e := &expected{Spec: path, Source: spec.Source, RejectedBy: map[string]int{}, keys: make([]string, c.Len())}
	keyIdx := make([][]int, len(tables))
	deletes := map[int]int{} // a delete entry's table → the table it deletes from
	for t, table := range tables {
		if len(spec.Tables[t].Key) == 0 {
			return nil, fmt.Errorf("spec %s: table %s has no key: the typed mode tells which line a row came from by its key", path, qualified(table))
		}
		keyIdx[t] = make([]int, len(table.Key))
		for i, k := range table.Key {
			keyIdx[t][i] = slices.IndexFunc(table.Columns, func(col worker.Column) bool { return col.Name == k })
			if keyIdx[t][i] < 0 {
				return nil, fmt.Errorf("spec %s: table %s: key column %s is not among the columns", path, qualified(table), k)
			}
		}
		name := qualified(table)
		if table.Delete {
			deletes[t] = slices.IndexFunc(tables, func(o worker.Table) bool { return !o.Delete && qualified(o) == name })
			name = qualified(tables[deletes[t]].TombstoneTable())
		}
		e.Tables = append(e.Tables, tableExpect{Table: name, Key: table.Key})
	}
	for _, col := range spec.Tables[0].Columns {
		if col.Meta == pipespec.MetaReceivedAt {
			e.receivedAt = col.Name
			break
		}
	}

	// Lines are split in one run per core; each run counts on its own.
	type tally struct {
		kept, filtered int
		rejectedBy     map[string]int
		keys           []map[string]struct{} // by table
	}
	spans := c.Split(min(runtime.GOMAXPROCS(0), c.Len()))
	tallies := make([]tally, len(spans))
	now := time.Now()
	var wg sync.WaitGroup
	for si, sp := range spans {
		wg.Go(func() {
			t := tally{rejectedBy: map[string]int{}, keys: make([]map[string]struct{}, len(tables))}
			for ti := range t.keys {
				t.keys[ti] = map[string]struct{}{}
			}
			rows := worker.NewRows(tables)
			for i := sp.First; i < sp.First+sp.N; i++ {
				rows.Reset()
				line := worker.Line{Seq: uint64(i + 1), Source: spec.Source, ReceivedAt: now, Data: c.Line(i)}
				res := rows.Transform(p, &line, 0)
				switch res.Outcome {
				case worker.Insert:
					t.kept++
					for ti := range tables {
						for ri, row := range rows.Table(ti).Rows {
							k := keyText(row, keyIdx[ti])
							t.keys[ti][k] = struct{}{}
							if ti == 0 && ri == 0 {
								e.keys[i] = k
							}
						}
					}
				case worker.Filter:
					t.filtered++
				default:
					t.rejectedBy[res.Reason]++
				}
			}
			tallies[si] = t
		})
	}
	wg.Wait()
	for ti := range e.Tables {
		e.Tables[ti].keySet = map[string]struct{}{}
	}
	for _, t := range tallies {
		e.Kept += t.kept
		e.Filtered += t.filtered
		for reason, n := range t.rejectedBy {
			e.RejectedBy[reason] += n
			e.Rejected += n
		}
		for ti, keys := range t.keys {
			maps.Copy(e.Tables[ti].keySet, keys)
		}
	}
	for ti := range e.Tables {
		e.Tables[ti].Most = int64(len(e.Tables[ti].keySet))
	}
	for ti, ui := range deletes {
		for k := range e.Tables[ti].keySet {
			delete(e.Tables[ui].keySet, k)
		}
	}
	for ti := range e.Tables {
		e.Tables[ti].Rows = int64(len(e.Tables[ti].keySet))
	}
	e.Seconds = time.Since(start).Seconds()
	return e, nil
}

// rows returns the rows every table must hold at the end, together.
func (e *expected) rows() int64 {
	var n int64
	for _, t := range e.Tables {
		n += t.Rows
	}
	return n
}

// keyText returns the key values of row, at idx, in the text form
// Postgres gives them (`col::text`), joined by [keySep].
func keyText(row []any, idx []int) string {
	parts := make([]string, len(idx))
	for i, j := range idx {
		switch v := row[j].(type) {
		case int64:
			parts[i] = strconv.FormatInt(v, 10)
		case int32:
			parts[i] = strconv.FormatInt(int64(v), 10)
		case string:
			parts[i] = v
		default:
			parts[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(parts, keySep)
}

// rejectedText lists the rejection reasons with their counts, most
// frequent first.
func (e *expected) rejectedText() string {
	if e.Rejected == 0 {
		return "none"
	}
	reasons := slices.SortedFunc(maps.Keys(e.RejectedBy), func(a, b string) int {
		if d := e.RejectedBy[b] - e.RejectedBy[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s %s", r, thousands(int64(e.RejectedBy[r])))
	}
	return strings.Join(parts, ", ")
}

// tablesText lists the tables with their keys and expected rows.
func (e *expected) tablesText() string {
	parts := make([]string, len(e.Tables))
	for i, t := range e.Tables {
		parts[i] = fmt.Sprintf("%s (key %s, %s rows)", t.Table, strings.Join(t.Key, ", "), thousands(t.Rows))
	}
	return strings.Join(parts, ", ")
}
