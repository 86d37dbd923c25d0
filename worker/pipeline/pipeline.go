package pipeline

import (
	"fmt"
	"strings"
	"sync"

	"github.com/expr-lang/expr/vm"

	"github.com/jetline/jetline/worker"
)

// Pipeline is the [worker.Transform] of a [Spec]: it keeps the lines the
// filter accepts and turns each into a row of the spec's table.
//
// For every line it scans the JSON once, locating the top-level members,
// then evaluates the filter on the few values it references, and only for
// kept lines extracts, cleans and converts the columns. A line that is not
// JSON, lacks a required value or has a value that does not convert is
// rejected with a reason (see the Reason constants); the rest of the batch
// is unaffected.
//
// A Pipeline is safe for concurrent use.
type Pipeline struct {
	spec    *Spec
	table   worker.Table
	ex      extractor
	filter  *filter
	columns []column
	// lineID is true when the line's identity is the key, in row[0].
	lineID bool

	scratch sync.Pool
}

type scratch struct {
	x       extraction
	env     map[string]any
	machine vm.VM
}

// New compiles spec, as [ParseSpec] or [LoadSpec] returned it, into a
// pipeline.
func New(spec *Spec) (*Pipeline, error) {
	p := &Pipeline{spec: spec, table: spec.WorkerTable(), lineID: len(spec.Key) == 0}
	if err := p.table.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline %s: %w", spec.File, err)
	}
	if spec.Filter != "" {
		f, err := compileFilter(spec.Filter)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: filter: %w", spec.File, err)
		}
		for i := range f.vars {
			f.vars[i].index = p.ex.add(f.vars[i].path)
		}
		p.filter = f
	}
	for _, cs := range spec.Columns {
		c := newColumn(cs)
		if cs.Meta == "" {
			c.path = p.ex.add(cs.Path)
		}
		p.columns = append(p.columns, c)
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

// Source returns the source whose lines the pipeline takes.
func (p *Pipeline) Source() string { return p.spec.Source }

// Table returns the pipeline's table: the spec's columns, after a leading
// "line_id text" key column when the spec has no key.
func (p *Pipeline) Table() worker.Table { return p.table }

// Transform decides the outcome of line and fills row for Insert. Values
// may refer to line.Data.
func (p *Pipeline) Transform(line *worker.Line, row []any) worker.Result {
	s := p.scratch.Get().(*scratch)
	defer p.scratch.Put(s)
	if res := p.ex.run(line.Data, &s.x); res.Outcome != worker.Insert {
		return res
	}
	if p.filter != nil {
		keep, err := p.filter.run(&p.ex, &s.x, s.env, &s.machine)
		if err != nil {
			return worker.Result{Outcome: worker.Reject, Reason: ReasonFilterError, Detail: firstLine(err.Error())}
		}
		if !keep {
			return worker.Result{Outcome: worker.Filter, Reason: ReasonFiltered}
		}
	}
	off := 0
	if p.lineID {
		row[0] = line.ID
		off = 1
	}
	for i := range p.columns {
		c := &p.columns[i]
		switch c.Meta {
		case MetaSeq:
			row[off+i] = int64(line.Seq)
			continue
		case MetaLineID:
			row[off+i] = line.ID
			continue
		case MetaSource:
			row[off+i] = line.Source
			continue
		case MetaReceivedAt:
			row[off+i] = line.ReceivedAt
			continue
		}
		v, reason, detail := c.value(p.ex.value(&s.x, c.path))
		if reason != "" {
			return worker.Result{Outcome: worker.Reject, Reason: reason, Detail: detail}
		}
		row[off+i] = v
	}
	return worker.Result{Outcome: worker.Insert}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
