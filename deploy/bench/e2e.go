package main

import (
	"context"
	"fmt"
	"net"
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
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// Timing of the end-to-end measurement.
const (
	// readyTimeout bounds waiting for the programs to come up.
	readyTimeout = time.Minute
	// pollEvery is how often landed rows are counted; drainPoll how often,
	// once every receipt is in, the consumer is asked whether it has
	// drained, which bounds how late the end of a run whose last lines
	// were filtered is seen. The end is taken from commit timestamps, so
	// polling only delays the report.
	pollEvery = 250 * time.Millisecond
	drainPoll = 20 * time.Millisecond
	// progressEvery is how often progress is printed.
	progressEvery = 3 * time.Second
	// lonePoll is how often -latency counts the rows while it waits for a
	// lone line's row: it bounds how late a row is seen.
	lonePoll = time.Millisecond
)

// receivedPrefix is where the ingest stream republishes the headers of a
// pipeline's lines, for the latency of a table without received_at.
const receivedPrefix = "bench-received."

// pipeline is what the workers run and where its rows land.
type pipeline struct {
	// Name describes the pipeline in the report.
	Name string `json:"name"`
	// Source is the gateway listener the lines are sent to. Empty means
	// the default listener, whose lines land raw in Table (WORKER_TABLE);
	// otherwise a pipeline in WorkerEnv takes the source's lines.
	Source string `json:"source,omitempty"`
	// Table is the first table rows land in, "name" or "schema.name".
	Table string `json:"table"`
	// WorkerEnv is added to every worker's environment.
	WorkerEnv []string `json:"worker_env,omitempty"`
}

// rawLanding is the workers' default pipeline: every line becomes one row
// of events (line_id, seq, source, received_at, payload jsonb).
var rawLanding = pipeline{
	Name:  "raw landing: events (line_id, seq, source, received_at, payload jsonb lz4)",
	Table: "events",
}

// rawExpected is what the raw landing makes of n lines: a row each, with
// the gateway's read time, none of two lines with one status id (each
// line of the corpus has its own). Its keys, line ids, are the gateway's
// to choose, so rows are not checked against them.
func rawExpected(n int) *expected {
	return &expected{Kept: n, receivedAt: "received_at", rowPerLine: true,
		Tables: []tableExpect{{Table: rawLanding.Table, Key: []string{"line_id"}, Rows: int64(n), Most: int64(n), distinct: "payload->'id'"}}}
}

// e2eResult is what the end-to-end measurement found.
type e2eResult struct {
	Pipeline pipeline `json:"pipeline"`
	// Ingest runs from the first byte sent to the last receipt: the
	// gateway has every line durable in JetStream.
	Ingest rate `json:"ingest"`
	// EndToEnd runs from the first byte sent to the end of the run (see
	// [typedResult.EndBasis]; the raw landing's is its last commit).
	EndToEnd rate `json:"end_to_end"`
	// LatencyP50 and LatencyP99 are percentiles, in seconds, of each
	// row's commit time minus the time the gateway read its line.
	LatencyP50 float64 `json:"latency_p50_seconds"`
	LatencyP99 float64 `json:"latency_p99_seconds"`
	// DistinctLines is the first table's count of distinct lines (for
	// events, distinct status ids; for a spec, distinct keys).
	DistinctLines int64 `json:"distinct_lines"`
	// Redelivered counts lines JetStream delivered more than once.
	Redelivered uint64 `json:"redelivered"`
	// WindowSeconds is the measured span the CPU figures cover.
	WindowSeconds float64     `json:"window_seconds"`
	Processes     []procUsage `json:"processes"`
	// BusyPct and IOWaitPct are the machine's CPU busy and iowait shares
	// during the window, in percent of all cores; OtherCores its busy
	// time not used by the run's processes, in cores: much above zero
	// means the numbers are skewed low.
	BusyPct    float64 `json:"machine_busy_pct"`
	IOWaitPct  float64 `json:"machine_iowait_pct"`
	OtherCores float64 `json:"other_cores"`
	// Frames is how many frames of lines the gateway had acknowledged,
	// from its /metrics; -1 when it exports no frame counter.
	Frames int64 `json:"frames"`
}

// typedResult is what a run through a pipeline spec found besides the
// figures it shares with the raw landing.
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

// tableResult is what one table holds at the end of a run.
type tableResult struct {
	Table string `json:"table"`
	// Rows and DistinctKeys are the table's count(*) and count(DISTINCT
	// key); both must equal the expected rows.
	Rows         int64   `json:"rows"`
	DistinctKeys int64   `json:"distinct_keys"`
	RowsPerSec   float64 `json:"rows_per_sec"`
}

// runE2E is the e2e mode: the raw publish rate, then the same lines end
// to end into the raw landing and one bare COPY of them, or through a
// pipeline spec (-spec, -mode typed) into its tables; with -latency, lone
// lines instead.
func runE2E(ctx context.Context, b *bench) error {
	exp, pl := rawExpected(b.corpus.Len()), rawLanding
	if b.cfg.typed() {
		var err error
		if exp, pl, err = loadSpec(b); err != nil {
			return err
		}
	}
	if !b.cfg.Latency {
		if !b.cfg.typed() {
			b.pr.step("goal: %s", copyGoalText)
		}
		if err := measureRaw(ctx, b); err != nil {
			return err
		}
	}
	settle()
	err := runPrograms(ctx, b, pl, func(r *e2eRun) (*e2eResult, error) {
		if b.cfg.Latency {
			lone, err := r.lone(ctx)
			b.report.Lone = &lone
			return nil, err
		}
		if exp.receivedAt == "" {
			var err error
			if r.rc, err = captureReceived(ctx, b.h, exp.Source); err != nil {
				return nil, err
			}
			defer r.rc.close()
		}
		res, tr, err := r.measure(ctx, exp)
		if b.cfg.typed() {
			b.report.Typed = &tr
		}
		if err != nil || b.cfg.typed() {
			return &res, err
		}
		// The bare COPY runs after the end-to-end measurement, on its idle
		// programs, so that it takes nothing from it.
		cp, err := r.bareCopy(ctx)
		b.report.Copy = &cp
		return &res, err
	})
	if err != nil {
		return fmt.Errorf("end to end: %w", err)
	}
	return nil
}

// loadSpec works out what the run's spec (-spec, or the corpus's own)
// makes of the corpus, and the pipeline that runs it.
func loadSpec(b *bench) (*expected, pipeline, error) {
	spec := b.cfg.Spec
	switch k := b.corpus.kind; {
	case spec == "" && k.keepEvery > 0:
		spec = filepath.Join(b.h.dir, k.name+".yaml")
		if err := os.WriteFile(spec, []byte(k.spec()), 0o644); err != nil {
			return nil, pipeline{}, fmt.Errorf("write the %s pipeline: %w", k.name, err)
		}
	case spec == "":
		spec = DefaultSpec
	}
	spec, err := filepath.Abs(spec)
	if err != nil {
		return nil, pipeline{}, fmt.Errorf("resolve -spec %s: %w", spec, err)
	}
	b.pr.step("working out what %s makes of the corpus (in-process, worker/pipeline)", spec)
	exp, err := expect(spec, b.corpus)
	if err != nil {
		return nil, pipeline{}, fmt.Errorf("load -spec: %w", err)
	}
	b.pr.step("expected: %s kept (%s), %s filtered, %s rejected (%s), in %.1fs",
		thousands(int64(exp.Kept)), exp.tablesText(), thousands(int64(exp.Filtered)), thousands(int64(exp.Rejected)), exp.rejectedText(), exp.Seconds)
	return exp, pipeline{
		Name:      fmt.Sprintf("pipeline %s: source %s → %s", spec, exp.Source, exp.tablesText()),
		Source:    exp.Source,
		Table:     exp.Tables[0].Table,
		WorkerEnv: []string{"WORKER_PIPELINES=" + spec},
	}, nil
}

// procUsage is one process's (or process group's) share of the run.
type procUsage struct {
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"`
	// CPUSeconds is user plus system time during the window; Cores is
	// that divided by the window (1.0 = one core busy throughout).
	CPUSeconds float64 `json:"cpu_seconds"`
	Cores      float64 `json:"cores"`
	// PeakRSS is VmHWM in bytes, read just before stopping; 0 when not
	// measured.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
}

// e2eRun is one end-to-end measurement in progress.
type e2eRun struct {
	b  *bench
	pl pipeline

	gateway       *child
	gatewayHealth string
	workers       []*child
	db            *pgx.Conn
	ingest        jetstream.Stream
	rc            *receivedCapture // nil when the first table has received_at
}

// runPrograms starts the workers and the gateway for pl, runs measure,
// and stops the programs. A result measure returns gets the programs'
// peak RSS and the gateway's frames, and goes into the report.
func runPrograms(ctx context.Context, b *bench, pl pipeline, measure func(r *e2eRun) (*e2eResult, error)) error {
	r := &e2eRun{b: b, pl: pl}
	defer func() {
		if r.db != nil {
			r.db.Close(context.WithoutCancel(ctx))
		}
	}()
	if err := r.startPrograms(ctx); err != nil {
		return err
	}
	res, err := measure(r)
	if err != nil {
		return err
	}
	if res != nil {
		for i := range res.Processes {
			if p := &res.Processes[i]; p.PID != 0 && p.Name != benchProcName {
				if _, p.PeakRSS, err = rss(p.PID); err != nil {
					return err
				}
			}
		}
		res.Frames = -1
		if n, ok := scrapeSum(ctx, r.gatewayHealth, framesMetric); ok {
			res.Frames = int64(n)
		}
		b.report.setE2E(*res)
	}
	return b.stopPrograms("the gateway and the workers")
}

// framesMetric counts the frames the gateway has had acknowledged, by
// source.
const framesMetric = "jetline_gateway_frames_published_total"

// scrapeSum returns the sum of the series of metric name, whatever their
// labels, on the /metrics of the health server at addr, and false when it
// serves none or cannot be read.
func scrapeSum(ctx context.Context, addr, name string) (float64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	samples, err := metrics.Scrape(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return 0, false
	}
	sum, found := 0.0, false
	for series, v := range samples {
		if series == name || strings.HasPrefix(series, name+"{") {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// programs returns the gateway and the workers started so far.
func (r *e2eRun) programs() []*child {
	if r.gateway == nil {
		return r.workers
	}
	return append([]*child{r.gateway}, r.workers...)
}

// childEnv is the environment every program gets besides its own address
// and name: the servers, and the flags' settings, -env last so it wins.
func (b *bench) childEnv(extra ...string) []string {
	env := []string{"NATS_URL=" + b.h.nats.ClientURL(), "DATABASE_URL=" + b.h.pg.URL(), "LOG_FORMAT=json", "LOG_LEVEL=warn"}
	if b.cfg.WorkerConcurrency > 0 {
		env = append(env, "WORKER_CONCURRENCY="+strconv.Itoa(b.cfg.WorkerConcurrency))
	}
	if b.cfg.BatchSize > 0 {
		env = append(env, "WORKER_BATCH_SIZE="+strconv.Itoa(b.cfg.BatchSize))
	}
	return slices.Concat(env, extra, b.cfg.ChildEnv)
}

// startPrograms starts the workers, waits until they are ready, then the
// gateway, and waits until it accepts connections.
func (r *e2eRun) startPrograms(ctx context.Context) error {
	h, cfg, pr := r.b.h, r.b.cfg, r.b.pr
	extra := r.pl.WorkerEnv
	if r.pl.Source == "" {
		extra = append(extra, "WORKER_TABLE="+r.pl.Table)
	}
	env := r.b.childEnv(extra...)
	addrs, err := freeAddrs(cfg.Workers + 2)
	if err != nil {
		return err
	}
	if r.db, err = pgx.Connect(ctx, h.pg.URL()); err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}

	// The first worker is waited for alone so that a worker that cannot
	// start fails the run before the others are started; the store's
	// advisory lock already lets workers started together create the table.
	pr.step("starting %d workers (%s)", cfg.Workers, h.binaries.Worker.Path)
	for i := range cfg.Workers {
		name := fmt.Sprintf("worker-%d", i+1)
		c, err := r.b.startChild(name, h.binaries.Worker.Path, slices.Concat(env,
			[]string{"WORKER_HEALTH_ADDR=" + addrs[i], "WORKER_INSTANCE=bench-" + name}))
		if err != nil {
			return err
		}
		r.workers = append(r.workers, c)
		if i == 0 || i == cfg.Workers-1 {
			if err := r.waitWorkers(ctx, addrs[:i+1]); err != nil {
				return err
			}
		}
	}

	listen, gwHealth := addrs[cfg.Workers], addrs[cfg.Workers+1]
	listener := listen
	if r.pl.Source != "" {
		listener = r.pl.Source + "=" + listen
	}
	pr.step("starting the gateway on %s (%s)", listener, h.binaries.Gateway.Path)
	r.gateway, err = r.b.startChild("gateway", h.binaries.Gateway.Path, slices.Concat(env,
		[]string{"GATEWAY_LISTEN=" + listener, "GATEWAY_HEALTH_ADDR=" + gwHealth, "GATEWAY_INSTANCE=bench-gateway"}))
	if err != nil {
		return err
	}
	r.gatewayHealth = gwHealth
	// The probe connection sends nothing and gets an empty receipt.
	if err := poll(ctx, "gateway listening", r.programs, func() (bool, error) {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	}); err != nil {
		return err
	}
	r.b.gatewayAddr = listen
	if r.ingest, err = h.js.Stream(ctx, topology.StreamName); err != nil {
		return fmt.Errorf("find stream %s: %w", topology.StreamName, err)
	}
	return nil
}

// waitWorkers waits until every worker is ready (NATS and Postgres
// reachable), the consumer exists and the table has been created.
func (r *e2eRun) waitWorkers(ctx context.Context, healthAddrs []string) error {
	return poll(ctx, "workers ready", r.programs, func() (bool, error) {
		for _, addr := range healthAddrs {
			if health.Probe("http://"+addr+"/readyz", time.Second) != nil {
				return false, nil
			}
		}
		if _, err := r.b.h.js.Consumer(ctx, topology.StreamName, topology.ConsumerName); err != nil {
			return false, nil
		}
		var exists bool
		if err := r.db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", r.pl.Table).Scan(&exists); err != nil {
			return false, fmt.Errorf("check table %s: %w", r.pl.Table, err)
		}
		return exists, nil
	})
}

// measure sends the corpus, waits until the consumer has drained, and
// checks that every table holds the rows exp says, each once; then it
// reads the rates, the latency and the CPU used.
func (r *e2eRun) measure(ctx context.Context, exp *expected) (e2eResult, typedResult, error) {
	b := r.b
	n := b.corpus.Len()
	res, tr := e2eResult{Pipeline: r.pl}, typedResult{Expected: exp}
	spans := b.corpus.Split(b.cfg.Conns)
	snd, err := dialSenders(ctx, b, spans)
	if err != nil {
		return res, tr, err
	}
	defer snd.close()
	cons, err := b.h.js.Consumer(ctx, topology.StreamName, topology.ConsumerName)
	if err != nil {
		return res, tr, fmt.Errorf("find consumer: %w", err)
	}
	before, err := r.sample()
	if err != nil {
		return res, tr, err
	}
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	b.pr.step("sending %s lines (%s) over %d connections", thousands(int64(n)), mib(b.corpus.PayloadBytes()), len(spans))
	t0, results := snd.start(sendCtx)
	d, err := r.waitDrained(ctx, exp, cons, t0, results)
	if err != nil {
		return res, tr, err
	}
	after, err := r.sample()
	if err != nil {
		return res, tr, err
	}
	lastReceipt := t0
	for _, s := range d.receipts {
		if s.At.After(lastReceipt) {
			lastReceipt = s.At
		}
	}
	res.Ingest = newRate(n, b.corpus.PayloadBytes(), lastReceipt.Sub(t0))

	b.pr.step("checking every kept line landed once")
	var lastCommit *time.Time
	for i, x := range exp.Tables {
		t := tableResult{Table: x.Table}
		var last *time.Time
		distinct := x.distinct
		if distinct == "" {
			distinct = "(" + keyList(x.Key, "") + ")"
		}
		err = r.db.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(DISTINCT %s), max(pg_xact_commit_timestamp(xmin)) FROM %s`,
			distinct, tableIdent(x.Table).Sanitize())).Scan(&t.Rows, &t.DistinctKeys, &last)
		switch {
		case err != nil:
			return res, tr, fmt.Errorf("read commit times of %s: %w", x.Table, err)
		case t.Rows != x.Rows:
			return res, tr, fmt.Errorf("%s holds %d rows; the %d lines kept make %d distinct keys", x.Table, t.Rows, exp.Kept, x.Rows)
		case t.DistinctKeys != x.Rows:
			return res, tr, fmt.Errorf("%s holds %d rows but only %d distinct %s: some line landed twice", x.Table, t.Rows, t.DistinctKeys, distinct)
		}
		if last != nil && (lastCommit == nil || last.After(*lastCommit)) {
			lastCommit = last
		}
		tr.Tables = append(tr.Tables, t)
		tr.Rows += t.Rows
		if i == 0 {
			res.DistinctLines = t.DistinctKeys
		}
	}

	end := d.drainedAt
	tr.EndBasis = "consumer drained"
	if lastCommit != nil {
		tr.DrainedAfterCommit = d.drainedAt.Sub(*lastCommit).Seconds()
		if exp.rowPerLine || !d.busyAt.After(*lastCommit) {
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
	if err := r.latency(ctx, exp, d.receipts, spans, &res, &tr); err != nil {
		return res, tr, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return res, tr, fmt.Errorf("read consumer: %w", err)
	}
	res.Redelivered = uint64(info.NumRedelivered)
	r.account(&res, before, after)
	return res, tr, nil
}

// drained is how a run ended.
type drained struct {
	receipts []sent
	// drainedAt is when a poll first found the consumer drained; busyAt
	// is when the last poll that found it busy was sent. The drain
	// happened between the two.
	drainedAt, busyAt time.Time
}

// waitDrained waits until every receipt is in and the consumer has
// nothing pending and nothing unacknowledged, then checks every table
// holds the expected rows. It prints progress, and fails when a program
// exits, a sender fails, a table holds more rows than it could, or
// nothing moves for cfg.StallTimeout.
func (r *e2eRun) waitDrained(ctx context.Context, exp *expected, cons jetstream.Consumer, t0 time.Time, results <-chan sent) (drained, error) {
	b, want := r.b, exp.rows()
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
			} else if s.Err != nil {
				return d, s.Err
			} else {
				d.receipts = append(d.receipts, s)
			}
			continue
		case <-tick.C:
		}
		allIn := len(d.receipts) == b.cfg.Conns
		now := time.Now()
		if !allIn && now.Sub(lastCounted) < pollEvery {
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return d, fmt.Errorf("read consumer: %w", err)
		}
		drainedNow := allIn && info.NumPending == 0 && info.NumAckPending == 0
		if drainedNow {
			d.drainedAt = time.Now()
		} else if allIn {
			d.busyAt = now
		}
		if !drainedNow && now.Sub(lastCounted) < pollEvery {
			continue
		}
		lastCounted = now
		if err := exited(r.programs()); err != nil {
			return d, err
		}
		counts, got, err := r.countRows(ctx, exp)
		if err != nil {
			return d, err
		}
		for i, x := range exp.Tables {
			switch {
			case drainedNow && counts[i] != x.Rows:
				return d, fmt.Errorf("the consumer drained but %s holds %d rows; the spec makes %d (%s)", x.Table, counts[i], x.Rows, r.backlog(ctx))
			case counts[i] > x.Most:
				return d, fmt.Errorf("%s holds %d rows, more than the %d distinct keys the spec makes", x.Table, counts[i], x.Most)
			}
		}
		if uint64(got) != rows || info.AckFloor.Stream != acked {
			rows, acked, lastChange = uint64(got), info.AckFloor.Stream, now
		} else if now.Sub(lastChange) > b.cfg.StallTimeout {
			return d, fmt.Errorf("nothing landed or was acknowledged for %s (%d of %d rows; %d pending, %d unacknowledged; %s)",
				b.cfg.StallTimeout, got, want, info.NumPending, info.NumAckPending, r.backlog(ctx))
		}
		if drainedNow || now.Sub(lastShownAt) >= progressEvery {
			elapsed, last := now.Sub(t0).Seconds(), now.Sub(lastShownAt).Seconds()
			b.pr.step("  %5.1fs  %9s/%s rows (%3.0f%%)  %7s lines acked/s (last %.0fs: %s)  receipts %d/%d  %s",
				elapsed, thousands(got), thousands(want), 100*float64(got)/float64(max(want, 1)),
				thousands(int64(float64(acked)/elapsed)), last, thousands(int64(float64(acked-lastShownAcked)/last)),
				len(d.receipts), b.cfg.Conns, r.backlog(ctx))
			lastShownAcked, lastShownAt = acked, now
		}
		if drainedNow {
			return d, nil
		}
	}
}

// countRows returns the count(*) of each of exp's tables, in their
// order, and their sum.
func (r *e2eRun) countRows(ctx context.Context, exp *expected) ([]int64, int64, error) {
	counts := make([]int64, len(exp.Tables))
	dst := make([]any, len(counts))
	subs := make([]string, len(counts))
	for i, x := range exp.Tables {
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
// its received_at column when it has one, else by joining each row,
// through its key, to the gateway's read time of its line as the stream
// republished it. A row, in any table, whose key is not one the spec
// makes there fails the run.
func (r *e2eRun) latency(ctx context.Context, exp *expected, receipts []sent, spans []span, res *e2eResult, tr *typedResult) error {
	tr.Latency = "row commit time − gateway read time of its line (Jetline-Received-At, from a headers-only republish of the ingest stream, joined by key)"
	if exp.receivedAt != "" {
		tr.Latency = fmt.Sprintf("row commit time − %s (the gateway's read time, stored by the spec)", exp.receivedAt)
	}
	commits := make(map[string]time.Time, exp.Tables[0].Rows)
	var lat []float64
	for i, x := range exp.Tables {
		received := "NULL::timestamptz"
		if i == 0 && exp.receivedAt != "" {
			received = pgx.Identifier{exp.receivedAt}.Sanitize()
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
			if _, ok := x.keySet[key]; !ok && x.keySet != nil {
				return fmt.Errorf("%s holds a row with key %q, which the spec makes of no line", x.Table, strings.ReplaceAll(key, keySep, ", "))
			}
			if i == 0 && r.rc != nil {
				commits[key] = committed
			} else if i == 0 && readAt != nil {
				lat = append(lat, committed.Sub(*readAt).Seconds())
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
		if lat, err = joinLatency(seen, receipts, spans, exp, commits); err != nil {
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
func captureReceived(ctx context.Context, h *harness, source string) (rc *receivedCapture, err error) {
	rc = &receivedCapture{}
	defer func() {
		if err != nil {
			rc.close()
			err = fmt.Errorf("have stream %s republish headers: %w", topology.StreamName, err)
		}
	}()
	if rc.sub, err = h.nc.Subscribe(receivedPrefix+source, rc.add); err != nil {
		return nil, err
	}
	if err := rc.sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	if err := h.nc.FlushTimeout(readyTimeout); err != nil {
		return nil, err
	}
	st, err := h.js.Stream(ctx, topology.StreamName)
	if err != nil {
		return nil, err
	}
	cfg := st.CachedInfo().Config
	cfg.RePublish = &jetstream.RePublish{Source: topology.Subject(source), Destination: receivedPrefix + source, HeadersOnly: true}
	_, err = h.js.UpdateStream(ctx, cfg)
	return rc, err
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
		if bad != nil || len(seen) >= n || time.Now().After(deadline) {
			return seen, bad
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

// loneResult is what -latency found: how long after its line was written
// to the socket each row was visible in Postgres, on an idle pipeline.
type loneResult struct {
	Lines int `json:"lines"`
	// P50, P99 and Max are in seconds.
	P50 float64 `json:"p50_seconds"`
	P99 float64 `json:"p99_seconds"`
	Max float64 `json:"max_seconds"`
}

// lone sends the corpus over one connection a line at a time, each once
// the row of the one before is visible, and measures each line's wait.
func (r *e2eRun) lone(ctx context.Context) (loneResult, error) {
	b := r.b
	n := b.corpus.Len()
	snd, err := dialSenders(ctx, b, b.corpus.Split(1))
	if err != nil {
		return loneResult{}, err
	}
	defer snd.close()
	count := fmt.Sprintf("SELECT count(*) FROM %s", tableIdent(r.pl.Table).Sanitize())
	lat := make([]float64, 0, n)
	snd.each = func(i int, written time.Time) error {
		for {
			var got int64
			if err := r.db.QueryRow(ctx, count).Scan(&got); err != nil {
				return fmt.Errorf("count rows: %w", err)
			}
			if got > int64(i) {
				lat = append(lat, time.Since(written).Seconds())
				return nil
			}
			if time.Since(written) > b.cfg.StallTimeout {
				return fmt.Errorf("line %d has no row after %s", i+1, b.cfg.StallTimeout)
			}
			time.Sleep(lonePoll)
		}
	}
	b.pr.step("sending %d lines one at a time over one connection, each once the row of the one before is visible (counting rows every %s)", n, lonePoll)
	_, results := snd.start(ctx)
	if s := <-results; s.Err != nil {
		return loneResult{}, s.Err
	}
	lr := loneResult{Lines: n, P50: percentile(lat, 0.5), P99: percentile(lat, 0.99)}
	lr.Max = lat[len(lat)-1] // sorted by percentile
	return lr, nil
}

// backlog describes the lines waiting in the ingest stream.
func (r *e2eRun) backlog(ctx context.Context) string {
	info, err := r.ingest.Info(ctx)
	if err != nil {
		return "stream backlog unknown: " + err.Error()
	}
	return "stream backlog " + thousands(int64(info.State.Msgs))
}

// sample reads the CPU time used so far by the programs, Postgres and the
// bench.
func (r *e2eRun) sample() (usageSample, error) {
	return sampleUsage(r.programs(), r.b.h.pgDir)
}

// account fills res with the CPU each process used between before and
// after, and the CPU that went to work outside the run.
func (r *e2eRun) account(res *e2eResult, before, after usageSample) {
	res.WindowSeconds = after.at.Sub(before.at).Seconds()
	res.Processes = usage(before, after, r.programs())
	res.BusyPct, res.IOWaitPct = busy(before.machine, after.machine)
	ours := 0.0
	for _, p := range res.Processes {
		ours += p.Cores
	}
	res.OtherCores = max(0, res.BusyPct/100*float64(r.b.report.Machine.CPUs)-ours)
}

// poll calls check every 100 ms until it reports done, fails, one of the
// programs exits, or readyTimeout passes.
func poll(ctx context.Context, what string, programs func() []*child, check func() (bool, error)) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := exited(programs())
		done := false
		if err == nil {
			done, err = check()
		}
		switch {
		case err != nil:
			return fmt.Errorf("waiting for %s: %w", what, err)
		case done:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("waiting for %s: not done after %s", what, readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddrs returns n distinct 127.0.0.1 addresses nothing listens on
// right now: each is held until all are picked, so the kernel cannot hand
// out one port twice. Someone may take one before the program binds it;
// the program then fails to start and the run says so.
func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs, nil
}

// tableIdent returns table, "name" or "schema.name", as an identifier.
func tableIdent(table string) pgx.Identifier {
	return pgx.Identifier(strings.Split(table, "."))
}

// keyList returns the columns of key as SQL identifiers, each followed by
// suffix, separated by commas.
func keyList(key []string, suffix string) string {
	cols := make([]string, len(key))
	for i, k := range key {
		cols[i] = pgx.Identifier{k}.Sanitize() + suffix
	}
	return strings.Join(cols, ", ")
}
