package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// drainPoll is how often, once every receipt is in, the consumer is asked
// whether it has drained: it bounds how late the end of a run whose last
// lines were filtered is seen.
const drainPoll = 20 * time.Millisecond

// receivedPrefix is where the ingest stream republishes the headers of
// the typed mode's lines, for the latency of a table without received_at.
const receivedPrefix = "bench-received."

// typedResult is what the typed mode found besides the figures it shares
// with the e2e mode.
type typedResult struct {
	Expected *expected `json:"expected"`
	// Tables is what each of Expected.Tables holds, in its order.
	Tables []tableResult `json:"tables"`
	// Rows is the rows of all tables, RowsPerSec them over the end-to-end
	// time.
	Rows       int64   `json:"rows"`
	RowsPerSec float64 `json:"rows_per_sec"`
	// EndBasis says which time ended the run: "last commit" (the last
	// row's commit timestamp) or "consumer drained" (the first poll that
	// found nothing pending or unacknowledged, when the consumer was
	// still busy after the last commit: the last lines were filtered).
	EndBasis string `json:"end_basis"`
	// DrainedAfterCommit is the drain seen minus the last commit, in
	// seconds.
	DrainedAfterCommit float64 `json:"drained_after_commit_seconds"`
	// Latency says how the latency was measured, or why it was not;
	// LatencySamples is over how many rows (of the first table).
	Latency        string `json:"latency"`
	LatencySamples int    `json:"latency_samples"`
}

// tableResult is what one table holds at the end of a typed run.
type tableResult struct {
	Table string `json:"table"`
	// Rows and DistinctKeys are the table's count(*) and count(DISTINCT
	// key); both must equal the expected rows.
	Rows         int64   `json:"rows"`
	DistinctKeys int64   `json:"distinct_keys"`
	RowsPerSec   float64 `json:"rows_per_sec"`
}

// runTyped is the typed mode: the raw publish rate, then the same lines
// end to end through a pipeline spec: -spec, or the corpus's own.
func runTyped(ctx context.Context, b *bench) error {
	spec := b.cfg.Spec
	switch k := b.corpus.kind; {
	case spec == "" && k.keepEvery > 0:
		spec = filepath.Join(b.h.dir, k.name+".yaml")
		if err := os.WriteFile(spec, []byte(k.spec()), 0o644); err != nil {
			return fmt.Errorf("write the %s pipeline: %w", k.name, err)
		}
	case spec == "":
		spec = DefaultSpec
	}
	spec, err := filepath.Abs(spec)
	if err != nil {
		return fmt.Errorf("resolve -spec %s: %w", spec, err)
	}
	b.pr.step("working out what %s makes of the corpus (in-process, worker/pipeline)", spec)
	exp, err := expect(spec, b.corpus)
	if err != nil {
		return fmt.Errorf("load -spec: %w", err)
	}
	b.pr.step("expected: %s kept (%s), %s filtered, %s rejected (%s), in %.1fs",
		thousands(int64(exp.Kept)), exp.tablesText(), thousands(int64(exp.Filtered)), thousands(int64(exp.Rejected)), exp.rejectedText(), exp.Seconds)
	if err := measureRaw(ctx, b); err != nil {
		return err
	}
	settle()
	pl := pipeline{
		Name:      fmt.Sprintf("pipeline %s: source %s → %s", spec, exp.Source, exp.tablesText()),
		Source:    exp.Source,
		Table:     exp.Tables[0].Table,
		WorkerEnv: []string{"WORKER_PIPELINES=" + spec},
	}
	err = runPrograms(ctx, b, pl, func(r *e2eRun) (*e2eResult, error) {
		var rc *receivedCapture
		if exp.receivedAt == "" {
			var err error
			if rc, err = captureReceived(ctx, b.h, exp.Source); err != nil {
				return nil, err
			}
			defer rc.close()
		}
		res, tr, err := (&typedRun{e2eRun: r, exp: exp, rc: rc}).measure(ctx)
		b.report.Typed = &tr
		return &res, err
	})
	if err != nil {
		return fmt.Errorf("end to end: %w", err)
	}
	return nil
}

// typedRun is one typed-mode measurement in progress.
type typedRun struct {
	*e2eRun
	exp *expected
	rc  *receivedCapture // nil when the table has received_at
}

func (r *typedRun) measure(ctx context.Context) (e2eResult, typedResult, error) {
	b, exp := r.b, r.exp
	n := b.corpus.Len()
	spans := b.corpus.Split(b.cfg.Conns)
	snd, err := dialSenders(ctx, b, spans)
	if err != nil {
		return e2eResult{}, typedResult{}, err
	}
	defer snd.close()
	cons, err := b.h.js.Consumer(ctx, topology.StreamName, topology.ConsumerName)
	if err != nil {
		return e2eResult{}, typedResult{}, fmt.Errorf("find consumer: %w", err)
	}

	before, err := r.sample()
	if err != nil {
		return e2eResult{}, typedResult{}, err
	}
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	b.pr.step("sending %s lines (%s) over %d connections to source %s", thousands(int64(n)), mib(b.corpus.PayloadBytes()), len(spans), exp.Source)
	t0, results := snd.start(sendCtx)

	d, err := r.waitDrained(ctx, cons, t0, results)
	if err != nil {
		return e2eResult{}, typedResult{}, err
	}
	after, err := r.sample()
	if err != nil {
		return e2eResult{}, typedResult{}, err
	}

	res := e2eResult{Pipeline: r.pl, DistinctLines: -1}
	tr := typedResult{Expected: exp}
	lastReceipt := t0
	for _, s := range d.receipts {
		lastReceipt = later(lastReceipt, s.At)
	}
	res.Ingest = newRate(n, b.corpus.PayloadBytes(), lastReceipt.Sub(t0))

	b.pr.step("checking every kept line landed once")
	var lastCommit *time.Time
	for i, x := range exp.Tables {
		t := tableResult{Table: x.Table}
		var last *time.Time
		err = r.db.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(DISTINCT (%s)), max(pg_xact_commit_timestamp(xmin)) FROM %s`,
			keyList(x.Key, ""), tableIdent(x.Table).Sanitize())).Scan(&t.Rows, &t.DistinctKeys, &last)
		if err != nil {
			return e2eResult{}, typedResult{}, fmt.Errorf("read commit times of %s: %w", x.Table, err)
		}
		if t.Rows != x.Rows || t.DistinctKeys != x.Rows {
			return e2eResult{}, typedResult{}, fmt.Errorf("%s holds %d rows with %d distinct keys; the spec makes %d distinct keys of its %d kept lines",
				x.Table, t.Rows, t.DistinctKeys, x.Rows, exp.Kept)
		}
		if i == 0 {
			res.DistinctLines = t.DistinctKeys
		}
		if last != nil && (lastCommit == nil || last.After(*lastCommit)) {
			lastCommit = last
		}
		tr.Tables = append(tr.Tables, t)
		tr.Rows += t.Rows
	}

	end := d.drainedAt
	tr.EndBasis = "consumer drained"
	if lastCommit != nil {
		tr.DrainedAfterCommit = d.drainedAt.Sub(*lastCommit).Seconds()
		if !d.busyAt.After(*lastCommit) {
			end, tr.EndBasis = *lastCommit, "last commit"
		}
	}
	res.EndToEnd = newRate(n, b.corpus.PayloadBytes(), end.Sub(t0))
	if s := res.EndToEnd.Seconds; s > 0 {
		tr.RowsPerSec = float64(tr.Rows) / s
		for i := range tr.Tables {
			tr.Tables[i].RowsPerSec = float64(tr.Tables[i].Rows) / s
		}
	}

	if err := r.latency(ctx, d.receipts, spans, &res, &tr); err != nil {
		return e2eResult{}, typedResult{}, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return e2eResult{}, typedResult{}, fmt.Errorf("read consumer: %w", err)
	}
	res.Redelivered = uint64(info.NumRedelivered)
	r.account(&res, before, after)
	return res, tr, nil
}

// drained is how a typed run ended.
type drained struct {
	receipts []sent
	// drainedAt is when a poll first found the consumer drained; busyAt
	// is when the last poll that found it busy was sent. The drain
	// happened between the two.
	drainedAt, busyAt time.Time
}

// waitDrained waits until every receipt is in and the consumer has
// nothing pending and nothing unacknowledged, then checks every table
// holds the expected rows. It prints progress, and fails when a program exits,
// a sender fails, or nothing moves for cfg.StallTimeout.
func (r *typedRun) waitDrained(ctx context.Context, cons jetstream.Consumer, t0 time.Time, results <-chan sent) (drained, error) {
	b, want := r.b, r.exp.rows()
	n := int64(b.corpus.Len())
	var d drained
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	var rows, acked, lastShownAcked uint64
	lastChange, lastShownAt, lastCounted := time.Now(), t0, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case s, ok := <-results:
			if !ok {
				results = nil
				continue
			}
			if s.Err != nil {
				return d, s.Err
			}
			d.receipts = append(d.receipts, s)
			continue
		case <-tick.C:
		}
		allIn := len(d.receipts) == b.cfg.Conns
		now := time.Now()
		if !allIn && now.Sub(lastCounted) < pollEvery {
			continue
		}
		asked := time.Now()
		info, err := cons.Info(ctx)
		if err != nil {
			return d, fmt.Errorf("read consumer: %w", err)
		}
		if allIn && info.NumPending == 0 && info.NumAckPending == 0 {
			d.drainedAt = time.Now()
			counts, got, err := r.countRows(ctx)
			if err != nil {
				return d, err
			}
			for i, x := range r.exp.Tables {
				if counts[i] != x.Rows {
					return d, fmt.Errorf("the consumer drained but %s holds %d rows; the spec makes %d (%s)", x.Table, counts[i], x.Rows, r.backlog(ctx))
				}
			}
			b.pr.step("  %5.1fs  %9s/%s rows, all %s lines acknowledged, receipts %d/%d",
				d.drainedAt.Sub(t0).Seconds(), thousands(got), thousands(want), thousands(n), len(d.receipts), b.cfg.Conns)
			return d, nil
		}
		if allIn {
			d.busyAt = asked
		}
		if now.Sub(lastCounted) < pollEvery {
			continue
		}
		lastCounted = now
		if err := r.exited(); err != nil {
			return d, err
		}
		counts, got, err := r.countRows(ctx)
		if err != nil {
			return d, err
		}
		for i, x := range r.exp.Tables {
			if counts[i] > x.Most {
				return d, fmt.Errorf("%s holds %d rows, more than the %d distinct keys the spec makes", x.Table, counts[i], x.Most)
			}
		}
		if uint64(got) != rows || info.AckFloor.Stream != acked {
			rows, acked, lastChange = uint64(got), info.AckFloor.Stream, now
		} else if now.Sub(lastChange) > b.cfg.StallTimeout {
			return d, fmt.Errorf("nothing landed or was acknowledged for %s (%d of %d rows; %d pending, %d unacknowledged; %s)",
				b.cfg.StallTimeout, got, want, info.NumPending, info.NumAckPending, r.backlog(ctx))
		}
		if now.Sub(lastShownAt) >= progressEvery {
			elapsed := now.Sub(t0).Seconds()
			b.pr.step("  %5.1fs  %9s/%s rows (%3.0f%%)  %7s lines acked/s (last %.0fs: %s)  receipts %d/%d  %s",
				elapsed, thousands(got), thousands(want), 100*float64(got)/float64(max(want, 1)),
				thousands(int64(float64(acked)/elapsed)), now.Sub(lastShownAt).Seconds(),
				thousands(int64(float64(acked-lastShownAcked)/now.Sub(lastShownAt).Seconds())),
				len(d.receipts), b.cfg.Conns, r.backlog(ctx))
			lastShownAcked, lastShownAt = acked, now
		}
	}
}

// countRows returns the count(*) of each of the expected tables, in
// their order, and their sum.
func (r *typedRun) countRows(ctx context.Context) ([]int64, int64, error) {
	counts := make([]int64, len(r.exp.Tables))
	dst := make([]any, len(counts))
	subs := make([]string, len(counts))
	for i, x := range r.exp.Tables {
		dst[i] = &counts[i]
		subs[i] = fmt.Sprintf("(SELECT count(*) FROM %s)", tableIdent(x.Table).Sanitize())
	}
	if err := r.db.QueryRow(ctx, "SELECT "+strings.Join(subs, ", ")).Scan(dst...); err != nil {
		return nil, 0, fmt.Errorf("count rows: %w", err)
	}
	var sum int64
	for _, c := range counts {
		sum += c
	}
	return counts, sum, nil
}

// latency fills in the line→row latency of the first table's rows: from
// its received_at column when the spec has one, else by joining each row,
// through its key, to the gateway's read time of its line as the stream
// republished it. A row, in any table, whose key is not one the spec
// makes there fails the run.
func (r *typedRun) latency(ctx context.Context, receipts []sent, spans []span, res *e2eResult, tr *typedResult) error {
	exp := r.exp
	if exp.receivedAt != "" {
		tr.Latency = fmt.Sprintf("row commit time − %s (the gateway's read time, stored by the spec)", exp.receivedAt)
	} else {
		tr.Latency = "row commit time − gateway read time of its line (Jetline-Received-At, from a headers-only republish of the ingest stream, joined by key)"
	}
	commits := make(map[string]time.Time, exp.Tables[0].Rows)
	var lat []float64
	for i, x := range exp.Tables {
		received := "NULL::timestamptz"
		if i == 0 && exp.receivedAt != "" {
			received = pgxIdent(exp.receivedAt)
		}
		rows, err := r.db.Query(ctx, fmt.Sprintf(`SELECT concat_ws(E'\x1f', %s), pg_xact_commit_timestamp(xmin), %s FROM %s`,
			keyList(x.Key, "::text"), received, tableIdent(x.Table).Sanitize()))
		if err != nil {
			return fmt.Errorf("read rows of %s: %w", x.Table, err)
		}
		var key string
		var committed time.Time
		var readAt *time.Time
		_, err = pgx.ForEachRow(rows, []any{&key, &committed, &readAt}, func() error {
			if _, ok := x.keySet[key]; !ok {
				return fmt.Errorf("%s holds a row with key %q, which the spec makes of no line", x.Table, strings.ReplaceAll(key, keySep, ", "))
			}
			if i == 0 {
				commits[key] = committed
				if readAt != nil {
					lat = append(lat, committed.Sub(*readAt).Seconds())
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read rows of %s: %w", x.Table, err)
		}
	}
	if r.rc != nil {
		seen, err := r.rc.wait(ctx, r.b.corpus.Len())
		if err != nil {
			return err
		}
		lat, err = joinLatency(seen, receipts, spans, exp, commits)
		if err != nil {
			return err
		}
		if len(seen) < r.b.corpus.Len() {
			tr.Latency += fmt.Sprintf("; only %d of %d lines' headers arrived", len(seen), r.b.corpus.Len())
		}
	}
	tr.LatencySamples = len(lat)
	if len(lat) == 0 {
		tr.Latency = "not available: no row could be joined to its line's read time"
		return nil
	}
	res.LatencyP50, res.LatencyP99 = percentile(lat, 0.5), percentile(lat, 0.99)
	return nil
}

// joinLatency returns, for each row, its commit time minus the earliest
// gateway read time of a line with its key.
func joinLatency(seen []seenLine, receipts []sent, spans []span, exp *expected, commits map[string]time.Time) ([]float64, error) {
	first := map[uint64]int{} // gateway connection → first corpus line
	for _, s := range receipts {
		first[s.Receipt.Conn] = spans[s.Conn-1].First
	}
	read := make(map[string]time.Time, len(commits))
	for _, s := range seen {
		f, ok := first[s.conn]
		i := f + int(s.line) - 1
		if !ok || s.line < 1 || i >= len(exp.keys) {
			return nil, fmt.Errorf("republished headers name line %d of gateway connection %d, which no sender sent", s.line, s.conn)
		}
		key := exp.keys[i]
		if key == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, s.at)
		if err != nil {
			return nil, fmt.Errorf("line %d of gateway connection %d: %s %q: %w", s.line, s.conn, topology.HeaderReceivedAt, s.at, err)
		}
		if t, ok := read[key]; !ok || at.Before(t) {
			read[key] = at
		}
	}
	lat := make([]float64, 0, len(commits))
	for key, committed := range commits {
		if at, ok := read[key]; ok {
			lat = append(lat, committed.Sub(at).Seconds())
		}
	}
	return lat, nil
}

// percentile returns the p-quantile of xs, interpolating between ranks as
// Postgres's percentile_cont does. It sorts xs.
func percentile(xs []float64, p float64) float64 {
	slices.Sort(xs)
	pos := p * float64(len(xs)-1)
	lo := int(pos)
	if lo+1 >= len(xs) {
		return xs[len(xs)-1]
	}
	return xs[lo] + (pos-float64(lo))*(xs[lo+1]-xs[lo])
}

// seenLine is the identity and read time of one line, from its
// republished headers.
type seenLine struct {
	conn uint64
	line int64
	at   string
}

// receivedCapture collects the headers the ingest stream republishes.
// The stream is a work queue, so lines are gone once the workers
// acknowledge them; republishing only their headers (a few hundred bytes
// a line, to the bench, which hosts NATS) is what lets a table without
// received_at be joined to the gateway's read times.
type receivedCapture struct {
	sub *nats.Subscription

	mu   sync.Mutex
	seen []seenLine
	bad  error
}

// captureReceived subscribes to the republished headers of source's
// lines, then has the ingest stream republish them.
func captureReceived(ctx context.Context, h *harness, source string) (*receivedCapture, error) {
	rc := &receivedCapture{}
	var err error
	rc.sub, err = h.nc.Subscribe(receivedPrefix+source, rc.add)
	if err != nil {
		return nil, fmt.Errorf("subscribe to republished headers: %w", err)
	}
	if err := rc.sub.SetPendingLimits(-1, -1); err != nil {
		rc.close()
		return nil, fmt.Errorf("subscribe to republished headers: %w", err)
	}
	if err := h.nc.FlushTimeout(readyTimeout); err != nil {
		rc.close()
		return nil, fmt.Errorf("subscribe to republished headers: %w", err)
	}
	st, err := h.js.Stream(ctx, topology.StreamName)
	if err != nil {
		rc.close()
		return nil, fmt.Errorf("find stream %s: %w", topology.StreamName, err)
	}
	cfg := st.CachedInfo().Config
	cfg.RePublish = &jetstream.RePublish{Source: topology.Subject(source), Destination: receivedPrefix + source, HeadersOnly: true}
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		rc.close()
		return nil, fmt.Errorf("have stream %s republish headers: %w", topology.StreamName, err)
	}
	return rc, nil
}

func (rc *receivedCapture) add(m *nats.Msg) {
	conn, err1 := strconv.ParseUint(m.Header.Get(topology.HeaderConn), 10, 64)
	line, err2 := strconv.ParseInt(m.Header.Get(topology.HeaderLine), 10, 64)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err1 != nil || err2 != nil {
		if rc.bad == nil {
			rc.bad = fmt.Errorf("republished headers lack %s or %s: %v", topology.HeaderConn, topology.HeaderLine, m.Header)
		}
		return
	}
	// A frame's lines were all read by the time its first was: one
	// header stands for Jetline-Lines lines from Jetline-Line on.
	lines, err := strconv.Atoi(m.Header.Get(topology.HeaderLines))
	if err != nil || lines < 1 {
		lines = 1
	}
	at := m.Header.Get(topology.HeaderReceivedAt)
	for k := range lines {
		rc.seen = append(rc.seen, seenLine{conn: conn, line: line + int64(k), at: at})
	}
}

// wait returns the headers collected once n have arrived, or after a few
// seconds with what has.
func (rc *receivedCapture) wait(ctx context.Context, n int) ([]seenLine, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc.mu.Lock()
		seen, bad := rc.seen, rc.bad
		rc.mu.Unlock()
		if bad != nil {
			return nil, bad
		}
		if len(seen) >= n || time.Now().After(deadline) {
			return seen, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (rc *receivedCapture) close() {
	if rc.sub != nil {
		_ = rc.sub.Unsubscribe()
	}
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// keyList returns the columns of key as SQL identifiers, each followed by
// suffix, separated by commas.
func keyList(key []string, suffix string) string {
	cols := make([]string, len(key))
	for i, k := range key {
		cols[i] = pgxIdent(k) + suffix
	}
	return strings.Join(cols, ", ")
}

// pgxIdent quotes name as an SQL identifier.
func pgxIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// writeText writes the typed mode's part of the text report: the rows
// stored per table, what the spec made of the lines, how the end was
// taken, the latency and the checks.
func (t *typedResult) writeText(b *strings.Builder, e *e2eResult, conns int) {
	x := t.Expected
	if len(t.Tables) == 1 {
		fmt.Fprintf(b, "%-18s %10s rows/s   (%s rows in %.1fs)\n", "rows stored", thousands(int64(t.RowsPerSec)), thousands(t.Rows), e.EndToEnd.Seconds)
	} else {
		fmt.Fprintf(b, "%-18s %10s rows/s   (%s rows in %.1fs, %d tables)\n", "rows stored", thousands(int64(t.RowsPerSec)), thousands(t.Rows), e.EndToEnd.Seconds, len(t.Tables))
		for _, tr := range t.Tables {
			fmt.Fprintf(b, "  %-24s %10s rows/s   (%s rows)\n", tr.Table, thousands(int64(tr.RowsPerSec)), thousands(tr.Rows))
		}
	}
	fmt.Fprintf(b, "\n%-18s %s → %s\n", "pipeline", x.Spec, x.tablesText())
	fmt.Fprintf(b, "%-18s %s kept, %s filtered, %s rejected (%s); worked out in-process with worker/pipeline\n", "lines",
		thousands(int64(x.Kept)), thousands(int64(x.Filtered)), thousands(int64(x.Rejected)), x.rejectedText())
	fmt.Fprintf(b, "%-18s %s (the consumer was seen drained %s after the last commit, polling every %s)\n", "end of run", t.EndBasis,
		seconds(t.DrainedAfterCommit), drainPoll)
	if t.LatencySamples > 0 {
		fmt.Fprintf(b, "%-18s p50 %s, p99 %s over %s rows of %s (%s; includes the wait behind the backlog)\n",
			"line→row latency", seconds(e.LatencyP50), seconds(e.LatencyP99), thousands(int64(t.LatencySamples)), x.Tables[0].Table, t.Latency)
	} else {
		fmt.Fprintf(b, "%-18s %s\n", "line→row latency", t.Latency)
	}
	for i, tr := range t.Tables {
		name := ""
		if len(t.Tables) > 1 {
			name = tr.Table + ": "
		}
		fmt.Fprintf(b, "%-18s %scount(*) %s = count(DISTINCT %s) %s = expected %s\n", "exactly once",
			name, thousands(tr.Rows), strings.Join(x.Tables[i].Key, ", "), thousands(tr.DistinctKeys), thousands(x.Tables[i].Rows))
	}
	fmt.Fprintf(b, "%-18s %d receipts ok, %s redelivered\n", "", conns, thousands(int64(e.Redelivered)))
}

// tablesText lists the tables with their keys and expected rows.
func (e *expected) tablesText() string {
	parts := make([]string, len(e.Tables))
	for i, t := range e.Tables {
		parts[i] = fmt.Sprintf("%s (key %s, %s rows)", t.Table, strings.Join(t.Key, ", "), thousands(t.Rows))
	}
	return strings.Join(parts, ", ")
}
