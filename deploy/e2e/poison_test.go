package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

// poisonSpec is the pipeline of TestFaultPoisonRows. Its table is created
// by the test beforehand, with a column the database derives from v.
const poisonSpec = `source: poison
table: poison_rows
key: id
columns:
  - name: id
    path: id
    type: text
    required: true
  - name: v
    path: v
    type: integer
  - name: note
    path: note
    type: text
`

// poisonTable is the table of poisonSpec as an operator might have made
// it: with a smallint the database computes from v, too narrow for some
// values that fit v's integer. The worker accepts the table (the columns
// it writes match the spec) and the database refuses those rows with
// 22003 numeric_value_out_of_range.
const poisonTable = `CREATE TABLE poison_rows (
	id text PRIMARY KEY,
	v integer,
	note text,
	v_small smallint GENERATED ALWAYS AS (v) STORED
)`

// Every outOfRangeEvery-th line has a v over a smallint's range, every
// nulEvery-th (offset, so the two never meet) a note with \u0000, which no
// text column holds.
const (
	outOfRangeEvery = 1000
	nulEvery        = 2500
)

// poisonInput is the input of TestFaultPoisonRows.
type poisonInput struct {
	plans []*plan
	// good, outOfRange and nul are the ids of the lines that must become
	// rows at once, that the database refuses, and that the pipeline
	// refuses.
	good, outOfRange, nul map[string]bool
}

// poisonPlans returns faultConns connections of faultLines lines in all to
// source, of a few hundred bytes each: {"id":…,"v":…,"note":…}.
func poisonPlans(seed uint64, source string) poisonInput {
	in := poisonInput{good: map[string]bool{}, outOfRange: map[string]bool{}, nul: map[string]bool{}}
	per := (faultLines + faultConns - 1) / faultConns
	for c := range faultConns {
		rng := rngFor(seed, c)
		p := &plan{source: source, texts: map[string]string{}}
		var buf bytes.Buffer
		for n := 1; n <= per; n++ {
			id := fmt.Sprintf("pz%d-l%d", c, n)
			k := c*per + n
			v := rng.IntN(1 << 15)
			note := noteText(rng)
			switch {
			case k%outOfRangeEvery == 0:
				v = 1<<15 + rng.IntN(1<<20)
				in.outOfRange[id] = true
			case k%nulEvery == nulEvery/2:
				note += `\u0000` + noteText(rng)
				in.nul[id] = true
			default:
				in.good[id] = true
				p.valid = append(p.valid, id)
			}
			fmt.Fprintf(&buf, `{"id":"%s","v":%d,"note":"%s"}`, id, v, note)
			if n < per {
				buf.WriteByte('\n')
			}
			p.lines++
		}
		p.data = buf.Bytes()
		in.plans = append(in.plans, p)
	}
	return in
}

// noteText returns 150 to 350 bytes of words.
func noteText(rng *rand.Rand) string {
	var b strings.Builder
	for n := 150 + rng.IntN(200); b.Len() < n; {
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.String()
}

// TestFaultPoisonRows sends lines to a typed pipeline, a few of which the
// database refuses (a value out of a column's range) or the pipeline does
// (a NUL in text). Exactly those lines must be dead-lettered at once, with
// the reason and the database's message, and every other line stored.
// Then the cause is fixed (the column widened) and `worker dlq replay`
// stores the refused lines, once; a second replay stores nothing more.
func TestFaultPoisonRows(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	const source = "poison"
	if _, err := b.db.Exec(t.Context(), poisonTable); err != nil {
		t.Fatalf("create the pipeline's table: %v", err)
	}
	gw := b.startGateway(t, source)
	b.startWorkers(t, 2, map[string]string{"WORKER_PIPELINES": writeSpec(t, poisonSpec)})

	seed := inputSeed(t)
	in := poisonPlans(seed, source)
	want := expect(in.plans)
	start := time.Now()
	if err := sendAll(gw, in.plans, seed); err != nil {
		t.Fatal(err)
	}
	info := b.waitDrained(t, drainTimeout)

	b.checkKeyedRows(t, "poison_rows", "id", in.good)
	dl := b.deadLetters(t)
	b.checkPoisonLetters(t, dl, map[string]map[string]bool{"pg_22003": in.outOfRange, "bad_value": in.nul})
	if rows := int64(len(in.good)); rows+int64(len(dl)) != want.lines {
		t.Errorf("receipts count %d lines; %d rows and %d dead letters account for %d", want.lines, rows, len(dl), rows+int64(len(dl)))
	}
	redelivered := redeliveries(info)

	// The fix: a column wide enough. The lines the pipeline refused stay
	// refused; a replay of only the database's refusals stores them.
	if _, err := b.db.Exec(t.Context(), "ALTER TABLE poison_rows ALTER COLUMN v_small TYPE integer"); err != nil {
		t.Fatalf("widen the column: %v", err)
	}
	if n, selected := b.replay(t, "--reason", "pg_22003"); n != len(in.outOfRange) || selected != len(in.outOfRange) {
		t.Errorf("the replay republished %d of %d selected; want all %d lines the database refused", n, selected, len(in.outOfRange))
	}
	b.waitDrained(t, drainTimeout)
	stored := map[string]bool{}
	for id := range in.good {
		stored[id] = true
	}
	for id := range in.outOfRange {
		stored[id] = true
	}
	b.checkKeyedRows(t, "poison_rows", "id", stored)
	b.checkPoisonLetters(t, b.deadLetters(t), map[string]map[string]bool{"bad_value": in.nul})

	// Again, and everything this time: the lines the pipeline refuses go
	// through the worker once more and back to the dead letters; nothing
	// is stored twice.
	if n, selected := b.replay(t); n != len(in.nul) || selected != len(in.nul) {
		t.Errorf("the second replay republished %d of %d selected; want the %d lines left", n, selected, len(in.nul))
	}
	info = b.waitDrained(t, drainTimeout)
	b.checkKeyedRows(t, "poison_rows", "id", stored)
	dl = b.deadLetters(t)
	b.checkPoisonLetters(t, dl, map[string]map[string]bool{"bad_value": in.nul})
	faultSummary{lines: want.lines, rows: len(stored), deadLettered: len(dl),
		redelivered: redelivered + redeliveries(info), start: start}.log(t)
}

// checkPoisonLetters checks that the dead letters are exactly the lines
// of want, by reason and id: each once, with its line whole and, for the
// database's refusals, the database's message.
func (b *bundle) checkPoisonLetters(t *testing.T, entries []deadletter.Entry, want map[string]map[string]bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range entries {
		var line struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(e.Data, &line); err != nil || line.ID == "" {
			t.Errorf("dead letter %d does not hold a line that was sent: %s", e.Seq, describeEntry(e))
			continue
		}
		switch {
		case seen[line.ID]:
			t.Errorf("line %s dead-lettered twice: %s", line.ID, describeEntry(e))
		case !want[e.Reason][line.ID]:
			t.Errorf("line %s dead-lettered with reason %s, which it should not have been: %s", line.ID, e.Reason, describeEntry(e))
		case e.Class != deadletter.ClassPermanent || e.Error == "" || e.Truncated():
			t.Errorf("line %s: dead letter %s; want class %s, an error message and the whole line", line.ID, describeEntry(e), deadletter.ClassPermanent)
		case e.Reason == "pg_22003" && !strings.Contains(e.Error, "smallint out of range"):
			t.Errorf("line %s: dead letter error %q; want the database's message, smallint out of range", line.ID, e.Error)
		}
		seen[line.ID] = true
	}
	for reason, ids := range want {
		var missing []string
		for id := range ids {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			t.Errorf("%d of %d lines refused with %s are not in the dead letters, e.g. %s", len(missing), len(ids), reason, sample(missing))
		}
	}
}

// replayResult matches the summary line of `worker dlq replay`.
var replayResult = regexp.MustCompile(`(?m)^replayed (\d+) of (\d+) selected`)

// replay runs `worker dlq replay` with args, as an operator does, and
// returns how many dead letters it republished and how many it selected.
func (b *bundle) replay(t *testing.T, args ...string) (replayed, selected int) {
	t.Helper()
	out := b.runWorker(t, append([]string{"dlq", "replay"}, args...)...)
	m := replayResult.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("worker dlq replay %s printed no summary:\n%s", strings.Join(args, " "), out)
	}
	replayed, _ = strconv.Atoi(m[1])
	selected, _ = strconv.Atoi(m[2])
	return replayed, selected
}

// runWorker runs the worker program with args in the environment the
// workers of the test have, and returns what it printed; it fails the
// test unless the program exits 0 within a minute.
func (b *bundle) runWorker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, programs.worker, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range b.env(map[string]string{"DATABASE_URL": b.dsn}) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	slices.Sort(cmd.Env)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("worker %s: %v\n%s", strings.Join(args, " "), err, out.Bytes())
	}
	return out.String()
}
