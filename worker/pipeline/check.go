package pipeline

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetline/jetline/worker"
)

// Check writes to w what the pipeline does with each line of sample: the
// rows it produces in each table, or the keys it deletes, or why the line
// is filtered or rejected, then a summary. It is the loop behind `worker
// check-spec`; sample lines are numbered from 1 and get stream sequence
// numbers equal to their line number, and identities "sample.<line
// number>". Blank lines are skipped, as the gateway does.
func (p *Pipeline) Check(w io.Writer, sample io.Reader) error {
	sc := bufio.NewReader(sample)
	rows := worker.NewRows(p.tables)
	counts := map[string]int{}
	perTable := make([]int, len(p.tables))
	var inserted, filtered, rejected int
	for n := 1; ; n++ {
		data, err := sc.ReadBytes('\n')
		if len(data) == 0 && err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("read sample: %w", err)
		}
		data = []byte(strings.TrimRight(string(data), "\r\n"))
		if len(strings.TrimSpace(string(data))) == 0 {
			continue
		}
		rows.Reset()
		line := worker.Line{ID: "sample." + strconv.Itoa(n), Seq: uint64(n), Source: p.Source(), ReceivedAt: time.Now(), Data: data}
		res := rows.Transform(p, &line, 0)
		switch res.Outcome {
		case worker.Insert:
			inserted++
			if rows.Len() == 0 {
				fmt.Fprintf(w, "line %d: no rows\n", n)
			}
			for t := range p.tables {
				for _, row := range rows.Table(t).Rows {
					perTable[t]++
					fmt.Fprintf(w, "line %d: %s%s\n", n, p.action(t), p.renderRow(t, row))
				}
			}
		case worker.Filter:
			filtered++
			fmt.Fprintf(w, "line %d: filtered\n", n)
		default:
			rejected++
			counts[res.Reason]++
			fmt.Fprintf(w, "line %d: reject %s: %s\n", n, res.Reason, res.Detail)
		}
	}
	fmt.Fprintf(w, "%d lines: %d insert, %d filtered, %d rejected", inserted+filtered+rejected, inserted, filtered, rejected)
	if rejected > 0 {
		var by []string
		for _, r := range slices.Sorted(maps.Keys(counts)) {
			by = append(by, fmt.Sprintf("%s %d", r, counts[r]))
		}
		fmt.Fprintf(w, " (%s)", strings.Join(by, ", "))
	}
	if p.several() {
		var by []string
		for t := range p.tables {
			by = append(by, strings.TrimSpace(p.action(t))+" "+strconv.Itoa(perTable[t]))
		}
		fmt.Fprintf(w, "; rows: %s", strings.Join(by, ", "))
	}
	fmt.Fprintln(w)
	return nil
}

// several reports whether the spec says more than "one row in one table
// per line", so that messages name the table and what a row does.
func (p *Pipeline) several() bool {
	return len(p.tables) > 1 || p.spec.Tables[0].Explode != ""
}

// action says what table t's rows do, for Check: "insert " for a single
// table, "insert tweets ", "delete tweets " with several.
func (p *Pipeline) action(t int) string {
	table := p.tables[t]
	verb := "insert"
	switch {
	case table.Delete:
		verb = "delete"
	case table.Update:
		verb = "upsert"
	}
	if !p.several() && verb == "insert" {
		return "insert "
	}
	return verb + " " + strings.Join(table.Ident(), ".") + " "
}

// renderRow writes row of table t as a JSON object in column order.
func (p *Pipeline) renderRow(t int, row []any) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, c := range p.tables[t].Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(c.Name)
		b.Write(k)
		b.WriteString(": ")
		v := row[i]
		if raw, ok := v.([]byte); ok {
			v = json.RawMessage(raw)
		}
		if t, ok := v.(time.Time); ok {
			v = t.UTC().Format(time.RFC3339Nano)
		}
		enc, err := json.Marshal(v)
		if err != nil {
			enc = []byte(fmt.Sprintf("%q", fmt.Sprint(v)))
		}
		b.Write(enc)
	}
	b.WriteByte('}')
	return b.String()
}

// Describe writes a summary of the pipeline: source, tables, keys,
// filters, and the CREATE TABLE statements it runs (tombstone tables
// included).
func (p *Pipeline) Describe(w io.Writer) {
	var names []string
	for i, t := range p.tables {
		if !t.Delete {
			names = append(names, strings.Join(t.Ident(), ".")+", key "+p.keyOf(i))
		}
	}
	what := "table"
	if len(names) > 1 {
		what = "tables"
	}
	fmt.Fprintf(w, "%s: ok: source %s (subject ingest.%s) → %s %s\n", p.spec.File, p.Source(), p.Source(), what, strings.Join(names, "; "))
	if p.filter != nil {
		p.describeFilter(w, "filter", p.spec.Filter, p.filter)
	}
	for i, t := range p.tables {
		e := &p.entries[i]
		name := strings.Join(t.Ident(), ".")
		if p.several() {
			fmt.Fprintf(w, "\n")
		}
		if e.filter != nil {
			p.describeFilter(w, name+" filter", e.spec.Filter, e.filter)
		}
		if t.Delete {
			fmt.Fprintf(w, "%s: lines that pass delete the row of the key they read (%s) and leave a tombstone in %s, which keeps rows of that key out from then on\n",
				name, strings.Join(t.Key, ", "), strings.Join(t.TombstoneTable().Ident(), "."))
			continue
		}
		if e.spec.Explode != "" {
			fmt.Fprintf(w, "%s: one row per element of %s (none when it is empty or missing)\n", name, e.spec.Explode)
		}
		switch {
		case t.Update && t.Version != "":
			fmt.Fprintf(w, "%s: a row of a stored key replaces it when its %s is greater, whatever order workers commit in\n", name, t.Version)
		case t.Update:
			fmt.Fprintf(w, "%s: a row of a stored key replaces it; without a version the last committed wins, and the order is undefined across workers (add version: COLUMN to make it defined)\n", name)
		}
		fmt.Fprintf(w, "%s\n", t.CreateSQL())
		if t.Tombstones {
			fmt.Fprintf(w, "%s\n", t.TombstoneTable().CreateSQL())
		}
	}
}

// keyOf names table t's key, for Describe.
func (p *Pipeline) keyOf(t int) string {
	if p.entries[t].lineID {
		return LineIDColumn + " (the line's identity)"
	}
	return strings.Join(p.tables[t].Key, ", ")
}

func (p *Pipeline) describeFilter(w io.Writer, label, src string, f *filter) {
	fmt.Fprintf(w, "%s: %s\n", label, src)
	var reads []string
	for _, v := range f.vars {
		if v.presence {
			reads = append(reads, v.path+" (present or not)")
		} else {
			reads = append(reads, v.path)
		}
	}
	fmt.Fprintf(w, "%s reads: %s\n", label, strings.Join(reads, ", "))
}
