package main

import (
	"context"
	"fmt"
	"net"
	"os"
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

// Timing of the end-to-end measurement.
const (
	// readyTimeout bounds waiting for the programs to come up.
	readyTimeout = time.Minute
	// pollEvery is how often landed rows are counted. The end is taken
	// from the commit timestamps, so polling only delays the report.
	pollEvery = 250 * time.Millisecond
	// progressEvery is how often progress is printed.
	progressEvery = 3 * time.Second
	// receiptGrace is how long receipts may lag the last row: they are
	// written once JetStream has acknowledged every line, which is before
	// the rows land, so only a broken gateway makes them wait.
	receiptGrace = 30 * time.Second
)

// pipeline is what the workers run and where its rows land. The e2e mode
// uses the raw landing; a typed-table mode supplies its own table, worker
// environment and distinct-count query.
type pipeline struct {
	// Name describes the pipeline in the report.
	Name string `json:"name"`
	// Source is the gateway listener the lines are sent to. Empty means
	// the default listener, whose lines land raw in Table (WORKER_TABLE);
	// otherwise a pipeline in WorkerEnv takes the source's lines to Table.
	Source string `json:"source,omitempty"`
	// Table is where rows land, "name" or "schema.name".
	Table string `json:"table"`
	// WorkerEnv is added to every worker's environment.
	WorkerEnv []string `json:"worker_env,omitempty"`
	// DistinctSQL counts the distinct source lines among the rows (for
	// tweets, distinct status ids), to check that no line landed twice
	// under two keys. Empty skips the check.
	DistinctSQL string `json:"-"`
}

// rawLanding is the workers' default pipeline: every line becomes one row
// of events (line_id, seq, source, received_at, payload jsonb).
var rawLanding = pipeline{
	Name:        "raw landing: events (line_id, seq, source, received_at, payload jsonb lz4)",
	Table:       "events",
	DistinctSQL: `SELECT count(DISTINCT payload->'id') FROM events`,
}

// e2eResult is what the end-to-end measurement found.
type e2eResult struct {
	Pipeline pipeline `json:"pipeline"`
	// Ingest runs from the first byte sent to the last receipt: the
	// gateway has every line durable in JetStream.
	Ingest rate `json:"ingest"`
	// EndToEnd runs from the first byte sent to the last row committed.
	EndToEnd rate `json:"end_to_end"`
	// LatencyP50 and LatencyP99 are percentiles, in seconds, of each
	// row's commit time minus the time the gateway read its line.
	LatencyP50 float64 `json:"latency_p50_seconds"`
	LatencyP99 float64 `json:"latency_p99_seconds"`
	// DistinctLines is the distinct-count of [pipeline.DistinctSQL], or
	// -1 when the pipeline has none.
	DistinctLines int64 `json:"distinct_lines"`
	// Redelivered counts lines JetStream delivered more than once
	// (AckWait expired or a batch was handed back).
	Redelivered uint64 `json:"redelivered"`
	// Window is the measured span the CPU figures cover.
	WindowSeconds float64 `json:"window_seconds"`
	// Processes is CPU and memory use during Window.
	Processes []procUsage `json:"processes"`
	// BusyPct and IOWaitPct are the machine's CPU busy and iowait shares
	// during Window, in percent of all cores.
	BusyPct   float64 `json:"machine_busy_pct"`
	IOWaitPct float64 `json:"machine_iowait_pct"`
	// OtherCores is the machine's busy time not used by the processes of
	// the run (other programs, and kernel work charged to no process),
	// in cores. Much above zero means the numbers are skewed low.
	OtherCores float64 `json:"other_cores"`
	// Frames is how many JetStream messages (frames of lines) the gateway
	// had acknowledged, from its /metrics; -1 when it exports no frame
	// counter.
	Frames int64 `json:"frames"`
}

// procUsage is one process's (or process group's) share of the run.
type procUsage struct {
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"`
	// CPUSeconds is user plus system time during the window; Cores is
	// that divided by the window (1.0 = one core busy throughout).
	CPUSeconds float64 `json:"cpu_seconds"`
	Cores      float64 `json:"cores"`
	// PeakRSS is VmHWM in bytes, sampled just before stopping; 0 when not
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
}

// runPrograms starts the workers and the gateway for pl, runs measure,
// and stops the programs. A measurement that returns a result gets the
// programs' peak RSS and the gateway's frames filled in, and goes into the
// report.
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
		if err := readPeakRSS(res.Processes); err != nil {
			return err
		}
		res.Frames = r.frames(ctx)
		b.report.setE2E(*res)
	}
	return r.stopPrograms()
}

// framesMetric counts the frames the gateway has had acknowledged, by
// source.
const framesMetric = "jetline_gateway_frames_published_total"

// frames returns the gateway's frames published so far, over all
// sources, or -1 when it exports no such counter.
func (r *e2eRun) frames(ctx context.Context) int64 {
	n, ok := scrapeSum(ctx, r.gatewayHealth, framesMetric)
	if !ok {
		return -1
	}
	return int64(n)
}

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

// stopPrograms fails if a program has exited on its own, and otherwise
// stops them all.
func (r *e2eRun) stopPrograms() error {
	if err := r.exited(); err != nil {
		return err
	}
	r.b.pr.step("stopping the gateway and the workers (SIGTERM)")
	all := append([]*child{r.gateway}, r.workers...)
	r.b.h.children = nil
	if err := stopChildren(all, childStopTimeout); err != nil {
		return fmt.Errorf("stop programs: %w", err)
	}
	return nil
}

// readPeakRSS fills in the peak RSS of the programs in procs. Peak RSS is
// a high-water mark: call it as late as possible, before stopping them.
func readPeakRSS(procs []procUsage) error {
	for i := range procs {
		if p := &procs[i]; p.PID != 0 && p.Name != benchProcName {
			rss, err := peakRSS(p.PID)
			if err != nil {
				return err
			}
			p.PeakRSS = rss
		}
	}
	return nil
}

// childEnv is the environment every program gets besides its own address
// and name.
func (r *e2eRun) childEnv() []string {
	h, cfg := r.b.h, r.b.cfg
	env := []string{
		"NATS_URL=" + h.nats.ClientURL(),
		"DATABASE_URL=" + h.pg.URL(),
		"LOG_FORMAT=json",
		"LOG_LEVEL=warn",
	}
	if r.pl.Source == "" {
		env = append(env, "WORKER_TABLE="+r.pl.Table)
	}
	if cfg.WorkerConcurrency > 0 {
		env = append(env, "WORKER_CONCURRENCY="+strconv.Itoa(cfg.WorkerConcurrency))
	}
	if cfg.BatchSize > 0 {
		env = append(env, "WORKER_BATCH_SIZE="+strconv.Itoa(cfg.BatchSize))
	}
	env = append(env, r.pl.WorkerEnv...)
	// Last, so that -env wins over the defaults above.
	return append(env, cfg.ChildEnv...)
}

// startPrograms starts the workers, waits until they are ready, then the
// gateway, and waits until it accepts connections.
func (r *e2eRun) startPrograms(ctx context.Context) error {
	h, cfg, pr := r.b.h, r.b.cfg, r.b.pr
	env := r.childEnv()
	var err error
	if r.db, err = pgx.Connect(ctx, h.pg.URL()); err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}

	// The first worker is waited for alone so that a worker that cannot
	// start fails the run before the others are started; the store's
	// advisory lock already lets workers started together create the table.
	pr.step("starting %d workers (%s)", cfg.Workers, h.binaries.Worker.Path)
	healthAddrs := make([]string, cfg.Workers)
	for i := range cfg.Workers {
		if healthAddrs[i], err = freeAddr(); err != nil {
			return err
		}
		name := fmt.Sprintf("worker-%d", i+1)
		c, err := startChild(name, h.binaries.Worker.Path, slices.Concat(env,
			[]string{"WORKER_HEALTH_ADDR=" + healthAddrs[i], "WORKER_INSTANCE=bench-" + name}), r.b.stderr)
		if err != nil {
			return err
		}
		h.children = append(h.children, c)
		r.workers = append(r.workers, c)
		if i == 0 || i == cfg.Workers-1 {
			if err := r.waitWorkers(ctx, healthAddrs[:i+1]); err != nil {
				return err
			}
		}
	}

	listen, err := freeAddr()
	if err != nil {
		return err
	}
	gwHealth, err := freeAddr()
	if err != nil {
		return err
	}
	listener := listen
	if r.pl.Source != "" {
		listener = r.pl.Source + "=" + listen
	}
	pr.step("starting the gateway on %s (%s)", listener, h.binaries.Gateway.Path)
	r.gateway, err = startChild("gateway", h.binaries.Gateway.Path, slices.Concat(env,
		[]string{"GATEWAY_LISTEN=" + listener, "GATEWAY_HEALTH_ADDR=" + gwHealth, "GATEWAY_INSTANCE=bench-gateway"}), r.b.stderr)
	if err != nil {
		return err
	}
	h.children = append(h.children, r.gateway)
	r.gatewayHealth = gwHealth
	if err := r.waitGateway(ctx, listen); err != nil {
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
	return poll(ctx, readyTimeout, "workers ready", func() (bool, error) {
		if err := r.exited(); err != nil {
			return false, err
		}
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

// waitGateway waits until the gateway accepts connections on addr. The
// probe connection sends nothing and gets an empty receipt.
func (r *e2eRun) waitGateway(ctx context.Context, addr string) error {
	return poll(ctx, readyTimeout, "gateway listening", func() (bool, error) {
		if err := r.exited(); err != nil {
			return false, err
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
}

// exited returns the error of a program that has exited, or nil.
func (r *e2eRun) exited() error {
	for _, c := range append([]*child{r.gateway}, r.workers...) {
		if c == nil {
			continue
		}
		select {
		case <-c.Done():
			return c.exitError()
		default:
		}
	}
	return nil
}

// measure sends the corpus and waits for every row, then reads the
// measurements from Postgres.
func (r *e2eRun) measure(ctx context.Context) (e2eResult, error) {
	b := r.b
	n := b.corpus.Len()
	spans := b.corpus.Split(b.cfg.Conns)
	snd, err := dialSenders(ctx, b, spans)
	if err != nil {
		return e2eResult{}, err
	}
	defer snd.close()

	before, err := r.sample()
	if err != nil {
		return e2eResult{}, err
	}
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	b.pr.step("sending %s lines (%s) over %d connections", thousands(int64(n)), mib(b.corpus.PayloadBytes()), len(spans))
	t0, results := snd.start(sendCtx)

	receipts, err := r.waitLanded(ctx, t0, results)
	if err != nil {
		return e2eResult{}, err
	}
	after, err := r.sample()
	if err != nil {
		return e2eResult{}, err
	}

	res := e2eResult{Pipeline: r.pl, DistinctLines: -1}
	lastReceipt := t0
	for _, s := range receipts {
		if s.At.After(lastReceipt) {
			lastReceipt = s.At
		}
	}
	res.Ingest = newRate(n, b.corpus.PayloadBytes(), lastReceipt.Sub(t0))

	var count int64
	var lastCommit time.Time
	err = r.db.QueryRow(ctx, fmt.Sprintf(`
		SELECT count(*), max(committed),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency)
		FROM (SELECT pg_xact_commit_timestamp(xmin) AS committed,
		             extract(epoch FROM pg_xact_commit_timestamp(xmin) - received_at) AS latency
		      FROM %s) AS r`, tableIdent(r.pl.Table).Sanitize())).
		Scan(&count, &lastCommit, &res.LatencyP50, &res.LatencyP99)
	if err != nil {
		return e2eResult{}, fmt.Errorf("read commit times: %w", err)
	}
	if count != int64(n) {
		return e2eResult{}, fmt.Errorf("%s holds %d rows, sent %d lines", r.pl.Table, count, n)
	}
	res.EndToEnd = newRate(n, b.corpus.PayloadBytes(), lastCommit.Sub(t0))

	if r.pl.DistinctSQL != "" {
		b.pr.step("checking every line landed once")
		if err := r.db.QueryRow(ctx, r.pl.DistinctSQL).Scan(&res.DistinctLines); err != nil {
			return e2eResult{}, fmt.Errorf("count distinct lines: %w", err)
		}
		if res.DistinctLines != int64(n) {
			return e2eResult{}, fmt.Errorf("%s holds %d rows but only %d distinct lines: some line landed twice", r.pl.Table, count, res.DistinctLines)
		}
	}
	cons, err := b.h.js.Consumer(ctx, topology.StreamName, topology.ConsumerName)
	if err != nil {
		return e2eResult{}, fmt.Errorf("find consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return e2eResult{}, fmt.Errorf("read consumer: %w", err)
	}
	res.Redelivered = uint64(info.NumRedelivered)
	r.account(&res, before, after)
	return res, nil
}

// lonePoll is how often -latency counts the rows while it waits for a
// lone line's row: it bounds how late a row is seen.
const lonePoll = time.Millisecond

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

// waitLanded polls the row count until every line has landed, printing
// progress, and collects the receipts. It fails when a program exits, a
// sender fails, or no row lands for cfg.StallTimeout.
func (r *e2eRun) waitLanded(ctx context.Context, t0 time.Time, results <-chan sent) ([]sent, error) {
	b := r.b
	n := int64(b.corpus.Len())
	count := fmt.Sprintf("SELECT count(*) FROM %s", tableIdent(r.pl.Table).Sanitize())
	var receipts []sent
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var landed, lastShown int64
	lastChange, lastShownAt := time.Now(), t0
	var landedAt time.Time
	for {
		if landed == n && len(receipts) == b.cfg.Conns {
			return receipts, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case s, ok := <-results:
			if !ok {
				results = nil
				continue
			}
			if s.Err != nil {
				return nil, s.Err
			}
			receipts = append(receipts, s)
			continue
		case <-tick.C:
		}
		if err := r.exited(); err != nil {
			return nil, err
		}
		var got int64
		if err := r.db.QueryRow(ctx, count).Scan(&got); err != nil {
			return nil, fmt.Errorf("count rows: %w", err)
		}
		now := time.Now()
		switch {
		case got > n:
			return nil, fmt.Errorf("%s holds %d rows, more than the %d lines sent", r.pl.Table, got, n)
		case got != landed:
			landed, lastChange = got, now
		case landed < n && now.Sub(lastChange) > b.cfg.StallTimeout:
			return nil, fmt.Errorf("no row landed for %s (%d of %d landed; %s)", b.cfg.StallTimeout, landed, n, r.backlog(ctx))
		}
		if landed == n && landedAt.IsZero() {
			landedAt = now
		}
		if !landedAt.IsZero() && now.Sub(landedAt) > receiptGrace {
			return nil, fmt.Errorf("every row landed but %d of %d receipts are missing after %s", b.cfg.Conns-len(receipts), b.cfg.Conns, receiptGrace)
		}
		if now.Sub(lastShownAt) >= progressEvery || landed == n {
			elapsed := now.Sub(t0).Seconds()
			b.pr.step("  %5.1fs  %9s/%s rows (%3.0f%%)  %7s rows/s (last %.0fs: %s)  receipts %d/%d  %s",
				elapsed, thousands(landed), thousands(n), 100*float64(landed)/float64(n),
				thousands(int64(float64(landed)/elapsed)), now.Sub(lastShownAt).Seconds(),
				thousands(int64(float64(landed-lastShown)/now.Sub(lastShownAt).Seconds())),
				len(receipts), b.cfg.Conns, r.backlog(ctx))
			lastShown, lastShownAt = landed, now
		}
	}
}

// backlog describes the lines waiting in the ingest stream.
func (r *e2eRun) backlog(ctx context.Context) string {
	info, err := r.ingest.Info(ctx)
	if err != nil {
		return "stream backlog unknown: " + err.Error()
	}
	return "stream backlog " + thousands(int64(info.State.Msgs))
}

// usageSample is the CPU time used so far by each program, Postgres and
// the bench itself (which hosts NATS and the senders), and the machine.
type usageSample struct {
	at      time.Time
	cpu     map[string]time.Duration
	machine machineTicks
}

// benchProcName names the bench's own process in the usage table.
const benchProcName = "bench (NATS + senders)"

func (r *e2eRun) sample() (usageSample, error) {
	s := usageSample{cpu: map[string]time.Duration{}}
	var err error
	if s.machine, err = readMachineTicks(); err != nil {
		return s, err
	}
	s.at = time.Now()
	for _, c := range append([]*child{r.gateway}, r.workers...) {
		if s.cpu[c.name], err = cpuTime(c.pid); err != nil {
			return s, err
		}
	}
	s.cpu["postgres"] = groupCPU(dirProcs(r.b.h.pgDir))
	if s.cpu[benchProcName], err = cpuTime(os.Getpid()); err != nil {
		return s, err
	}
	return s, nil
}

// account fills res with the CPU each process used between before and
// after, and the CPU that went to work outside the run.
func (r *e2eRun) account(res *e2eResult, before, after usageSample) {
	window := after.at.Sub(before.at)
	res.WindowSeconds = window.Seconds()
	res.Processes = r.usage(before, after, window)
	res.BusyPct, res.IOWaitPct = busy(before.machine, after.machine)
	ours := 0.0
	for _, p := range res.Processes {
		ours += p.Cores
	}
	res.OtherCores = max(0, res.BusyPct/100*float64(r.b.report.Machine.CPUs)-ours)
}

// usage turns two samples into the usage table, in a fixed order.
func (r *e2eRun) usage(before, after usageSample, window time.Duration) []procUsage {
	var out []procUsage
	add := func(name string, pid int) {
		d := after.cpu[name] - before.cpu[name]
		out = append(out, procUsage{Name: name, PID: pid, CPUSeconds: d.Seconds(), Cores: d.Seconds() / window.Seconds()})
	}
	add(r.gateway.name, r.gateway.pid)
	for _, w := range r.workers {
		add(w.name, w.pid)
	}
	add("postgres", 0)
	add(benchProcName, os.Getpid())
	return out
}

// poll calls check every 100 ms until it reports done, fails, or timeout
// passes.
func poll(ctx context.Context, timeout time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := check()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not done after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddr returns a 127.0.0.1 address nothing listens on right now.
// Someone may take it before the program binds it; the program then fails
// to start and the run says so.
func freeAddr() (string, error) {
	addrs, err := freeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// freeAddrs returns n distinct such addresses: each is held until all are
// picked, so the kernel cannot hand out one port twice.
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
