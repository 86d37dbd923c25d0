package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// Rows are counted every pollEvery; once every receipt is in, the consumer
// is asked every drainPoll whether it has drained, which bounds how late
// the end of a run whose last lines were filtered is seen. -latency counts
// rows every lonePoll while it waits for a lone line's row.
const (
	readyTimeout  = time.Minute
	pollEvery     = 250 * time.Millisecond
	drainPoll     = 20 * time.Millisecond
	progressEvery = 3 * time.Second
	lonePoll      = time.Millisecond
)

// framesMetric counts the frames the gateway has had acknowledged, by
// source; settleMetric is the workers' histogram of the time from the
// gateway reading a frame's first line to the frame settled.
const (
	framesMetric = "jetline_gateway_frames_published_total"
	settleMetric = "jetline_worker_settle_latency_seconds"
)

// e2eResult is what the end-to-end measurement found, into the raw
// landing or through a spec. Times are in seconds.
type e2eResult struct {
	// Expected is what the workers ran, what the corpus makes in each table
	// and what each held at the end.
	Expected *expected `json:"expected"`
	// Ingest runs from the first byte sent to the last receipt, EndToEnd to
	// EndBasis: "last commit", or "consumer drained" (the first poll that
	// found nothing pending, when the last lines were filtered).
	Ingest             rate    `json:"ingest"`
	EndToEnd           rate    `json:"end_to_end"`
	EndBasis           string  `json:"end_basis"`
	DrainedAfterCommit float64 `json:"drained_after_commit_seconds"`
	Rows               int64   `json:"rows"`
	RowsPerSec         float64 `json:"rows_per_sec"`
	// LatencyP50 and LatencyP99 are of the workers' settle latency
	// (settleMetric) over the LatencySamples frames they settled in the
	// run; Latency says how, or why not.
	LatencyP50     float64 `json:"latency_p50_seconds"`
	LatencyP99     float64 `json:"latency_p99_seconds"`
	LatencySamples int     `json:"latency_samples"`
	Latency        string  `json:"latency"`
	Redelivered    uint64  `json:"redelivered"`
	// Frames is the gateway's acknowledged frames, from its /metrics; -1
	// when it exports no frame counter.
	Frames int64 `json:"frames"`
	// The CPU figures cover WindowSeconds; OtherCores is the machine's busy
	// time not used by the run's processes: above zero skews the numbers low.
	WindowSeconds float64     `json:"window_seconds"`
	Processes     []procUsage `json:"processes"`
	BusyPct       float64     `json:"machine_busy_pct"`
	IOWaitPct     float64     `json:"machine_iowait_pct"`
	OtherCores    float64     `json:"other_cores"`
}

// loneResult is what -latency found: how long after its line was written to
// the socket each row was visible in Postgres, on an idle pipeline, in seconds.
type loneResult struct {
	Lines int     `json:"lines"`
	P50   float64 `json:"p50_seconds"`
	P99   float64 `json:"p99_seconds"`
	Max   float64 `json:"max_seconds"`
}

// e2eRun is one end-to-end measurement in progress: the programs running
// exp's pipeline, and the bench's connection to their Postgres.
type e2eRun struct {
	b             *bench
	exp           *expected
	gateway       *child
	gatewayHealth string
	workers       []*child
	workerHealth  []string
	db            *pgx.Conn
}

// runE2E is the e2e mode: the raw publish rate, then the same lines end to
// end into the raw landing and, on the idle programs after it so that it
// takes nothing from it, one bare COPY of them; or through a pipeline spec
// (-mode typed) into its tables, then with -against through that spec on
// programs of their own; with -latency, lone lines instead.
func runE2E(ctx context.Context, b *bench) (err error) {
	exp := rawExpected(b.corpus.Len())
	if b.cfg.typed() {
		if exp, err = loadSpec(b, b.cfg.Spec); err != nil {
			return err
		}
	} else if !b.cfg.Latency {
		b.pr.step("goal: %s", copyGoalText)
	}
	if !b.cfg.Latency {
		if err := measureRaw(ctx, b); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("end to end: %w", err)
		}
	}()
	r, err := startE2E(ctx, b, exp, "bench-gateway")
	defer r.close(ctx)
	if err != nil {
		return err
	}
	if b.cfg.Latency {
		if b.report.Lone, err = r.lone(ctx); err != nil {
			return err
		}
		return b.stopPrograms("the gateway and the workers")
	}
	if b.report.E2E, err = r.send(ctx); err != nil {
		return err
	}
	res := b.report.E2E
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
	if !b.cfg.typed() {
		if b.report.Copy, err = r.bareCopy(ctx); err != nil {
			return err
		}
	}
	if err := b.stopPrograms("the gateway and the workers"); err != nil || b.cfg.Against == "" {
		return err
	}
	// The -against run, for the ratio of the run's spec to it on the same
	// lines. Its gateway needs a name of its own, or the stream would take
	// its frames for duplicates of the first run's.
	if exp, err = loadSpec(b, b.cfg.Against); err != nil {
		return err
	}
	a, err := startE2E(ctx, b, exp, "bench-gateway-against")
	defer a.close(ctx)
	if err == nil {
		b.report.Against, err = a.send(ctx)
	}
	if err != nil {
		return err
	}
	return b.stopPrograms("the -against run's gateway and workers")
}

// close closes what the run holds besides its programs.
func (r *e2eRun) close(ctx context.Context) {
	if r.db != nil {
		r.db.Close(context.WithoutCancel(ctx))
	}
}

// scrapeSum returns the sum of metric name's series, whatever their labels,
// on the /metrics at addr, and false when it serves none or cannot be read.
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

// childEnv is every program's environment: the servers, then extra, then
// -env, last so it wins.
func (b *bench) childEnv(extra ...string) []string {
	env := []string{"NATS_URL=" + b.h.nats.ClientURL(), "DATABASE_URL=" + b.h.pg.URL(), "LOG_FORMAT=json", "LOG_LEVEL=warn"}
	return slices.Concat(env, extra, b.cfg.ChildEnv)
}

// startE2E starts, after [settle], the workers for exp and waits until they
// are ready (NATS and Postgres reachable, the consumer and the first table
// there), then the gateway named instance, and waits until it accepts
// connections. The first worker is waited for alone so that one that cannot
// start fails the run before the others start; the store's advisory lock
// lets the others, started together, create the table. The run it returns
// is to be closed, even with an error.
func startE2E(ctx context.Context, b *bench, exp *expected, instance string) (r *e2eRun, err error) {
	settle()
	r = &e2eRun{b: b, exp: exp}
	h, cfg, first := b.h, b.cfg, exp.Tables[0].Table
	pipeline := "WORKER_TABLE=" + first
	if exp.Spec != "" {
		pipeline = "WORKER_PIPELINES=" + exp.Spec
	}
	addrs, err := freeAddrs(cfg.Workers + 2)
	if err != nil {
		return r, err
	}
	r.workerHealth = addrs[:cfg.Workers]
	if r.db, err = pgx.Connect(ctx, h.pg.URL()); err != nil {
		return r, fmt.Errorf("connect to postgres: %w", err)
	}
	b.pr.step("starting %d workers (%s)", cfg.Workers, h.binaries.Worker.Path)
	for i := range cfg.Workers {
		name := fmt.Sprintf("worker-%d", i+1)
		c, err := b.startChild(name, h.binaries.Worker.Path, b.childEnv(pipeline, "WORKER_HEALTH_ADDR="+addrs[i], "WORKER_INSTANCE=bench-"+name))
		if err != nil {
			return r, err
		}
		r.workers = append(r.workers, c)
		if i > 0 && i < cfg.Workers-1 {
			continue
		}
		if err := poll(ctx, "workers ready", r.programs, func() (bool, error) {
			for _, addr := range addrs[:i+1] {
				if health.Probe("http://"+addr+"/readyz", time.Second) != nil {
					return false, nil
				}
			}
			if _, err := h.js.Consumer(ctx, topology.StreamName, topology.ConsumerName); err != nil {
				return false, nil
			}
			var exists bool
			if err := r.db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", first).Scan(&exists); err != nil {
				return false, fmt.Errorf("check table %s: %w", first, err)
			}
			return exists, nil
		}); err != nil {
			return r, err
		}
	}
	listen, listener := addrs[cfg.Workers], addrs[cfg.Workers]
	if exp.Spec != "" {
		listener = exp.Source + "=" + listen // the source's own listener
	}
	r.gatewayHealth = addrs[cfg.Workers+1]
	b.pr.step("starting the gateway on %s (%s)", listener, h.binaries.Gateway.Path)
	// The run opens a few connections: a cap of 1,000 keeps the gateway's
	// warning that its default of 50,000 exceeds the open-files limit
	// (20,000 on some machines) out of the report.
	if r.gateway, err = b.startChild("gateway", h.binaries.Gateway.Path, b.childEnv(pipeline, "GATEWAY_MAX_CONNECTIONS=1000",
		"GATEWAY_LISTEN="+listener, "GATEWAY_HEALTH_ADDR="+r.gatewayHealth, "GATEWAY_INSTANCE="+instance)); err != nil {
		return r, err
	}
	b.gatewayAddr = listen
	// The probe connection sends nothing and gets an empty receipt.
	return r, poll(ctx, "gateway listening", r.programs, func() (bool, error) {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
}

// send sends the corpus, waits until the consumer has drained, checks every
// table holds the rows the spec makes, each once, and reads the rates, the
// latency and the CPU used.
func (r *e2eRun) send(ctx context.Context) (*e2eResult, error) {
	b, exp, n, bytes := r.b, r.exp, r.b.corpus.Len(), r.b.corpus.PayloadBytes()
	res := &e2eResult{Expected: exp}
	spans := b.corpus.Split(b.cfg.Conns)
	snd, err := dialSenders(ctx, b, spans)
	if err != nil {
		return nil, err
	}
	defer snd.close()
	cons, err := b.h.js.Consumer(ctx, topology.StreamName, topology.ConsumerName)
	if err != nil {
		return nil, fmt.Errorf("find consumer: %w", err)
	}
	settledBefore, err := r.settleBuckets(ctx)
	if err != nil {
		return nil, err
	}
	before, err := sampleUsage(r.programs(), b.h.pg)
	if err != nil {
		return nil, err
	}
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	b.pr.step("sending %s lines (%s) over %d connections", thousands(int64(n)), mib(bytes), len(spans))
	t0, results := snd.start(sendCtx)
	d, err := r.waitDrained(ctx, cons, t0, results)
	if err != nil {
		return nil, err
	}
	after, err := sampleUsage(r.programs(), b.h.pg)
	if err != nil {
		return nil, err
	}
	lastReceipt := t0
	for _, s := range d.receipts {
		if s.At.After(lastReceipt) {
			lastReceipt = s.At
		}
	}
	res.Ingest = newRate(n, bytes, lastReceipt.Sub(t0))

	b.pr.step("checking every kept line landed once")
	var lastCommit *time.Time
	for i := range exp.Tables {
		x := &exp.Tables[i]
		var last *time.Time
		if err := r.db.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(DISTINCT %s), max(pg_xact_commit_timestamp(xmin)) FROM %s`,
			x.distinctSQL(), x.ident())).Scan(&x.Rows, &x.DistinctKeys, &last); err != nil {
			return nil, fmt.Errorf("read commit times of %s: %w", x.Table, err)
		}
		// countRows has checked the rows at the drain.
		if x.DistinctKeys != x.Want {
			return nil, fmt.Errorf("%s holds %d rows but only %d distinct %s: some line landed twice", x.Table, x.Rows, x.DistinctKeys, x.distinctSQL())
		}
		if last != nil && (lastCommit == nil || last.After(*lastCommit)) {
			lastCommit = last
		}
		res.Rows += x.Rows
	}
	end := d.drainedAt
	res.EndBasis = "consumer drained"
	if lastCommit != nil {
		res.DrainedAfterCommit = d.drainedAt.Sub(*lastCommit).Seconds()
		// A last commit before the last receipt leaves the lines sent
		// after it, all filtered, to end the run.
		if exp.rowPerLine || !d.busyAt.After(*lastCommit) && !lastCommit.Before(lastReceipt) {
			end, res.EndBasis = *lastCommit, "last commit"
		}
	}
	res.EndToEnd = newRate(n, bytes, end.Sub(t0))
	if s := res.EndToEnd.Seconds; s > 0 {
		res.RowsPerSec = float64(res.Rows) / s
		for i := range exp.Tables {
			exp.Tables[i].RowsPerSec = float64(exp.Tables[i].Rows) / s
		}
	}
	if err := r.checkKeys(ctx); err != nil {
		return nil, err
	}
	settledAfter, err := r.settleBuckets(ctx)
	if err != nil {
		return nil, err
	}
	res.settleLatency(settledBefore, settledAfter)
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read consumer: %w", err)
	}
	res.Redelivered = uint64(info.NumRedelivered)
	res.WindowSeconds = after.at.Sub(before.at).Seconds()
	res.Processes = usage(before, after, r.programs())
	res.BusyPct, res.IOWaitPct = busy(before.machine, after.machine)
	res.OtherCores = res.BusyPct / 100 * float64(b.report.Machine.CPUs)
	for _, p := range res.Processes {
		res.OtherCores -= p.Cores
	}
	res.OtherCores = max(0, res.OtherCores)
	return res, nil
}

// drained is how a run ended: the receipts, when a poll first found the
// consumer drained, and when the last poll that found it busy was sent.
type drained struct {
	receipts          []sent
	drainedAt, busyAt time.Time
}

// waitDrained waits until every receipt is in and the consumer has nothing
// pending or unacknowledged, printing progress. It fails when a program
// exits, a sender fails, [countRows] does, or nothing moves for [stallTimeout].
func (r *e2eRun) waitDrained(ctx context.Context, cons jetstream.Consumer, t0 time.Time, results <-chan sent) (drained, error) {
	b, want := r.b, r.exp.rows()
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
		allIn, now := len(d.receipts) == b.cfg.Conns, time.Now()
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
		got, err := r.countRows(ctx, drainedNow, info)
		if err != nil {
			return d, err
		}
		if uint64(got) != rows || info.AckFloor.Stream != acked {
			rows, acked, lastChange = uint64(got), info.AckFloor.Stream, now
		} else if now.Sub(lastChange) > stallTimeout {
			return d, fmt.Errorf("nothing landed or was acknowledged for %s (%d of %d rows; %d pending, %d unacknowledged)",
				stallTimeout, got, want, info.NumPending, info.NumAckPending)
		}
		if drainedNow || now.Sub(lastShownAt) >= progressEvery {
			elapsed, last := now.Sub(t0).Seconds(), now.Sub(lastShownAt).Seconds()
			b.pr.step("  %5.1fs  %9s/%s rows (%3.0f%%)  %7s messages acked/s (last %.0fs: %s)  receipts %d/%d  %s pending",
				elapsed, thousands(got), thousands(want), 100*float64(got)/float64(max(want, 1)),
				thousands(int64(float64(acked)/elapsed)), last, thousands(int64(float64(acked-lastShownAcked)/last)),
				len(d.receipts), b.cfg.Conns, thousands(int64(info.NumPending+uint64(info.NumAckPending))))
			lastShownAcked, lastShownAt = acked, now
		}
		if drainedNow {
			return d, nil
		}
	}
}

// countRows returns the rows of all of exp's tables together. Until the
// consumer has drained it reads Postgres's n_live_tup (partitions summed, up
// to a second behind): a count(*) every [pollEvery] would charge scans of
// millions of rows to the run's Postgres. Once drained it counts exactly,
// and fails when a table holds more rows than the spec makes keys, or other
// than the rows it makes.
func (r *e2eRun) countRows(ctx context.Context, drained bool, info *jetstream.ConsumerInfo) (int64, error) {
	tables := r.exp.Tables
	counts, dst, subs := make([]int64, len(tables)), make([]any, len(tables)), make([]string, len(tables))
	var args []any
	for i, x := range tables {
		dst[i] = &counts[i]
		if drained {
			subs[i] = "(SELECT count(*) FROM " + x.ident() + ")"
			continue
		}
		args = append(args, x.ident())
		subs[i] = fmt.Sprintf("(SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables WHERE relid = $%[1]d::regclass OR relid IN (SELECT relid FROM pg_partition_tree($%[1]d::regclass)))", i+1)
	}
	if err := r.db.QueryRow(ctx, "SELECT "+strings.Join(subs, ", "), args...).Scan(dst...); err != nil {
		return 0, fmt.Errorf("count rows: %w", err)
	}
	var sum int64
	for i, x := range tables {
		switch {
		case !drained: // estimates: checked once drained
		case counts[i] > x.Most:
			return 0, fmt.Errorf("%s holds %d rows, more than the %d distinct keys the spec makes", x.Table, counts[i], x.Most)
		case counts[i] != x.Want:
			return 0, fmt.Errorf("the consumer drained but %s holds %d rows; the spec makes %d (%d messages delivered more than once)", x.Table, counts[i], x.Want, info.NumRedelivered)
		}
		sum += counts[i]
	}
	return sum, nil
}

// checkKeys fails the run if a table, any of them, holds a row whose key
// the spec makes of no line.
func (r *e2eRun) checkKeys(ctx context.Context) error {
	for _, x := range r.exp.Tables {
		if x.keySet == nil {
			continue
		}
		rows, err := r.db.Query(ctx, fmt.Sprintf(`SELECT concat_ws(E'\x1f', %s) FROM %s`, keyList(x.Key, "::text"), x.ident()))
		if err != nil {
			return fmt.Errorf("read keys of %s: %w", x.Table, err)
		}
		var key string
		if _, err = pgx.ForEachRow(rows, []any{&key}, func() error {
			if _, ok := x.keySet[key]; !ok {
				return fmt.Errorf("%s holds a row with key %q, which the spec makes of no line", x.Table, strings.ReplaceAll(key, keySep, ", "))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("read keys of %s: %w", x.Table, err)
		}
	}
	return nil
}

// settleBuckets returns the cumulative counts of the workers' settleMetric
// buckets, summed over the workers, by upper bound.
func (r *e2eRun) settleBuckets(ctx context.Context) (map[float64]float64, error) {
	buckets := map[float64]float64{}
	prefix := settleMetric + `_bucket{le="`
	for _, addr := range r.workerHealth {
		samples, err := metrics.Scrape(ctx, "http://"+addr+"/metrics")
		if err != nil {
			return nil, fmt.Errorf("read the settle latency of a worker: %w", err)
		}
		for series, v := range samples {
			if le, ok := strings.CutPrefix(series, prefix); ok {
				bound, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", series, err)
				}
				buckets[bound] += v
			}
		}
	}
	return buckets, nil
}

// settleLatency fills in the settle latency's p50 and p99 over the frames
// settled between two [e2eRun.settleBuckets], each interpolated within
// its bucket as Prometheus's histogram_quantile does.
func (e *e2eResult) settleLatency(before, after map[float64]float64) {
	bounds := slices.Sorted(maps.Keys(after))
	if len(bounds) == 0 {
		e.Latency = "not available: the workers export no " + settleMetric
		return
	}
	total := after[math.Inf(1)] - before[math.Inf(1)]
	if e.LatencySamples = int(total); total == 0 {
		e.Latency = "not available: the workers settled no frame"
		return
	}
	e.Latency = settleMetric + ": frame settled − gateway read time of its first line, over every frame"
	quantile := func(q float64) float64 {
		lower, below := 0.0, 0.0
		for _, upper := range bounds {
			n := after[upper] - before[upper]
			if n >= q*total {
				if math.IsInf(upper, 1) {
					return lower
				}
				return lower + (upper-lower)*(q*total-below)/(n-below)
			}
			lower, below = upper, n
		}
		return lower
	}
	e.LatencyP50, e.LatencyP99 = quantile(0.5), quantile(0.99)
}

// bareCopyTable is the table the bare COPY fills, stored like the raw
// landing's, so that the two differ only in what comes before Postgres.
const bareCopyTable = "bench_bare_copy"

// bareCopy COPYs the corpus into a fresh [bareCopyTable] with pgx's binary
// CopyFrom, as the workers do, and times it to its commit, with Postgres's
// CPU time. It checkpoints first, so that, like the end-to-end run before
// it, the COPY starts with no WAL pending a checkpoint.
func (r *e2eRun) bareCopy(ctx context.Context) (*rate, error) {
	b, c := r.b, r.b.corpus
	if _, err := r.db.Exec(ctx, "CREATE TABLE "+bareCopyTable+" (line_id text PRIMARY KEY, payload jsonb COMPRESSION lz4 NOT NULL)"); err != nil {
		return nil, fmt.Errorf("create %s: %w", bareCopyTable, err)
	}
	if _, err := r.db.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, fmt.Errorf("checkpoint before the bare copy: %w", err)
	}
	settle()
	b.pr.step("bare COPY: %s lines (%s) as jsonb into %s over one connection", thousands(int64(c.Len())), mib(c.PayloadBytes()), bareCopyTable)
	pgBefore := postgresCPU(b.h.pg)
	row := make([]any, 2)
	start := time.Now()
	n, err := r.db.CopyFrom(ctx, pgx.Identifier{bareCopyTable}, []string{"line_id", "payload"},
		pgx.CopyFromSlice(c.Len(), func(i int) ([]any, error) {
			row[0], row[1] = "bench-copy."+strconv.Itoa(i+1), c.Line(i)
			return row, nil
		}))
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("bare copy into %s: %w", bareCopyTable, err)
	}
	if n != int64(c.Len()) {
		return nil, fmt.Errorf("bare copy stored %d rows of %d lines", n, c.Len())
	}
	res := newRate(c.Len(), c.PayloadBytes(), elapsed)
	res.CPUSeconds = (postgresCPU(b.h.pg) - pgBefore).Seconds()
	b.pr.step("bare COPY: %s lines/s, %.1f MiB/s in %.1fs", thousands(int64(res.LinesPerSec)), res.MiBPerSec, res.Seconds)
	return &res, nil
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

// lone sends the corpus over one connection a line at a time, each once the
// row of the one before is visible, and measures each line's wait.
func (r *e2eRun) lone(ctx context.Context) (*loneResult, error) {
	b, n := r.b, r.b.corpus.Len()
	snd, err := dialSenders(ctx, b, b.corpus.Split(1))
	if err != nil {
		return nil, err
	}
	defer snd.close()
	lat := make([]float64, 0, n)
	snd.each = func(i int, written time.Time) error {
		for time.Since(written) < stallTimeout {
			var got int64
			if err := r.db.QueryRow(ctx, "SELECT count(*) FROM "+r.exp.Tables[0].ident()).Scan(&got); err != nil {
				return fmt.Errorf("count rows: %w", err)
			}
			if got > int64(i) {
				lat = append(lat, time.Since(written).Seconds())
				return nil
			}
			time.Sleep(lonePoll)
		}
		return fmt.Errorf("line %d has no row after %s", i+1, stallTimeout)
	}
	b.pr.step("sending %d lines one at a time over one connection, each once the row of the one before is visible (counting rows every %s)", n, lonePoll)
	_, results := snd.start(ctx)
	if s := <-results; s.Err != nil {
		return nil, s.Err
	}
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99) // sorts lat
	return &loneResult{Lines: n, P50: p50, P99: p99, Max: lat[len(lat)-1]}, nil
}

// poll calls check every 100 ms until it reports done, fails, one of the
// programs exits, or readyTimeout passes.
func poll(ctx context.Context, what string, programs func() []*child, check func() (bool, error)) error {
	for deadline := time.Now().Add(readyTimeout); ; {
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

// freeAddrs returns n distinct 127.0.0.1 addresses nothing listens on right
// now, each held until all are picked so that no port comes twice. One taken
// before its program binds it makes the program fail to start.
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
