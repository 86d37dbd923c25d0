package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// clusterPlans returns the input of conns connections, records lines of
// records each besides the hostile ones, ids starting with prefix. Even
// connections go to the pipeline source faults, odd ones to the raw
// landing. Every connection has records with escapes and CRLF endings,
// blank lines, a record of about 200 KB and one over maxLine, which the
// gateway dead-letters; the raw ones also have lines the worker must
// reject. The pipeline's have none, as its typed columns take some of
// them (an unpaired surrogate becomes U+FFFD in a text column).
func clusterPlans(seed uint64, prefix string, conns, records int) []*plan {
	var plans []*plan
	for c := range conns {
		rng := rngFor(seed, c)
		m := mix{
			records: records, recordBytes: faultTextBytes, large: 1, blanks: 20, crlfPercent: 20, last: kindRecord,
			overMax: []bigLine{{size: maxLine + 1 + rng.IntN(64<<10), crlf: rng.IntN(2) == 0}},
		}
		source := "faults"
		if c%2 == 1 {
			source = topology.DefaultSource
			m.invalid = 24
		}
		plans = append(plans, newPlan(rng, prefix+strconv.Itoa(c), source, m))
	}
	return plans
}

// TestClusterLeaderKilledFollowerLost runs the gateway and two workers on
// R3 streams over a three-node cluster of nats-server processes and,
// while 50,000 hostile lines arrive over eight connections (half to a
// pipeline, half to the raw landing), SIGKILLs the node that leads the
// ingest stream, and a worker with it, so the worker's lines are
// redelivered by a consumer whose leader may be changing too. It starts a
// replacement worker, brings the dead node back on its store, waits until
// it has caught up, then SIGKILLs a follower for good and sends 10,000
// lines more, which two nodes of three, a quorum, must still take.
//
// Each connection ends with an ok receipt, or one whose resume_line a
// resend from there completes. Then every line is stored exactly once in
// the pipeline's table (or filtered), at least once and at most as often
// as sent in events, each rejected or oversize line is dead-lettered, and
// the lines sent = rows + filtered + dead letters.
func TestClusterLeaderKilledFollowerLost(t *testing.T) {
	t.Parallel()
	b, cluster := setupNATSCluster(t, 3, setupOptions{gatewayEnv: map[string]string{
		"INGEST_REPLICAS": "3",
		// A publish lost with the leader is retried after 2 s rather
		// than 10: the test is shorter, and more retries cross the
		// election.
		"GATEWAY_PUBLISH_TIMEOUT": "2s",
	}})
	workerEnv := map[string]string{"INGEST_REPLICAS": "3", "WORKER_PIPELINES": writeSpec(t, faultSpec)}
	gw := b.startGateway(t, "faults", topology.DefaultSource)
	ws := b.startWorkers(t, 2, workerEnv)
	b.checkReplicas(t, topology.StreamName, 3)

	seed := inputSeed(t)
	before := clusterPlans(seed, "ca", faultConns, (faultLines+faultConns-1)/faultConns)
	after := clusterPlans(seed+1, "cb", 4, 2500)
	all := append(append([]*plan(nil), before...), after...)
	want := clusterExpect(all)

	type result struct {
		receipts [][]receipt
		resent   []int64
		err      error
	}
	send := func(plans []*plan, hold <-chan struct{}) chan result {
		ch := make(chan result, 1)
		go func() {
			r, n, err := sendResumingAll(gw, plans, seed, hold)
			ch <- result{r, n, err}
		}()
		return ch
	}
	start := time.Now()
	// The first senders send a third of their input, then wait for hold
	// to close: until then the gateway cannot publish every line.
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	sent := send(before, hold)

	// Kill the leader once a fifth of the input is in the stream and
	// the workers are storing it, then let the senders go on: much is
	// still to be read, published and stored.
	var published uint64
	b.waitFor(t, drainTimeout, "a fifth of the lines to be stored in the stream", func() (bool, string) {
		published, _ = gw.published(t)
		rows := b.rowCount(t)
		return published >= uint64(want.lines)/5 && rows > 0, fmt.Sprintf("%d lines in the stream, %d rows in events", published, rows)
	})
	leader := b.streamLeader(t, cluster, topology.StreamName)
	killed := time.Now()
	leader.kill(t)
	ws[0].kill(t)
	release()
	if published >= uint64(want.lines) {
		t.Fatalf("the leader died after the gateway had published every line; it tests nothing of the gateway")
	}
	t.Logf("killed %s, the leader of %s, and %s with %d of %d lines published", leader.name, topology.StreamName, ws[0].name, published, want.lines)

	var newLeader string
	b.waitFor(t, time.Minute, "a new leader of "+topology.StreamName, func() (bool, string) {
		l, _, why := b.streamPlacement(t, topology.StreamName)
		newLeader = l
		return l != "" && l != leader.name, fmt.Sprintf("leader %q: %s", l, why)
	})
	t.Logf("%s leads %s %s after the kill", newLeader, topology.StreamName, time.Since(killed).Round(time.Millisecond))
	b.startWorkers(t, 1, workerEnv)

	leader.start(t)
	leader.waitHealthy(t, time.Minute)
	var followers []string
	b.waitFor(t, time.Minute, "every replica of "+topology.StreamName+" to be current", func() (bool, string) {
		var why string
		newLeader, followers, why = b.streamPlacement(t, topology.StreamName)
		return newLeader != "" && len(followers) == 2 && why == "", fmt.Sprintf("leader %q, followers %q: %s", newLeader, followers, why)
	})
	t.Logf("%s is back and current %s after the kill", leader.name, time.Since(killed).Round(time.Millisecond))

	lost := cluster.node(followers[0])
	lost.kill(t)
	t.Logf("killed %s, a follower (leader %s), for good", lost.name, newLeader)

	first := <-sent
	if first.err != nil {
		t.Fatal(first.err)
	}
	second := <-send(after, nil)
	if second.err != nil {
		t.Fatalf("with %s lost, two nodes of three: %v", lost.name, second.err)
	}
	receipts := append(first.receipts, second.receipts...)
	var resent int64
	for _, n := range append(first.resent, second.resent...) {
		resent += n
	}
	for i, rs := range receipts {
		for _, r := range rs[:len(rs)-1] {
			t.Logf("connection %d: receipt %s, resumed from line %d: %s", i, r.Status, r.ResumeLine, r.Error)
		}
	}

	info := b.waitDrained(t, drainTimeout)
	b.checkKeyedRows(t, "fault_rows", "id", want.pipelineRows)
	sentTimes := timesSentAny(all, receipts)
	again := b.checkSentRows(t, want.rawRows, sentTimes)
	workerDL, gatewayDL := b.checkClusterDeadLetters(t, all, receipts)
	// The identity, from what the tables hold: each line once.
	var rawRows, pipelineRows int
	if err := b.db.QueryRow(t.Context(), "SELECT (SELECT count(DISTINCT payload->>'id') FROM events), (SELECT count(DISTINCT id) FROM fault_rows)").Scan(&rawRows, &pipelineRows); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if got := int64(rawRows + pipelineRows + want.filtered + workerDL); got != want.lines {
		t.Errorf("the receipts count %d lines stored; the %d lines in events, %d in fault_rows, %d filtered and %d dead-lettered by the workers add up to %d",
			want.lines, rawRows, pipelineRows, want.filtered, workerDL, got)
	}
	if int64(gatewayDL) != want.tooLong {
		t.Errorf("the receipts count %d lines too long; the gateway dead-lettered %d", want.tooLong, gatewayDL)
	}
	m, err := metrics.Scrape(t.Context(), gw.metricsURL)
	if err != nil {
		t.Fatalf("scrape the gateway: %v", err)
	}
	t.Logf("%d lines stored (%d rows in events, %d in fault_rows, %d filtered, %d dead-lettered by the workers), %d too long and dead-lettered by the gateway; "+
		"%.0f publishes retried, %d lines sent again (%d stored again in events), %d redelivered, in %s",
		want.lines, rawRows, pipelineRows, want.filtered, workerDL, gatewayDL,
		m[gateway.MetricPublishRetries], resent, again, redeliveries(info), time.Since(start).Round(time.Millisecond))
}

// clusterExpectation is what a cluster test's plans must leave: rows of
// the raw landing (id → source), rows of the pipeline's table, lines it
// filters out, and the receipts' counts.
type clusterExpectation struct {
	rawRows        map[string]string
	pipelineRows   map[string]bool
	filtered       int
	lines, tooLong int64
}

// clusterExpect sums up plans whose source is either faults, stored with
// [faultSpec], or the raw landing.
func clusterExpect(plans []*plan) clusterExpectation {
	e := clusterExpectation{rawRows: map[string]string{}, pipelineRows: map[string]bool{}}
	for _, p := range plans {
		e.lines += p.lines
		e.tooLong += p.tooLong
		for _, id := range p.valid {
			if p.source == topology.DefaultSource {
				e.rawRows[id] = p.source
				continue
			}
			// Record n is line n of its connection: id <prefix>-l<n>.
			_, n, _ := strings.Cut(id, "-l")
			if k, _ := strconv.Atoi(n); k%10 == 0 {
				e.filtered++
			} else {
				e.pipelineRows[id] = true
			}
		}
	}
	return e
}

// planLines frames p's input as the gateway does and returns, for each
// line by its number from 1 (index 0 unused), the id of the record on it
// if it must become a row, "" otherwise, and its kind: kindRecord for
// those, kindBlank, kindOverMax, or kindInvalid for the rest.
func planLines(p *plan) (ids []string, kinds []kind) {
	valid := map[string]bool{}
	for _, id := range p.valid {
		valid[id] = true
	}
	ids, kinds = []string{""}, []kind{kindBlank}
	for _, line := range bytes.Split(p.data, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		var rec struct {
			ID string `json:"id"`
		}
		switch {
		case len(line) == 0:
			ids, kinds = append(ids, ""), append(kinds, kindBlank)
		case len(line) > maxLine:
			ids, kinds = append(ids, ""), append(kinds, kindOverMax)
		case json.Unmarshal(line, &rec) == nil && valid[rec.ID]:
			ids, kinds = append(ids, rec.ID), append(kinds, kindRecord)
		default:
			ids, kinds = append(ids, ""), append(kinds, kindInvalid)
		}
	}
	return ids, kinds
}

// attempt is one connection of a resumed send: the plan's line it started
// at and its receipt.
type attempt struct {
	plan  int
	first int64
	r     receipt
}

// attempts lists the connections [sendResumingAll] made for plans, given
// their receipts: each starts where the previous receipt said to resume.
func attempts(plans []*plan, receipts [][]receipt) []attempt {
	var out []attempt
	for i := range plans {
		first := int64(1)
		for _, r := range receipts[i] {
			out = append(out, attempt{plan: i, first: first, r: r})
			if r.Status != "ok" {
				first += r.ResumeLine - 1
			}
		}
	}
	return out
}

// timesSentAny is [timesSent] for plans with lines of every kind: how
// often each record that must become a row was sent, by id.
func timesSentAny(plans []*plan, receipts [][]receipt) map[string]int {
	sent := map[string]int{}
	lines := make([][]string, len(plans))
	for i, p := range plans {
		lines[i], _ = planLines(p)
	}
	for _, a := range attempts(plans, receipts) {
		for _, id := range lines[a.plan][a.first:] {
			if id != "" {
				sent[id]++
			}
		}
	}
	return sent
}

// checkClusterDeadLetters checks the dead-letter stream against plans and
// their receipts: each entry's line identity names a connection of the
// gateway's receipts and a line on it, which must be a line the worker
// rejects (kindInvalid) or, for the gateway's too_long entries, an
// oversize one; each such line of every plan has an entry, and a line has
// no more than it was sent. It returns how many lines the workers and the
// gateway dead-lettered, each counted once.
func (b *bundle) checkClusterDeadLetters(t *testing.T, plans []*plan, receipts [][]receipt) (workers, gateway int) {
	t.Helper()
	type planLine struct {
		plan int
		line int64
	}
	conns := map[string]attempt{}
	for _, a := range attempts(plans, receipts) {
		conns[string(topology.ConnLineIDs(a.r.Gateway, strconv.FormatUint(a.r.Conn, 10)))] = a
	}
	kinds := make([][]kind, len(plans))
	for i, p := range plans {
		_, kinds[i] = planLines(p)
	}
	copies := map[planLine]int{}
	var errs []string
	for _, e := range b.deadLetters(t) {
		id := e.Header.Get(topology.HeaderLineID)
		dot := strings.LastIndexByte(id, '.')
		a, known := conns[id[:dot+1]]
		line, err := strconv.ParseInt(id[dot+1:], 10, 64)
		if !known || err != nil {
			errs = append(errs, fmt.Sprintf("%q: not a line of the connections sent: %s", id, describeEntry(e)))
			continue
		}
		pl := planLine{a.plan, a.first + line - 1}
		wantKind := kindInvalid
		if e.Reason == deadletter.ReasonTooLong {
			wantKind = kindOverMax
		}
		if pl.line < 1 || pl.line >= int64(len(kinds[pl.plan])) || kinds[pl.plan][pl.line] != wantKind {
			errs = append(errs, fmt.Sprintf("line %d of connection %d is dead-lettered but is no such line: %s", pl.line, pl.plan, describeEntry(e)))
			continue
		}
		copies[pl]++
	}
	want := map[planLine]int{} // times each line to dead-letter was sent
	for _, a := range attempts(plans, receipts) {
		for n := a.first; n < int64(len(kinds[a.plan])); n++ {
			if k := kinds[a.plan][n]; k == kindInvalid || k == kindOverMax {
				want[planLine{a.plan, n}]++
			}
		}
	}
	for pl, sent := range want {
		switch got := copies[pl]; {
		case got == 0:
			errs = append(errs, fmt.Sprintf("line %d of connection %d (%s) has no dead letter", pl.line, pl.plan, plans[pl.plan].source))
		case got > sent:
			errs = append(errs, fmt.Sprintf("line %d of connection %d has %d dead letters; it was sent %d times", pl.line, pl.plan, got, sent))
		}
		if copies[pl] > 0 {
			if kinds[pl.plan][pl.line] == kindOverMax {
				gateway++
			} else {
				workers++
			}
		}
	}
	if len(errs) > 0 {
		t.Errorf("%d dead letters wrong or missing, e.g. %s", len(errs), sample(errs))
	}
	return workers, gateway
}

// TestClusterReplicationCost measures what R3 costs against R1 on the same
// 400,000 lines (100 MB) over eight connections: first the gateway alone
// publishes them into the stream (every receipt ok means JetStream
// acknowledged every frame), then two workers drain it into Postgres. It
// runs against one nats-server with an R1 stream, three with R1 and three
// with R3, and logs for each phase lines/s and the CPU per line of the
// NATS servers (the stream leader's share apart), the gateway and the
// workers, and for the publish the gateway's mean wait for a frame's
// acknowledgement and the time its connections were held back by a full
// window. It is a measurement, not a check, and runs only with
// E2E_CLUSTER_MEASURE=1, best without -race:
//
//	E2E_CLUSTER_MEASURE=1 go test -count=1 -run TestClusterReplicationCost -v ./deploy/e2e/
func TestClusterReplicationCost(t *testing.T) {
	if os.Getenv("E2E_CLUSTER_MEASURE") != "1" {
		t.Skip("a measurement; set E2E_CLUSTER_MEASURE=1 to run it")
	}
	const conns, records = 8, 50_000
	seed := inputSeed(t)
	var plans []*plan
	for c := range conns {
		plans = append(plans, newPlan(rngFor(seed, c), "m"+strconv.Itoa(c), topology.DefaultSource, mix{
			records: records, recordBytes: faultTextBytes, crlfPercent: 20, last: kindRecord,
		}))
	}
	want := expect(plans)
	for _, tc := range []struct{ nodes, replicas int }{{1, 1}, {3, 1}, {3, 3}} {
		t.Run(fmt.Sprintf("%d nodes R%d", tc.nodes, tc.replicas), func(t *testing.T) {
			replicas := strconv.Itoa(tc.replicas)
			b, cluster := setupNATSCluster(t, tc.nodes, setupOptions{gatewayEnv: map[string]string{"INGEST_REPLICAS": replicas}})
			gw := b.startGateway(t)
			b.checkReplicas(t, topology.StreamName, tc.replicas)
			leader := b.streamLeader(t, cluster, topology.StreamName)
			var ws []*proc
			// cpu returns the CPU time of the servers, their stream
			// leader, the gateway and the workers so far.
			cpu := func() (nats, lead, gateway, workers time.Duration) {
				for _, w := range ws {
					workers += procCPU(t, w.pid())
				}
				return cluster.cpu(t), leader.cpuTime(t), procCPU(t, gw.pid()), workers
			}
			perLine := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(want.lines) }

			// Other programs on the machine slow the clock, not the work:
			// CPU per line is the steadier figure.
			fs, err := procfs.NewDefaultFS()
			if err != nil {
				t.Fatal(err)
			}
			if load, err := fs.LoadAvg(); err == nil {
				t.Logf("load average %.2f before the publish", load.Load1)
			}
			nats0, lead0, gw0, _ := cpu()
			start := time.Now()
			if err := sendAll(gw, plans, seed); err != nil {
				t.Fatal(err)
			}
			publish := time.Since(start)
			nats1, lead1, gw1, _ := cpu()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			m, err := metrics.Scrape(ctx, gw.metricsURL)
			if err != nil {
				t.Fatalf("scrape the gateway: %v", err)
			}
			ackWait := time.Duration(m[gateway.MetricPublishLatency+"_sum"] / m[gateway.MetricPublishLatency+"_count"] * float64(time.Second))
			held := time.Duration(m[gateway.MetricBackpressure] * float64(time.Second))
			t.Logf("publish: %.0f lines/s (%s); CPU µs/line: nats %.2f (leader %s %.2f), gateway %.2f; a frame waited %s for its ack on average, the %d connections were held back %s in all",
				float64(want.lines)/publish.Seconds(), publish.Round(time.Millisecond), perLine(nats1-nats0), leader.name, perLine(lead1-lead0), perLine(gw1-gw0),
				ackWait.Round(10*time.Microsecond), conns, held.Round(time.Millisecond))

			ws = b.startWorkers(t, 2, map[string]string{"INGEST_REPLICAS": replicas})
			nats0, lead0, _, w0 := cpu()
			start = time.Now()
			b.waitDrained(t, drainTimeout)
			drain := time.Since(start)
			nats1, lead1, _, w1 := cpu()
			if n := b.rowCount(t); n != len(want.rows) {
				t.Errorf("events has %d rows, want %d", n, len(want.rows))
			}
			t.Logf("drain: %.0f lines/s (%s); CPU µs/line: nats %.2f (leader %.2f), workers %.2f",
				float64(want.lines)/drain.Seconds(), drain.Round(time.Millisecond), perLine(nats1-nats0), perLine(lead1-lead0), perLine(w1-w0))
		})
	}
}
