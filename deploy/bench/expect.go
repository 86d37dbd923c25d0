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
	// Spec is the spec file, Source its source and Table its table
	// ("name" or "schema.name").
	Spec   string `json:"spec"`
	Source string `json:"source"`
	Table  string `json:"table"`
	// Key names the table's key columns.
	Key []string `json:"key"`
	// Kept, Filtered and Rejected count the lines by outcome;
	// RejectedBy counts the rejected ones by reason.
	Kept       int            `json:"kept"`
	Filtered   int            `json:"filtered"`
	Rejected   int            `json:"rejected"`
	RejectedBy map[string]int `json:"rejected_by,omitempty"`
	// Rows is the number of distinct keys among the kept lines: the rows
	// the table must hold.
	Rows int64 `json:"rows"`
	// Seconds is how long working it out took.
	Seconds float64 `json:"seconds"`

	// receivedAt is the column holding the line's received_at, or "".
	receivedAt string
	// keys[i] is the key of line i in text form (see [keyText]), or ""
	// when the spec does not keep line i.
	keys []string
	// keySet holds every kept key.
	keySet map[string]struct{}
}

// keySep separates the values of a composite key in its text form.
const keySep = "\x1f"

// expect loads the spec at path and runs its transform over every line
// of c, as the workers will.
func expect(path string, c *corpus) (*expected, error) {
	start := time.Now()
	p, err := pipespec.Load(path)
	if err != nil {
		return nil, err
	}
	spec, table := p.Spec(), p.Tables()[0]
	if len(p.Tables()) > 1 {
		return nil, fmt.Errorf("spec %s has several tables: the typed mode counts the rows of one", path)
	}
	if len(spec.Tables[0].Key) == 0 {
		return nil, fmt.Errorf("spec %s has no key: the typed mode tells which line a row came from by its key", path)
	}
	name := table.Name
	if table.Schema != "" {
		name = table.Schema + "." + table.Name
	}
	e := &expected{Spec: path, Source: spec.Source, Table: name, Key: table.Key,
		RejectedBy: map[string]int{}, keys: make([]string, c.Len()), keySet: map[string]struct{}{}}
	for _, col := range spec.Tables[0].Columns {
		if col.Meta == pipespec.MetaReceivedAt {
			e.receivedAt = col.Name
			break
		}
	}
	keyIdx := make([]int, len(table.Key))
	for i, k := range table.Key {
		keyIdx[i] = slices.IndexFunc(table.Columns, func(col worker.Column) bool { return col.Name == k })
		if keyIdx[i] < 0 {
			return nil, fmt.Errorf("spec %s: key column %s is not among the columns", path, k)
		}
	}

	// Lines are split in one run per core; each run counts on its own.
	type tally struct {
		kept, filtered int
		rejectedBy     map[string]int
	}
	spans := c.Split(min(runtime.GOMAXPROCS(0), c.Len()))
	tallies := make([]tally, len(spans))
	now := time.Now()
	var wg sync.WaitGroup
	for si, sp := range spans {
		wg.Go(func() {
			t := tally{rejectedBy: map[string]int{}}
			rows := worker.NewRows(p.Tables())
			for i := sp.First; i < sp.First+sp.N; i++ {
				rows.Reset()
				line := worker.Line{Seq: uint64(i + 1), Source: spec.Source, ReceivedAt: now, Data: c.Line(i)}
				res := rows.Transform(p, &line, 0)
				switch res.Outcome {
				case worker.Insert:
					t.kept++
					e.keys[i] = keyText(rows.Table(0).Rows[0], keyIdx)
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
	for _, t := range tallies {
		e.Kept += t.kept
		e.Filtered += t.filtered
		for reason, n := range t.rejectedBy {
			e.RejectedBy[reason] += n
			e.Rejected += n
		}
	}
	for _, k := range e.keys {
		if k != "" {
			e.keySet[k] = struct{}{}
		}
	}
	e.Rows = int64(len(e.keySet))
	e.Seconds = time.Since(start).Seconds()
	return e, nil
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
