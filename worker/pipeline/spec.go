// Package pipeline turns lines into rows of a user's own table, as a
// pipeline spec file (YAML) declares: which source it reads, which lines
// it keeps (a filter expression), and for each column a JSON path, a
// PostgreSQL type and cleaning steps. A [Pipeline] is a [worker.Transform].
//
// A spec looks like this (deploy/pipelines/tweets.yaml is a full one):
//
//	source: tweets                 # lines published on ingest.tweets
//	table: tweets                  # name or schema.name; created if missing
//	key: id                        # or [a, b]; without it the line's identity
//	filter: retweeted_status == nil && lang in ["en", "ja"]
//	columns:
//	  - name: id
//	    path: id                   # gjson syntax: user.screen_name, entities.hashtags.#.text
//	    type: bigint
//	    required: true
//	  - name: text
//	    path: text
//	    type: text
//	    clean: [nfc, strip_control, {max_marks: 2}, collapse_space, trim, {truncate: 280}, empty_null]
//	  - name: received_at
//	    meta: received_at          # or seq, line_id, source: the line's metadata
//	    type: timestamptz
//
// Everything is checked when the spec is loaded; [LoadSpec] reports every
// mistake with its file, line and field, what is wrong and what would be
// valid.
package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/worker"
)

// SpecError is one mistake in a spec file.
type SpecError struct {
	// File is the spec file's name as given to [Load] or [Parse].
	File string
	// Line and Column locate the mistake (1-based); 0 when unknown.
	Line, Column int
	// Field is where in the spec the mistake is, such as "columns[2].type".
	Field string
	// Problem says what is wrong and what would be valid.
	Problem string
}

// Error returns "file:line:column: field: problem".
func (e *SpecError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}

// Spec is a parsed and checked pipeline spec.
type Spec struct {
	// File is where the spec was read from.
	File string
	// Source is the source whose lines the pipeline takes (subject
	// ingest.<source>).
	Source string
	// Filter is the filter expression every table's rows pass; empty
	// keeps every line.
	Filter string
	// Tables are the tables a line makes rows in, in the order the spec
	// lists them; at least one. A spec without tables: is one entry.
	Tables []TableSpec
}

// TableSpec is one entry of a [Spec]'s tables: the rows a line makes in
// one table, or the rows it deletes from one.
type TableSpec struct {
	// Schema and Table name the target table; Schema may be empty.
	Schema, Table string
	// Key names the columns that identify a row. Empty means the line's
	// identity (worker.Line.ID) is the key, in an extra leading column
	// "line_id". A delete entry's key is its target's.
	Key []string
	// Filter is a filter expression the line must pass as well as the
	// spec's, for this table; empty adds none.
	Filter string
	// Explode is the path of an array: the line makes one row per element,
	// none when the array is empty or missing. Columns then read from the
	// line (path) or from the element (element).
	Explode string
	// OnConflict is what a row whose key is stored already does:
	// [ConflictIgnore] (the stored row stays) or [ConflictUpdate].
	OnConflict string
	// Version, with ConflictUpdate, names the column that orders a key's
	// rows: a row replaces the stored one only when its version is
	// greater. Empty means the last committed row wins.
	Version string
	// Action is [ActionInsert], or [ActionDelete]: the rows name keys to
	// delete from Table, which another entry of the spec fills, and to
	// keep out of it from then on.
	Action string
	// Columns are the table's columns in order; for a delete, the
	// target's key columns.
	Columns []ColumnSpec

	field     string
	line, col int
}

// What a row whose key is stored already does (TableSpec.OnConflict).
const (
	ConflictIgnore = "ignore"
	ConflictUpdate = "update"
)

// What an entry does with the rows a line makes (TableSpec.Action).
const (
	ActionInsert = "insert"
	ActionDelete = "delete"
)

// ColumnSpec is one column of a [Spec].
type ColumnSpec struct {
	// Name is the column's name.
	Name string
	// Path is the gjson path of the value in the line; empty when Meta
	// or Element is set.
	Path string
	// Element is the gjson path of the value in the exploded array's
	// element ("@this" for the element itself); only in a table with
	// explode.
	Element string
	// Meta, when set, names the line metadata the column holds instead
	// of a value from the line: seq, line_id, source or received_at.
	Meta string
	// Type is the column's type.
	Type Type
	// Layout is how timestamptz and date values are written: a Go time
	// layout or one of rfc3339, ruby, unix, unix_ms. Empty means rfc3339
	// for timestamptz and 2006-01-02 for date.
	Layout string
	// Required rejects lines where the value is missing, null, or made
	// NULL by cleaning.
	Required bool
	// Default, when HasDefault, replaces a value that is missing, null
	// or made NULL by cleaning; the column is then NOT NULL.
	Default    any
	HasDefault bool
	// Clean are the cleaning steps applied to string values, in order.
	Clean []Step

	line, column int
}

// LineIDColumn is the key column added to tables whose spec has no key:
// the line's identity (worker.Line.ID), the same for every copy of a line
// JetStream stored twice or a replay brought back. A spec that wants the
// stream sequence as well adds a column with meta: seq.
const LineIDColumn = worker.LineIDColumn

var (
	entryFields  = []string{"table", "key", "filter", "explode", "on_conflict", "version", "action", "columns"}
	topFields    = append([]string{"source", "filter", "tables"}, slices.DeleteFunc(slices.Clone(entryFields), func(f string) bool { return f == "filter" })...)
	columnFields = []string{"name", "path", "element", "meta", "type", "layout", "required", "default", "clean"}
)

// LoadSpec reads and checks the spec file at path. The error joins a
// [*SpecError] for every mistake found.
func LoadSpec(path string) (*Spec, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pipeline spec: %w", err)
	}
	return ParseSpec(path, src)
}

// ParseSpec checks the spec in src, read from file (used in messages).
func ParseSpec(file string, src []byte) (*Spec, error) {
	p := &specParser{file: file}
	spec := p.parse(src)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return spec, nil
}

type specParser struct {
	file string
	errs []error
}

func (p *specParser) fail(n *yaml.Node, field, format string, args ...any) {
	e := &SpecError{File: p.file, Field: field, Problem: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// mapping returns the key/value pairs of a mapping node, reporting keys
// that are not in allowed and keys given twice.
func (p *specParser) mapping(n *yaml.Node, field string, allowed []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.fail(n, field, "must be a mapping with the fields %s", strings.Join(allowed, ", "))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := join(field, k.Value)
		switch {
		case !slices.Contains(allowed, k.Value):
			p.fail(k, name, "unknown field %q; valid fields here are %s", k.Value, strings.Join(allowed, ", "))
		case out[k.Value] != nil:
			p.fail(k, name, "given twice")
		default:
			out[k.Value] = v
		}
	}
	return out
}

func join(field, name string) string {
	if field == "" {
		return name
	}
	return field + "." + name
}

// str decodes a scalar string; an empty string is reported as missing.
func (p *specParser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(n, field, "must be a string")
		return "", false
	}
	if n.Value == "" {
		p.fail(n, field, "must not be empty")
		return "", false
	}
	return n.Value, true
}

func (p *specParser) parse(src []byte) *Spec {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		p.fail(nil, "", "the file is empty; a spec needs source, table and columns")
		return nil
	} else if err != nil {
		p.errs = append(p.errs, &SpecError{File: p.file, Problem: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
		return nil
	}
	if len(doc.Content) == 0 {
		p.fail(nil, "", "the file is empty; a spec needs source, table and columns")
		return nil
	}
	root := doc.Content[0]
	top := p.mapping(root, "", topFields)
	if top == nil {
		return nil
	}
	spec := &Spec{File: p.file}
	if top["source"] == nil {
		p.fail(root, "source", "missing; a spec needs source, table and columns")
	} else if s, ok := p.str(top["source"], "source"); ok {
		if err := topology.ValidateSource(s); err != nil {
			p.fail(top["source"], "source", "%v", err)
		}
		spec.Source = s
	}
	if n := top["filter"]; n != nil {
		if s, ok := p.str(n, "filter"); ok {
			spec.Filter = s
			if _, err := compileFilter(s); err != nil {
				p.fail(n, "filter", "%v", err)
			}
		}
	}
	if n := top["tables"]; n != nil {
		for _, f := range entryFields {
			if v := top[f]; v != nil && f != "filter" {
				p.fail(v, f, "with tables, %s belongs in each entry of tables", f)
			}
		}
		if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
			p.fail(n, "tables", "must be a non-empty list of tables, each with table, columns and optionally key, filter, explode, on_conflict, version and action")
			return spec
		}
		for i, en := range n.Content {
			field := fmt.Sprintf("tables[%d]", i)
			for j := 0; en.Kind == yaml.MappingNode && j+1 < len(en.Content); j += 2 {
				if k, v := en.Content[j], en.Content[j+1]; k.Value == "table" && v.Kind == yaml.ScalarNode && v.Value != "" {
					field = fmt.Sprintf("tables[%d] (%s)", i, v.Value)
					break
				}
			}
			if f := p.mapping(en, field, entryFields); f != nil {
				spec.Tables = append(spec.Tables, p.entry(en, f, field+"."))
			}
		}
	} else {
		// The single-table form: the top level is the one entry, and its
		// filter the spec's.
		f := make(map[string]*yaml.Node, len(top))
		for k, v := range top {
			if k != "filter" {
				f[k] = v
			}
		}
		spec.Tables = append(spec.Tables, p.entry(root, f, ""))
	}
	p.relate(spec)
	return spec
}

// entry checks one table entry, whose fields f were read from n; field
// prefixes the names of its fields in messages ("" for the single-table
// form, "tables[1] (hashtags)." in a list).
func (p *specParser) entry(n *yaml.Node, f map[string]*yaml.Node, field string) TableSpec {
	t := TableSpec{OnConflict: ConflictIgnore, Action: ActionInsert, field: strings.TrimSuffix(field, "."), line: n.Line, col: n.Column}
	for _, name := range []string{"table", "columns"} {
		if f[name] == nil {
			what := "a spec needs source, table and columns"
			if field != "" {
				what = "every entry of tables needs table and columns"
			}
			p.fail(n, field+name, "missing; %s", what)
		}
	}
	if v := f["table"]; v != nil {
		if s, ok := p.str(v, field+"table"); ok {
			schema, name, err := worker.ParseTableName(s)
			if err != nil {
				p.fail(v, field+"table", "%v", err)
			}
			t.Schema, t.Table = schema, name
		}
	}
	if v := f["action"]; v != nil {
		if s, ok := p.str(v, field+"action"); ok {
			if s != ActionInsert && s != ActionDelete {
				p.fail(v, field+"action", "unknown action %q; valid are insert (the default) and delete", s)
			}
			t.Action = s
		}
	}
	if v := f["filter"]; v != nil {
		if s, ok := p.str(v, field+"filter"); ok {
			t.Filter = s
			if _, err := compileFilter(s); err != nil {
				p.fail(v, field+"filter", "%v", err)
			}
		}
	}
	if v := f["explode"]; v != nil {
		if s, ok := p.str(v, field+"explode"); ok {
			if err := checkPath(s); err != nil {
				p.fail(v, field+"explode", "%v", err)
			}
			t.Explode = s
		}
	}
	if v := f["on_conflict"]; v != nil {
		if s, ok := p.str(v, field+"on_conflict"); ok {
			if s != ConflictIgnore && s != ConflictUpdate {
				p.fail(v, field+"on_conflict", "unknown on_conflict %q; valid are ignore (the default: the row stored first stays) and update", s)
			}
			t.OnConflict = s
		}
	}
	if v := f["columns"]; v != nil {
		p.columns(&t, v, field)
	}
	if v := f["key"]; v != nil {
		p.key(&t, v, field)
	} else if c := t.column(LineIDColumn); c != nil {
		p.fail(&yaml.Node{Line: c.line, Column: c.column}, field+"columns", "a column is named %q, which is the key column a spec without a key gets; rename it or set key (key: %s keys rows by the line's identity)", LineIDColumn, LineIDColumn)
	}
	if v := f["version"]; v != nil {
		if s, ok := p.str(v, field+"version"); ok {
			t.Version = s
			c := t.column(s)
			switch {
			case t.OnConflict != ConflictUpdate:
				p.fail(v, field+"version", "a version orders updates; it needs on_conflict: update")
			case c == nil:
				p.fail(v, field+"version", "%q is not one of the columns (%s)", s, strings.Join(t.columnNames(), ", "))
			case !versionTypes[c.Type]:
				p.fail(v, field+"version", "version column %q is %s; a version must be a number or a time (bigint, integer, numeric, double precision, timestamptz or date)", s, c.Type)
			case !c.Required && !c.HasDefault && c.Meta == "":
				p.fail(v, field+"version", "version column %q must be required: true (or have a default), since rows without a version cannot be ordered", s)
			case slices.Contains(t.Key, s):
				p.fail(v, field+"version", "version column %q is part of the key, so two rows of one key never differ in it", s)
			}
		}
	}
	if t.OnConflict == ConflictUpdate && len(t.Key) == 0 && f["key"] == nil {
		p.fail(f["on_conflict"], field+"on_conflict", "an update needs a key saying which row a line updates, e.g. key: id")
	}
	if t.Explode != "" && len(t.Key) == 0 && f["key"] == nil {
		p.fail(f["explode"], field+"explode", "the rows of an exploded array need a key that tells a line's elements apart, e.g. key: [tweet_id, tag]; the line's identity is the same for all of them")
	}
	if t.Explode == "" {
		for _, c := range t.Columns {
			if c.Element != "" {
				p.fail(&yaml.Node{Line: c.line, Column: c.column}, field+"columns", "column %q reads element %q, but the table has no explode saying which array's elements", c.Name, c.Element)
			}
		}
	}
	if t.Action == ActionDelete {
		for _, name := range []string{"key", "explode", "on_conflict", "version"} {
			if v := f[name]; v != nil {
				p.fail(v, field+name, "a delete entry takes its key from the table it deletes from; drop %s", name)
			}
		}
		if f["filter"] == nil {
			p.fail(n, field+"filter", "a delete entry needs a filter of its own saying which lines are deletes, e.g. delete != nil; without one every line would delete")
		}
	}
	return t
}

// relate checks what the entries say about each other: one insert entry
// per table, and every delete entry naming a table an insert entry fills,
// by that table's key columns.
func (p *specParser) relate(spec *Spec) {
	inserts := map[string]*TableSpec{}
	for i := range spec.Tables {
		t := &spec.Tables[i]
		if t.Action != ActionInsert || t.Table == "" {
			continue
		}
		name := t.WorkerTable().Ident().Sanitize()
		if other, ok := inserts[name]; ok {
			p.fail(&yaml.Node{Line: t.line, Column: t.col}, join(t.field, "table"), "table %s is filled by %s already; give each table one entry (an entry can read several values of a line)", name, other.describe())
			continue
		}
		inserts[name] = t
	}
	for i := range spec.Tables {
		t := &spec.Tables[i]
		if t.Action != ActionDelete || t.Table == "" {
			continue
		}
		at := &yaml.Node{Line: t.line, Column: t.col}
		target, ok := inserts[t.WorkerTable().Ident().Sanitize()]
		if !ok {
			p.fail(at, join(t.field, "table"), "a delete entry deletes from a table another entry fills; no entry fills %s", t.WorkerTable().Ident().Sanitize())
			continue
		}
		if len(target.Key) == 0 {
			p.fail(at, join(t.field, "table"), "deletes need the target's key; %s has none (its rows are keyed by the line's identity), so give it a key such as id", target.describe())
			continue
		}
		t.Key = target.Key
		var names []string
		for _, c := range t.Columns {
			names = append(names, c.Name)
			tc := target.column(c.Name)
			switch {
			case !slices.Contains(target.Key, c.Name):
				p.fail(&yaml.Node{Line: c.line, Column: c.column}, join(t.field, "columns"), "column %q is not part of the key of %s (%s); a delete entry has exactly the key columns", c.Name, target.describe(), strings.Join(target.Key, ", "))
			case tc.Type != c.Type:
				p.fail(&yaml.Node{Line: c.line, Column: c.column}, join(t.field, "columns"), "column %q is %s here and %s in %s", c.Name, c.Type, tc.Type, target.describe())
			}
		}
		for _, k := range target.Key {
			if !slices.Contains(names, k) {
				p.fail(at, join(t.field, "columns"), "the key column %q of %s is missing; a delete entry has exactly the key columns", k, target.describe())
			}
		}
	}
}

// describe names the entry in messages.
func (t *TableSpec) describe() string {
	if t.field == "" {
		return "the spec"
	}
	return t.field
}

// versionTypes are the types a version column may have.
var versionTypes = map[Type]bool{
	TypeBigint: true, TypeInteger: true, TypeNumeric: true, TypeDouble: true, TypeTimestamptz: true, TypeDate: true,
}

func (t *TableSpec) column(name string) *ColumnSpec {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

func (p *specParser) key(t *TableSpec, n *yaml.Node, prefix string) {
	var names []*yaml.Node
	switch n.Kind {
	case yaml.ScalarNode:
		names = []*yaml.Node{n}
	case yaml.SequenceNode:
		names = n.Content
		if len(names) == 0 {
			p.fail(n, prefix+"key", "is empty; name the key column(s), or leave key out to key rows by the line's identity")
		}
	default:
		p.fail(n, prefix+"key", "must be a column name or a list of column names")
		return
	}
	for i, kn := range names {
		field := prefix + "key"
		if n.Kind == yaml.SequenceNode {
			field = fmt.Sprintf("%skey[%d]", prefix, i)
		}
		name, ok := p.str(kn, field)
		if !ok {
			continue
		}
		c := t.column(name)
		switch {
		case c == nil:
			p.fail(kn, field, "%q is not one of the columns (%s)", name, strings.Join(t.columnNames(), ", "))
		case slices.Contains(t.Key, name):
			p.fail(kn, field, "%q is named twice", name)
		case !c.Required && !c.HasDefault && c.Meta == "":
			p.fail(kn, field, "key column %q must be required: true (or have a default), since a key cannot be NULL", name)
		case c.Type == TypeJSONB:
			p.fail(kn, field, "key column %q is jsonb, which cannot be a primary key; use text or bigint", name)
		}
		t.Key = append(t.Key, name)
	}
}

func (t *TableSpec) columnNames() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

func (p *specParser) columns(t *TableSpec, n *yaml.Node, prefix string) {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.fail(n, prefix+"columns", "must be a non-empty list of columns, each with name, path and type")
		return
	}
	for i, cn := range n.Content {
		field := fmt.Sprintf("%scolumns[%d]", prefix, i)
		// Name the column in messages as soon as possible.
		for j := 0; cn.Kind == yaml.MappingNode && j+1 < len(cn.Content); j += 2 {
			if k, v := cn.Content[j], cn.Content[j+1]; k.Value == "name" && v.Kind == yaml.ScalarNode && v.Value != "" {
				field = fmt.Sprintf("%scolumns[%d] (%s)", prefix, i, v.Value)
				break
			}
		}
		f := p.mapping(cn, field, columnFields)
		if f == nil {
			continue
		}
		c := ColumnSpec{line: cn.Line, column: cn.Column}
		if v := f["name"]; v == nil {
			p.fail(cn, field+".name", "missing; every column needs a name")
		} else if name, ok := p.str(v, field+".name"); ok {
			c.Name = name
			if !identPattern(name) {
				p.fail(v, field+".name", "%q is not a plain SQL identifier: use 1 to 63 letters, digits or '_', not starting with a digit", name)
			} else if t.column(name) != nil {
				p.fail(v, field+".name", "column %q is declared twice", name)
			}
		}
		if f["element"] != nil && (f["path"] != nil || f["meta"] != nil) {
			p.fail(f["element"], field+".element", "a column takes its value from the line (path), the exploded element (element) or the line's metadata (meta): one of them")
		} else if v := f["element"]; v != nil {
			if path, ok := p.str(v, field+".element"); ok {
				if err := checkPath(path); err != nil {
					p.fail(v, field+".element", "%v", err)
				}
				c.Element = path
			}
		} else if v := f["meta"]; v != nil {
			if f["path"] != nil {
				p.fail(v, field+".meta", "a column takes its value from the line (path) or from the line's metadata (meta), not both")
			} else if m, ok := p.str(v, field+".meta"); ok {
				if _, known := metaTypes[m]; !known {
					p.fail(v, field+".meta", "unknown metadata %q; valid are seq (bigint), line_id (text), source (text) and received_at (timestamptz)", m)
				}
				c.Meta = m
			}
			for _, other := range []string{"layout", "required", "default", "clean"} {
				if f[other] != nil {
					p.fail(f[other], field+"."+other, "a meta column is always present and stored as it is; drop %s", other)
				}
			}
		} else if v := f["path"]; v == nil {
			p.fail(cn, field+".path", "missing; give the gjson path of the value, e.g. user.screen_name or entities.hashtags.#.text, or meta: seq, line_id, source or received_at")
		} else if path, ok := p.str(v, field+".path"); ok {
			if err := checkPath(path); err != nil {
				p.fail(v, field+".path", "%v", err)
			}
			c.Path = path
		}
		typeOK := false
		if v := f["type"]; v == nil {
			p.fail(cn, field+".type", "missing; valid types are %s", typeList())
		} else if s, ok := p.str(v, field+".type"); ok {
			if t, ok := parseType(s); ok {
				c.Type, typeOK = t, true
			} else {
				p.fail(v, field+".type", "unknown type %q; valid types are %s", s, typeList())
			}
		}
		if v := f["layout"]; v != nil {
			if s, ok := p.str(v, field+".layout"); ok {
				switch {
				case !typeOK:
				case c.Type != TypeTimestamptz && c.Type != TypeDate:
					p.fail(v, field+".layout", "only timestamptz and date columns take a layout (this column is %s)", c.Type)
				default:
					if err := checkLayout(c.Type, s); err != nil {
						p.fail(v, field+".layout", "%v", err)
					}
					c.Layout = s
				}
			}
		}
		if v := f["required"]; v != nil {
			if err := v.Decode(&c.Required); err != nil || v.Tag != "!!bool" {
				p.fail(v, field+".required", "must be true or false (got %q)", v.Value)
			}
		}
		if v := f["clean"]; v != nil {
			c.Clean = p.steps(v, field+".clean")
			if typeOK && c.Type == TypeJSONB && len(c.Clean) > 0 {
				p.fail(v, field+".clean", "jsonb values are stored as they are; cleaning steps apply to text, text[] and values parsed from strings")
			}
		}
		if v := f["default"]; v != nil {
			switch {
			case c.Required:
				p.fail(v, field+".default", "a required column cannot have a default; drop one of them")
			case typeOK:
				col := column{ColumnSpec: c}
				if val, err := defaultValue(&col, v); err != nil {
					p.fail(v, field+".default", "%v", err)
				} else {
					c.Default, c.HasDefault = val, true
				}
			}
		}
		if want, known := metaTypes[c.Meta]; c.Meta != "" && known && typeOK && c.Type != want {
			p.fail(f["type"], field+".type", "meta %s is %s, not %s", c.Meta, want, c.Type)
		}
		t.Columns = append(t.Columns, c)
	}
}

// metaTypes are the metadata a column may hold instead of a value from the
// line, with their types.
var metaTypes = map[string]Type{
	MetaSeq:        TypeBigint,
	MetaLineID:     TypeText,
	MetaSource:     TypeText,
	MetaReceivedAt: TypeTimestamptz,
}

// Metadata a column may hold (ColumnSpec.Meta).
const (
	// MetaSeq is the line's stream sequence number. A line JetStream
	// stored twice, or one replayed from the dead letters, has another
	// sequence each time, so it is no key; use MetaLineID.
	MetaSeq = "seq"
	// MetaLineID is the line's identity (worker.Line.ID), the same for
	// every copy of the line.
	MetaLineID = "line_id"
	// MetaSource is the source the line arrived on.
	MetaSource = "source"
	// MetaReceivedAt is when the gateway read the line.
	MetaReceivedAt = "received_at"
)

// defaultValue converts a YAML default to the column's value, the way a
// JSON value at the column's path would be, without cleaning.
func defaultValue(c *column, n *yaml.Node) (any, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("cannot read the default: %w", err)
	}
	if v == nil {
		return nil, errors.New("a null default is the same as no default; leave it out")
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("the default must be a scalar or a list of scalars: %w", err)
	}
	val, reason, detail := c.convert(parseJSONValue(string(raw)), false)
	if reason != "" {
		return nil, fmt.Errorf("the default %s does not fit type %s: %s", raw, c.Type, detail)
	}
	return val, nil
}

func (p *specParser) steps(n *yaml.Node, field string) []Step {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, field, "must be a list of cleaning steps, e.g. [trim, lower, {truncate: 280}]")
		return nil
	}
	var steps []Step
	for i, sn := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		var name string
		var arg *yaml.Node
		switch sn.Kind {
		case yaml.ScalarNode:
			name = sn.Value
		case yaml.MappingNode:
			if len(sn.Content) != 2 {
				p.fail(sn, f, "a step with an argument is a mapping with one entry, e.g. {truncate: 280}")
				continue
			}
			name, arg = sn.Content[0].Value, sn.Content[1]
		default:
			p.fail(sn, f, "must be a step name or {step: argument}; steps are %s", stepList())
			continue
		}
		st, err := newStep(name, arg)
		if err != nil {
			p.fail(sn, f, "%v", err)
			continue
		}
		steps = append(steps, st)
	}
	return steps
}

func identPattern(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// WorkerTable returns the table the entry describes.
func (s *TableSpec) WorkerTable() worker.Table {
	t := worker.Table{Schema: s.Schema, Name: s.Table, Key: s.Key}
	if len(s.Key) == 0 {
		t.Columns = append(t.Columns, worker.Column{Name: LineIDColumn, Type: "text", NotNull: true})
		t.Key = []string{LineIDColumn}
	}
	for _, c := range s.Columns {
		t.Columns = append(t.Columns, worker.Column{Name: c.Name, Type: c.Type.String(), NotNull: c.Required || c.HasDefault || c.Meta != ""})
	}
	return t
}
