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
// row it produces, or why the line is filtered or rejected, then a
// summary. It is the loop behind `worker check-spec`; sample lines are
// numbered from 1 and get stream sequence numbers equal to their line
// number, and identities "sample.<line number>". Blank lines are skipped,
// as the gateway does.
func (p *Pipeline) Check(w io.Writer, sample io.Reader) error {
	sc := bufio.NewReader(sample)
	row := make([]any, len(p.table.Columns))
	counts := map[string]int{}
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
		clear(row)
		line := worker.Line{ID: "sample." + strconv.Itoa(n), Seq: uint64(n), Source: p.Source(), ReceivedAt: time.Now(), Data: data}
		res := p.Transform(&line, row)
		switch res.Outcome {
		case worker.Insert:
			inserted++
			fmt.Fprintf(w, "line %d: insert %s\n", n, p.renderRow(row))
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
	fmt.Fprintln(w)
	return nil
}

// renderRow writes row as a JSON object in column order.
func (p *Pipeline) renderRow(row []any) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, c := range p.table.Columns {
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

// Describe writes a summary of the pipeline: source, table, key, filter
// and the CREATE TABLE statement it runs.
func (p *Pipeline) Describe(w io.Writer) {
	key := strings.Join(p.spec.Key, ", ")
	if key == "" {
		key = LineIDColumn + " (the line's identity)"
	}
	fmt.Fprintf(w, "%s: ok: source %s (subject ingest.%s) → table %s, key %s\n", p.spec.File, p.Source(), p.Source(), p.table.Ident().Sanitize(), key)
	if p.spec.Filter != "" {
		fmt.Fprintf(w, "filter: %s\n", p.spec.Filter)
		var reads []string
		for _, v := range p.filter.vars {
			if v.presence {
				reads = append(reads, v.path+" (present or not)")
			} else {
				reads = append(reads, v.path)
			}
		}
		fmt.Fprintf(w, "filter reads: %s\n", strings.Join(reads, ", "))
	}
	fmt.Fprintf(w, "%s\n", p.table.CreateSQL())
}
