package pipeline

import (
	"fmt"
	"strings"
	"sync"

	"github.com/expr-lang/expr/vm"
	"github.com/tidwall/gjson"

	"github.com/jetline/jetline/worker"
)

// Pipeline is the [worker.Transform] of a [Spec]: it keeps the lines the
// filter accepts and turns each into rows of the spec's tables: one row
// per table, or one per element of an exploded array, or the keys a
// delete entry deletes.
//
// For every line it scans the JSON once, locating the top-level members,
// then evaluates the filters on the few values they reference, and only for
// kept lines extracts, cleans and converts the columns. A line that is not
// JSON, lacks a required value or has a value that does not convert, in
// any of its rows, is rejected whole with a reason (see the Reason
// constants); the rest of the batch is unaffected.
//
// A Pipeline is safe for concurrent use.
type Pipeline struct {
	spec    *Spec
	tables  []worker.Table
	ex      extractor
	filter  *filter
	entries []entry

	scratch sync.Pool
}

// entry is one compiled table entry of the spec.
type entry struct {
	spec   *TableSpec
	filter *filter
	// explode is the extractor index of the exploded array; -1 for none.
	explode int
	columns []column
	// lineID is true when the line's identity is the key, in row[0].
	lineID bool
	// name names the table in reasons when the spec has several.
	name string
}

type scratch struct {
	x       extraction
	env     map[string]any
	machine vm.VM
}

// New compiles spec, as [ParseSpec] or [LoadSpec] returned it, into a
// pipeline.
func New(spec *Spec) (*Pipeline, error) {
	p := &Pipeline{spec: spec}
	compile := func(src, what string) (*filter, error) {
		if src == "" {
			return nil, nil
		}
		f, err := compileFilter(src)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %s: %w", spec.File, what, err)
		}
		for i := range f.vars {
			f.vars[i].index = p.ex.add(f.vars[i].path)
		}
		return f, nil
	}
	var err error
	if p.filter, err = compile(spec.Filter, "filter"); err != nil {
		return nil, err
	}
	tombstoned := map[string]bool{}
	for _, ts := range spec.Tables {
		if ts.Action == ActionDelete {
			tombstoned[ts.WorkerTable().Ident().Sanitize()] = true
		}
	}
	for i := range spec.Tables {
		ts := &spec.Tables[i]
		e := entry{spec: ts, explode: -1, lineID: len(ts.Key) == 0}
		if len(spec.Tables) > 1 {
			e.name = strings.Join(ts.WorkerTable().Ident(), ".") + ": "
		}
		if e.filter, err = compile(ts.Filter, fmt.Sprintf("table %s: filter", ts.Table)); err != nil {
			return nil, err
		}
		if ts.Explode != "" {
			e.explode = p.ex.add(ts.Explode)
		}
		for _, cs := range ts.Columns {
			c := newColumn(cs)
			if cs.Meta == "" && cs.Element == "" {
				c.path = p.ex.add(cs.Path)
			}
			e.columns = append(e.columns, c)
		}
		table := ts.WorkerTable()
		if ts.Action == ActionDelete {
			table.Key, table.Delete = ts.Key, true
		} else {
			table.Update = ts.OnConflict == ConflictUpdate
			table.Version = ts.Version
			table.Tombstones = tombstoned[table.Ident().Sanitize()]
		}
		if err := table.Validate(); err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", spec.File, err)
		}
		p.tables = append(p.tables, table)
		p.entries = append(p.entries, e)
	}
	p.scratch.New = func() any { return &scratch{env: map[string]any{}} }
	return p, nil
}

// Load reads, checks and compiles the spec file at path.
func Load(path string) (*Pipeline, error) {
	spec, err := LoadSpec(path)
	if err != nil {
		return nil, err
	}
	return New(spec)
}

// Spec returns the pipeline's spec.
func (p *Pipeline) Spec() *Spec { return p.spec }

// String returns the spec's file, which names the pipeline in errors
// and logs.
func (p *Pipeline) String() string { return p.spec.File }

// Source returns the source whose lines the pipeline takes.
func (p *Pipeline) Source() string { return p.spec.Source }

// Tables returns the pipeline's tables, one per entry of the spec in its
// order: the entry's columns, after a leading "line_id text" key column
// when it has no key; for a delete entry, the key columns of the table it
// deletes from.
func (p *Pipeline) Tables() []worker.Table { return p.tables }

// Transform decides the outcome of line and adds its rows for Insert.
// Values may refer to line.Data.
func (p *Pipeline) Transform(line *worker.Line, rows *worker.Rows) worker.Result {
	s := p.scratch.Get().(*scratch)
	defer p.scratch.Put(s)
	if res := p.ex.run(line.Data, &s.x); res.Outcome != worker.Insert {
		return res
	}
	keep, res := p.keep(p.filter, s)
	if !keep {
		return res
	}
	kept := false
	for t := range p.entries {
		e := &p.entries[t]
		if keep, res := p.keep(e.filter, s); res.Outcome == worker.Reject {
			return res
		} else if !keep {
			continue
		}
		kept = true
		if res := p.rows(e, t, line, s, rows); res.Outcome != worker.Insert {
			return res
		}
	}
	if !kept {
		return worker.Result{Outcome: worker.Filter, Reason: ReasonFiltered}
	}
	return worker.Result{Outcome: worker.Insert}
}

// keep runs filter f (nil keeps every line): false with the line's result
// when it is filtered out or the filter fails.
func (p *Pipeline) keep(f *filter, s *scratch) (bool, worker.Result) {
	if f == nil {
		return true, worker.Result{}
	}
	keep, err := f.run(&p.ex, &s.x, s.env, &s.machine)
	if err != nil {
		return false, worker.Result{Outcome: worker.Reject, Reason: ReasonFilterError, Detail: firstLine(err.Error())}
	}
	if !keep {
		return false, worker.Result{Outcome: worker.Filter, Reason: ReasonFiltered}
	}
	return true, worker.Result{}
}

// rows adds entry e's rows of line to table t of rows: one, or one per
// element of its exploded array.
func (p *Pipeline) rows(e *entry, t int, line *worker.Line, s *scratch, rows *worker.Rows) worker.Result {
	if e.explode < 0 {
		return p.fill(e, rows.Add(t), line, s, gjson.Result{})
	}
	arr := p.ex.value(&s.x, e.explode)
	switch {
	case !arr.Exists() || arr.Type == gjson.Null:
		return worker.Result{Outcome: worker.Insert}
	case !arr.IsArray():
		return worker.Result{Outcome: worker.Reject, Reason: ReasonBadValue,
			Detail: fmt.Sprintf("%sexplode: path %s holds %s, not an array", e.name, e.spec.Explode, describeJSON(arr))}
	}
	res := worker.Result{Outcome: worker.Insert}
	arr.ForEach(func(_, elem gjson.Result) bool {
		res = p.fill(e, rows.Add(t), line, s, elem)
		return res.Outcome == worker.Insert
	})
	return res
}

// fill sets the columns of row from line and, in an exploded table, from
// its element elem.
func (p *Pipeline) fill(e *entry, row []any, line *worker.Line, s *scratch, elem gjson.Result) worker.Result {
	off := 0
	if e.lineID {
		row[0] = line.ID
		off = 1
	}
	for i := range e.columns {
		c := &e.columns[i]
		var r gjson.Result
		switch {
		case c.Meta == MetaSeq:
			row[off+i] = int64(line.Seq)
			continue
		case c.Meta == MetaLineID:
			row[off+i] = line.ID
			continue
		case c.Meta == MetaSource:
			row[off+i] = line.Source
			continue
		case c.Meta == MetaReceivedAt:
			row[off+i] = line.ReceivedAt
			continue
		case c.Element != "":
			r = elem.Get(c.Element)
		default:
			r = p.ex.value(&s.x, c.path)
		}
		v, reason, detail := c.value(r)
		if reason != "" {
			return worker.Result{Outcome: worker.Reject, Reason: reason, Detail: e.name + detail}
		}
		row[off+i] = v
	}
	return worker.Result{Outcome: worker.Insert}
}

// describeJSON names the JSON type of r, for messages.
func describeJSON(r gjson.Result) string {
	switch {
	case r.IsObject():
		return "an object"
	case r.Type == gjson.String:
		return "a string"
	case r.Type == gjson.Number:
		return "a number"
	}
	return "a boolean"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
