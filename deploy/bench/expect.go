package main

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetline/jetline/worker"
	pipespec "github.com/jetline/jetline/worker/pipeline"
)

// expected is what the workers run and what it makes of the corpus: the
// raw landing (see [rawExpected]), or a pipeline spec worked out in the
// bench's own process with worker/pipeline, independently of the running
// workers. Only the measurement fills in its tables' Rows, DistinctKeys
// and RowsPerSec.
type expected struct {
	// Spec is the spec file, empty for the raw landing.
	Spec   string `json:"spec,omitempty"`
	Source string `json:"source,omitempty"`
	// Tables, in the spec's order, is what each table must hold once every
	// line is stored; a delete entry stands for the tombstone table it
	// fills.
	Tables     []table        `json:"tables"`
	Kept       int            `json:"kept"`
	Filtered   int            `json:"filtered"`
	Rejected   int            `json:"rejected"`
	RejectedBy map[string]int `json:"rejected_by,omitempty"`
	Seconds    float64        `json:"seconds"` // spent working it out

	// rowPerLine says every line is one row, so the last commit ends the
	// run.
	rowPerLine bool
}

// table is one table of a run: what it must hold, then what it held.
type table struct {
	Table string   `json:"table"` // "name" or "schema.name"
	Key   []string `json:"key"`
	// Want is how many rows it holds at the end: the distinct keys of the
	// rows the kept lines make in it, less those a delete entry
	// tombstones. Most is how many it may hold before the deletes.
	Want int64 `json:"expected_rows"`
	Most int64 `json:"most_rows"`
	// Rows and DistinctKeys, its count(*) and count(DISTINCT key) at the
	// end, must both equal Want.
	Rows         int64   `json:"rows"`
	DistinctKeys int64   `json:"distinct_keys"`
	RowsPerSec   float64 `json:"rows_per_sec"`

	// keySet holds the keys of its rows at the end, nil when not known in
	// advance; distinct tells its rows' lines apart, its key when empty.
	keySet   map[string]struct{}
	distinct string
}

// keySep separates the values of a composite key in its text form.
const keySep = "\x1f"

// rawExpected is what the raw landing, the workers' default pipeline,
// makes of n lines: a row each of events (line_id, seq, source,
// received_at, payload jsonb), none of two lines with one status id (each
// line of the corpus has its own). Its keys, line ids, are the gateway's
// to choose, so rows are not checked against them.
func rawExpected(n int) *expected {
	return &expected{Kept: n, rowPerLine: true,
		Tables: []table{{Table: "events", Key: []string{"line_id"}, Want: int64(n), Most: int64(n), distinct: "payload->'id'"}}}
}

func (t *table) ident() string { return pgx.Identifier(strings.Split(t.Table, ".")).Sanitize() }

// distinctSQL is what count(DISTINCT …) counts to tell its rows apart.
func (t *table) distinctSQL() string {
	if t.distinct != "" {
		return t.distinct
	}
	return "(" + keyList(t.Key, "") + ")"
}

// keyList returns the columns of key as SQL identifiers, each followed by
// suffix, separated by commas.
func keyList(key []string, suffix string) string {
	cols := make([]string, len(key))
	for i, k := range key {
		cols[i] = pgx.Identifier{k}.Sanitize() + suffix
	}
	return strings.Join(cols, ", ")
}

// loadSpec works out what the spec in file (-spec or -against; empty:
// the corpus's own) makes of the corpus.
func loadSpec(b *bench, file string) (*expected, error) {
	spec := cmp.Or(file, DefaultSpec)
	if k := b.corpus.kind; file == "" && k.keepEvery > 0 {
		spec = filepath.Join(b.h.dir, k.name+".yaml")
		if err := os.WriteFile(spec, []byte(k.spec()), 0o644); err != nil {
			return nil, fmt.Errorf("write the %s pipeline: %w", k.name, err)
		}
	}
	spec, err := filepath.Abs(spec)
	if err != nil {
		return nil, fmt.Errorf("resolve -spec %s: %w", spec, err)
	}
	b.pr.step("working out what %s makes of the corpus (in-process, worker/pipeline)", spec)
	exp, err := expect(spec, b.corpus)
	if err != nil {
		return nil, fmt.Errorf("load -spec: %w", err)
	}
	b.pr.step("expected: %s; %s; in %.1fs", exp.linesText(), exp.tablesText(), exp.Seconds)
	return exp, nil
}

// expect loads the spec at path and runs its transform over every line
// of c, as the workers will, a share of the lines on each core. A table
// with tombstones holds, at the end, none of the keys the spec's delete
// entries for it delete, whatever the order the lines come in, and its
// tombstone table holds those keys.
func expect(path string, c *corpus) (*expected, error) {
	start := time.Now()
	p, err := pipespec.Load(path)
	if err != nil {
		return nil, err
	}
	spec, tables := p.Spec(), p.Tables()
	e := &expected{Spec: path, Source: spec.Source, RejectedBy: map[string]int{}}
	keyIdx := make([][]int, len(tables))
	deletes := map[int]int{} // a delete entry's table → the table it deletes from
	for t, tbl := range tables {
		name := strings.Join(tbl.Ident(), ".")
		if len(spec.Tables[t].Key) == 0 {
			return nil, fmt.Errorf("spec %s: table %s has no key: the typed mode tells which line a row came from by its key", path, name)
		}
		for _, k := range tbl.Key {
			i := slices.IndexFunc(tbl.Columns, func(col worker.Column) bool { return col.Name == k })
			if i < 0 {
				return nil, fmt.Errorf("spec %s: table %s: key column %s is not among the columns", path, name, k)
			}
			keyIdx[t] = append(keyIdx[t], i)
		}
		if tbl.Delete {
			deletes[t] = slices.IndexFunc(tables, func(o worker.Table) bool { return !o.Delete && strings.Join(o.Ident(), ".") == name })
			name = strings.Join(tables[deletes[t]].TombstoneTable().Ident(), ".")
		}
		e.Tables = append(e.Tables, table{Table: name, Key: tbl.Key, keySet: map[string]struct{}{}})
	}

	now := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sp := range c.Split(min(runtime.GOMAXPROCS(0), c.Len())) {
		wg.Go(func() {
			part, keys := &expected{RejectedBy: map[string]int{}}, make([][]string, len(tables))
			rows := worker.NewRows(tables)
			for i := sp.First; i < sp.First+sp.N; i++ {
				rows.Reset()
				line := worker.Line{Seq: uint64(i + 1), Source: spec.Source, ReceivedAt: now, Data: c.Line(i)}
				switch res := rows.Transform(p, &line, 0); res.Outcome {
				case worker.Insert:
					part.Kept++
					for ti := range tables {
						for _, row := range rows.Table(ti).Rows {
							keys[ti] = append(keys[ti], keyText(row, keyIdx[ti]))
						}
					}
				case worker.Filter:
					part.Filtered++
				default:
					part.RejectedBy[res.Reason]++
					part.Rejected++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			e.Kept, e.Filtered, e.Rejected = e.Kept+part.Kept, e.Filtered+part.Filtered, e.Rejected+part.Rejected
			for reason, n := range part.RejectedBy {
				e.RejectedBy[reason] += n
			}
			for ti, ks := range keys {
				for _, k := range ks {
					e.Tables[ti].keySet[k] = struct{}{}
				}
			}
		})
	}
	wg.Wait()
	for ti := range e.Tables {
		e.Tables[ti].Most = int64(len(e.Tables[ti].keySet))
	}
	for ti, ui := range deletes {
		for k := range e.Tables[ti].keySet {
			delete(e.Tables[ui].keySet, k)
		}
	}
	for ti := range e.Tables {
		e.Tables[ti].Want = int64(len(e.Tables[ti].keySet))
	}
	e.Seconds = time.Since(start).Seconds()
	return e, nil
}

// rows returns the rows every table must hold at the end, together.
func (e *expected) rows() int64 {
	var n int64
	for _, t := range e.Tables {
		n += t.Want
	}
	return n
}

// keyText returns the key values of row, at idx, in the text form
// Postgres gives them (`col::text`), joined by [keySep].
func keyText(row []any, idx []int) string {
	parts := make([]string, len(idx))
	for i, j := range idx {
		parts[i] = fmt.Sprint(row[j]) // integers in decimal, text as is
	}
	return strings.Join(parts, keySep)
}

// linesText says what the spec made of the lines: kept, filtered and
// rejected, with the rejection reasons most frequent first.
func (e *expected) linesText() string {
	reasons := slices.SortedFunc(maps.Keys(e.RejectedBy), func(a, b string) int {
		return cmp.Or(e.RejectedBy[b]-e.RejectedBy[a], strings.Compare(a, b))
	})
	why := make([]string, len(reasons))
	for i, r := range reasons {
		why[i] = r + " " + thousands(int64(e.RejectedBy[r]))
	}
	return fmt.Sprintf("%s kept, %s filtered, %s rejected (%s)", thousands(int64(e.Kept)), thousands(int64(e.Filtered)),
		thousands(int64(e.Rejected)), cmp.Or(strings.Join(why, ", "), "none"))
}

// tablesText lists the tables with their keys and expected rows.
func (e *expected) tablesText() string {
	parts := make([]string, len(e.Tables))
	for i, t := range e.Tables {
		parts[i] = fmt.Sprintf("%s (key %s, %s rows)", t.Table, strings.Join(t.Key, ", "), thousands(t.Want))
	}
	return strings.Join(parts, ", ")
}
