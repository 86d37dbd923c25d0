package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/health"
)

// The fault tests break one part of the system while it ingests and check
// that nothing is lost and nothing stored twice: every line sent becomes
// exactly one row, or is filtered, or is dead-lettered, and the counts in
// the receipts, the tables and the dead-letter stream add up.

const (
	// faultLines is how many lines each fault test sends, at least.
	faultLines = 50_000
	// faultConns is how many connections carry them.
	faultConns = 8
	// faultTextBytes is the approximate text size of a line: lines of a
	// few hundred bytes keep each test to seconds.
	faultTextBytes = 250
)

// faultPlans returns the input of faultConns connections to source,
// faultLines lines of records in all, each of which must land; ids start
// with prefix.
func faultPlans(seed uint64, prefix, source string) []*plan {
	var plans []*plan
	for c := range faultConns {
		plans = append(plans, newPlan(rngFor(seed, c), prefix+strconv.Itoa(c), source, mix{
			records: (faultLines + faultConns - 1) / faultConns, recordBytes: faultTextBytes, crlfPercent: 20, last: kindRecord,
		}))
	}
	return plans
}

// faultSummary is what a fault test reports in its last line.
type faultSummary struct {
	lines        int64 // lines the receipts count as stored
	rows         int
	filtered     int
	deadLettered int
	redelivered  uint64
	start        time.Time
}

func (s faultSummary) log(t *testing.T) {
	t.Helper()
	t.Logf("%d lines, %d rows, %d filtered, %d dead-lettered, %d redelivered, in %s",
		s.lines, s.rows, s.filtered, s.deadLettered, s.redelivered, time.Since(s.start).Round(time.Millisecond))
}

// TestFaultWorkerKilledRepeatedly SIGKILLs the only worker five times
// while it works through a backlog, each time while it holds lines it has
// not acknowledged, and starts a new one in its place. Every line must
// land exactly once: the lines each dead worker held are redelivered, and
// those it committed but had not acknowledged are not stored twice.
func TestFaultWorkerKilledRepeatedly(t *testing.T) {
	t.Parallel()
	const kills = 5
	b := setup(t, setupOptions{})
	gw := b.startGateway(t)
	worker := b.startWorkers(t, 1, nil)[0]

	seed := inputSeed(t)
	plans := faultPlans(seed, "wk", topology.DefaultSource)
	want := expect(plans)
	start := time.Now()
	sendErr := make(chan error, 1)
	go func() { sendErr <- sendAll(gw, plans, seed) }()

	// One worker alone, so the backlog waits while it is dead and every
	// kill comes in the middle of the ingest.
	var left int64 // lines the killed workers left unacknowledged, at least
	for k, attempt := 1, 1; k <= kills; attempt++ {
		if attempt > 2*kills {
			t.Fatalf("only %d of %d killed workers left lines unacknowledged; the others tested nothing", k-1, attempt-1)
		}
		// Each worker stores a batch or two first, so that each life
		// commits, acknowledges and dies with work in hand.
		before := b.rowCount(t)
		b.waitFor(t, drainTimeout, worker.name+" to store lines", func() (bool, string) {
			n := b.rowCount(t)
			return n >= before+1000, fmt.Sprintf("%d rows, %d before it started", n, before)
		})
		n := b.killHolding(t, worker, 8, time.Minute)
		rows := b.rowCount(t)
		if rows >= len(want.rows) {
			t.Fatalf("kill %d came when every line was stored; it tests nothing", k)
		}
		if n > 0 {
			t.Logf("kill %d: %s left about %d frames unacknowledged; %d of %d rows stored", k, worker.name, n, rows, len(want.rows))
			left += n
			k++
		} else {
			t.Logf("%s acknowledged what it held just before the kill; it does not count", worker.name)
		}
		worker = b.startWorkers(t, 1, nil)[0]
	}

	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	info := b.waitDrained(t, drainTimeout)
	b.checkRows(t, want.rows)
	b.checkAccounting(t, want)
	b.checkNoDeadLetters(t)
	// Every line a killed worker left unacknowledged was delivered again.
	if n := redeliveries(info); n < uint64(left) {
		t.Errorf("%d lines redelivered; the killed workers left %d unacknowledged", n, left)
	}
	faultSummary{lines: want.lines, rows: b.rowCount(t), redelivered: redeliveries(info), start: start}.log(t)
}

// TestFaultPostgresOutage stops Postgres for 20 s while lines arrive, then
// starts it again. Meanwhile the gateway keeps taking lines, the workers
// say on /readyz that they are not ready and back off instead of hammering
// the database or giving up on lines, and afterwards every line lands once
// and none is dead-lettered.
func TestFaultPostgresOutage(t *testing.T) {
	t.Parallel()
	const (
		outage          = 20 * time.Second
		workers         = 2
		retryBackoff    = 500 * time.Millisecond
		retryMaxBackoff = 2 * time.Second
		// A line whose store fails is handed back with a delay of at
		// least retryBackoff (or, its worker stuck, redelivered after
		// ackWait, which is longer), so the outage can use up at most
		// outage/retryBackoff + 1 deliveries of it. Twice that leaves no
		// doubt the lines outlive it rather than go to the dead letters
		// as max_deliveries.
		maxDeliver = 2 * (int(outage/retryBackoff) + 1)
	)
	b := setup(t, setupOptions{ownPostgres: true})
	gw := b.startGateway(t)
	ws := b.startWorkers(t, workers, map[string]string{
		"WORKER_RETRY_BACKOFF":     retryBackoff.String(),
		"WORKER_RETRY_MAX_BACKOFF": retryMaxBackoff.String(),
		"WORKER_MAX_DELIVER":       strconv.Itoa(maxDeliver),
	})

	seed := inputSeed(t)
	plans := faultPlans(seed, "pg", topology.DefaultSource)
	want := expect(plans)
	start := time.Now()
	sendErr := make(chan error, 1)
	go func() { sendErr <- sendAll(gw, plans, seed) }()

	b.waitFor(t, drainTimeout, "a tenth of the rows to land", func() (bool, string) {
		n := b.rowCount(t)
		return n >= len(want.rows)/10, fmt.Sprintf("%d rows", n)
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := b.pg.Stop(ctx); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
	down := time.Now()
	t.Logf("stopped postgres")

	// Every worker must notice within seconds (its readiness check pings
	// the database) and say so until the database is back.
	for _, w := range ws {
		b.waitFor(t, 10*time.Second, w.name+" to report not ready", func() (bool, string) {
			return health.Probe(w.readyURL, time.Second) != nil, "/readyz still answers ready"
		})
	}
	for time.Since(down) < outage {
		for _, w := range ws {
			if err := health.Probe(w.readyURL, time.Second); err == nil {
				t.Fatalf("%s reports ready %s into the database outage", w.name, time.Since(down).Round(time.Millisecond))
			}
		}
		b.checkAlive(t)
		time.Sleep(250 * time.Millisecond)
	}
	if err := b.pg.Restart(ctx); err != nil {
		t.Fatalf("start postgres again: %v", err)
	}
	t.Logf("started postgres again after %s", time.Since(down).Round(time.Millisecond))
	for _, w := range ws {
		b.waitFor(t, 30*time.Second, w.name+" to report ready again", func() (bool, string) {
			err := health.Probe(w.readyURL, time.Second)
			return err == nil, fmt.Sprint(err)
		})
	}

	// Connections of the test's own pool died with the server too.
	b.waitFor(t, 30*time.Second, "the test's database pool to reconnect", func() (bool, string) {
		err := b.db.Ping(t.Context())
		return err == nil, fmt.Sprint(err)
	})

	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	info := b.waitDrained(t, drainTimeout)
	b.checkRows(t, want.rows)
	b.checkAccounting(t, want)
	b.checkNoDeadLetters(t)

	// Backing off, each of the workers' loops tries the database at most
	// once per retryBackoff during the outage; one that did not would try
	// thousands of times.
	failed := 0
	for _, w := range ws {
		failed += len(logRecords(w.stderr.String(), "WARN", "storing batch failed"))
	}
	if most := workers * workerConcurrency * (int(outage/retryBackoff) + 2); failed == 0 || failed > most {
		t.Errorf("the workers logged %d failed stores during a %s outage; want between 1 and %d, one per loop per %s at most",
			failed, outage, most, retryBackoff)
	}
	t.Logf("%d failed stores while postgres was down", failed)
	faultSummary{lines: want.lines, rows: b.rowCount(t), redelivered: redeliveries(info), start: start}.log(t)
}

// faultSpec is the pipeline TestFaultNATSRestart stores lines with: keyed
// by the line's id, as a sender who resends after a failed receipt needs
// (the lines after resume_line may have been stored already), and
// filtering out one line in ten.
const faultSpec = `source: faults
table: fault_rows
key: id
filter: n % 10 != 0
columns:
  - name: id
    path: id
    type: text
    required: true
  - name: n
    path: n
    type: integer
  - name: text
    path: text
    type: text
`

// TestFaultNATSRestart restarts the NATS server, on the same port and
// store, while lines arrive and workers store them, at the moment that
// makes JetStream store lines twice: the gateway, held still (SIGSTOP),
// has thousands of publishes awaiting acknowledgement, of lines the
// workers have stored and acknowledged already. The gateway and the
// workers reconnect; each connection ends with an ok receipt or one that
// says where to resume, and the test resends from there as a sender
// would. Half the connections send to a pipeline keyed by the line's id,
// half to the raw landing table, keyed by the line's identity. Every line
// must then be stored (or filtered) exactly once in the pipeline's table,
// and in events at least once and at most as often as it was sent: a line
// sent again is a new line there, but a line JetStream stored twice (a
// publish retried across the restart) is not.
func TestFaultNATSRestart(t *testing.T) {
	t.Parallel()
	// With a publish timeout of 2 s instead of 10, a publish whose
	// acknowledgement is slow, or was lost to the restart, is retried
	// sooner: more retries cross the restart, and the test is shorter.
	b := setup(t, setupOptions{gatewayEnv: map[string]string{"GATEWAY_PUBLISH_TIMEOUT": "2s"}})
	const source = "faults"
	gw := b.startGateway(t, source, topology.DefaultSource)
	b.startWorkers(t, 2, map[string]string{"WORKER_PIPELINES": writeSpec(t, faultSpec)})

	seed := inputSeed(t)
	plans := faultPlans(seed, "nr", source)
	for i := 1; i < len(plans); i += 2 {
		plans[i].source = topology.DefaultSource
	}
	want := expect(plans)
	rows, raw, filtered := map[string]bool{}, map[string]string{}, 0
	for id, src := range want.rows {
		if src == topology.DefaultSource {
			raw[id] = src
			continue
		}
		// Record n is line n of its connection: id <prefix>-l<n>.
		_, n, _ := strings.Cut(id, "-l")
		if k, _ := strconv.Atoi(n); k%10 == 0 {
			filtered++
		} else {
			rows[id] = true
		}
	}

	start := time.Now()
	type result struct {
		receipts [][]receipt
		resent   []int64
		err      error
	}
	sent := make(chan result, 1)
	// The senders send a third of their input, then wait for hold to
	// close: until then the gateway cannot publish every line.
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	go func() {
		r, n, err := sendResumingAll(gw, plans, seed, hold)
		sent <- result{r, n, err}
	}()

	// Restart while the connections are open and the workers store: once
	// a tenth of the input is in the stream and the workers have stored
	// some, the gateway is held still, the senders send the rest into its
	// sockets, and NATS restarts under it.
	var published uint64
	b.waitFor(t, drainTimeout, "a tenth of the lines to be stored in the stream", func() (bool, string) {
		ci, err := b.consumerInfo(t)
		if err != nil {
			return false, err.Error()
		}
		published, _ = gw.published(t)
		return published >= uint64(want.lines)/10 && ci.AckFloor.Stream > 0,
			fmt.Sprintf("%d lines in the stream, frames acknowledged up to %d", published, ci.AckFloor.Stream)
	})
	// Its publishes awaiting acknowledgement are then of lines stored
	// and taken by the workers, whose acknowledgements the server could
	// not deliver before it went down: the gateway publishes them again
	// with the same message ids, and JetStream, its duplicate window
	// rebuilt from a stream the workers emptied, stores them again.
	if err := syscall.Kill(gw.pid(), syscall.SIGSTOP); err != nil {
		t.Fatalf("stop the gateway: %v", err)
	}
	// Whatever happens, the gateway must go on before it is stopped for
	// good (cleanups run last-registered first).
	resume := func() error { return syscall.Kill(gw.pid(), syscall.SIGCONT) }
	t.Cleanup(func() { _ = resume() })
	release()
	b.waitFor(t, drainTimeout, "the workers to take every line in the stream", func() (bool, string) {
		ci, err := b.consumerInfo(t)
		if err != nil {
			return false, err.Error()
		}
		backlog := ci.NumPending + uint64(ci.NumAckPending)
		return backlog == 0, fmt.Sprintf("%d frames not yet stored", backlog)
	})
	restartAt := time.Now()
	err := b.nats.Restart()
	if cerr := resume(); cerr != nil {
		t.Fatalf("let the gateway go on: %v", cerr)
	}
	if err != nil {
		t.Fatalf("restart nats: %v", err)
	}
	t.Logf("restarted nats in %s, with %d of %d lines published, all taken by the workers", time.Since(restartAt).Round(time.Millisecond), published, want.lines)
	if published >= uint64(want.lines) {
		t.Fatalf("the restart came after the gateway had published every line; it tests nothing of the gateway")
	}
	nc := b.js.Conn()
	b.waitFor(t, 30*time.Second, "the test's own nats connection to reconnect", func() (bool, string) {
		return nc.IsConnected(), nc.Status().String()
	})

	res := <-sent
	if res.err != nil {
		t.Fatal(res.err)
	}
	var resent int64
	notOK := 0
	for i, rs := range res.receipts {
		resent += res.resent[i]
		for _, r := range rs[:len(rs)-1] {
			notOK++
			t.Logf("connection %d: receipt %s, resumed from line %d: %s", i, r.Status, r.ResumeLine, r.Error)
		}
	}
	info := b.waitDrained(t, drainTimeout)
	b.checkKeyedRows(t, "fault_rows", "id", rows)
	b.checkNoDeadLetters(t)
	again := b.checkSentRows(t, raw, timesSent(t, plans, res.receipts, topology.DefaultSource))
	// The stream holds every frame at least once. It may hold some
	// twice, besides those sent again: when the connection comes back,
	// nats.go fails every publish still awaiting its acknowledgement and
	// the gateway publishes it again with the same message id, but the
	// server rebuilds its duplicate window from the messages still in the
	// stream, and a work queue keeps none the workers acknowledged. Both
	// tables make the copies of their lines one row: the pipeline by its
	// key, events by the line's identity. Rows keyed by stream sequence
	// would store them twice. The gateway counts each frame once, when
	// JetStream acknowledges it, so the stream's last sequence beyond that
	// count is the frames it stored twice.
	last := b.streamState(t).LastSeq
	lines, frames := gw.published(t)
	if lines < uint64(want.lines) {
		t.Errorf("the gateway had %d lines acknowledged; the receipts count %d", lines, want.lines)
	}
	twice := int64(last) - int64(frames)
	if twice <= 0 {
		t.Logf("the stream holds no frame twice (last sequence %d, %d frames acknowledged): the restart did not make the copies this test is about", last, frames)
	}
	t.Logf("%d receipts not ok, %d lines sent again (%d of them stored again in events); %d frames stored twice by the gateway's publishes after the restart",
		notOK, resent, again, max(twice, 0))
	faultSummary{lines: want.lines, rows: len(rows) + b.rowCount(t), filtered: filtered, redelivered: redeliveries(info), start: start}.log(t)
}

// timesSent returns how often sendResuming sent each line of the plans of
// source, by id, given each plan's receipts: an attempt sends its plan
// from the line where the previous receipt said to resume to the end.
// Every line of those plans must be a record.
func timesSent(t *testing.T, plans []*plan, receipts [][]receipt, source string) map[string]int {
	t.Helper()
	sent := map[string]int{}
	for i, p := range plans {
		if p.source != source {
			continue
		}
		if int64(len(p.valid)) != p.lines {
			t.Fatalf("plan %d has %d lines of which %d records; timesSent needs records only", i, p.lines, len(p.valid))
		}
		first := int64(1) // the plan's line where an attempt starts
		for _, r := range receipts[i] {
			for _, id := range p.valid[first-1:] {
				sent[id]++
			}
			if r.Status != "ok" {
				first += r.ResumeLine - 1
			}
		}
	}
	return sent
}

// checkSentRows checks that events holds each line of want (id → source)
// at least once and at most as often as it was sent (sent[id]), with its
// source, and no other row. A line stored more often than it was sent is
// one JetStream held twice, stored twice. It returns how many lines
// events holds more than once, each sent more than once.
func (b *bundle) checkSentRows(t *testing.T, want map[string]string, sent map[string]int) (again int) {
	t.Helper()
	got, dups := b.queryIDs(t)
	stored := map[string]int{}
	for id := range got {
		stored[id] = 1
	}
	for _, id := range dups {
		stored[id]++
	}
	var missing, unexpected, wrongSource, twice []string
	for id, src := range want {
		switch n := stored[id]; {
		case n == 0:
			missing = append(missing, id)
		case got[id] != src:
			wrongSource = append(wrongSource, fmt.Sprintf("%s: %q, want %q", id, got[id], src))
		case n > sent[id]:
			twice = append(twice, fmt.Sprintf("%s (%d rows, sent %d times)", id, n, sent[id]))
		case n > 1:
			again++
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			unexpected = append(unexpected, id)
		}
	}
	if len(twice) > 0 {
		t.Errorf("%d lines stored in events more often than they were sent, e.g. %s", len(twice), sample(twice))
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d lines missing from events, e.g. %s", len(missing), len(want), sample(missing))
	}
	if len(unexpected) > 0 {
		t.Errorf("%d rows in events that should not exist, e.g. %s", len(unexpected), sample(unexpected))
	}
	if len(wrongSource) > 0 {
		t.Errorf("%d rows in events with the wrong source, e.g. %s", len(wrongSource), sample(wrongSource))
	}
	return again
}

// logRecords returns the JSON log records in logs of level whose message
// contains msg.
func logRecords(logs, level, msg string) []string {
	var out []string
	for line := range strings.Lines(logs) {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == level && strings.Contains(rec.Msg, msg) {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}
