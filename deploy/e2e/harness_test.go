package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/privatepg"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// Settings shared by every test.
const (
	// ackWait is the workers' WORKER_ACK_WAIT: short, so the lines of a
	// killed worker are redelivered within seconds.
	ackWait = 4 * time.Second
	// batchBytes is the workers' WORKER_BATCH_BYTES, a quarter of the
	// default, as ackWait is far below the default 30s: a batch must be
	// stored, poison rows isolated and all, within three quarters of
	// ackWait on a loaded machine, and a default batch of small lines
	// holds some 13,000 of them.
	batchBytes = 1 << 20
	// workerConcurrency is each worker's WORKER_CONCURRENCY.
	workerConcurrency = 2
	// defaultStreamMaxBytes is INGEST_MAX_BYTES unless a test needs a
	// small stream: room for everything a test sends.
	defaultStreamMaxBytes = 1 << 30
	// readyTimeout bounds waiting for a program to become ready.
	readyTimeout = 60 * time.Second
	// pollInterval is how often waits poll.
	pollInterval = 50 * time.Millisecond
)

// bundle is one test's world: its own NATS server and database, the
// programs it started, and clients to look at both ends.
type bundle struct {
	nats           *embeddednats.Server
	natsURL        string
	dsn            string
	streamMaxBytes int64
	js             jetstream.JetStream
	db             *pgxpool.Pool
	// pg is the test's own Postgres server, if setupOptions asked for
	// one; nil when the test uses the server all tests share.
	pg *privatepg.Server
	// gatewayEnv is added to every gateway's environment.
	gatewayEnv map[string]string

	mu    sync.Mutex
	procs []*proc
	nextW int // workers started, for their names
}

type setupOptions struct {
	// streamMaxBytes is INGEST_MAX_BYTES; 0 means defaultStreamMaxBytes.
	streamMaxBytes int64
	// ownPostgres gives the test a Postgres server of its own, which it
	// may stop or kill without harming the other tests.
	ownPostgres bool
	// gatewayEnv is added to the gateway's environment.
	gatewayEnv map[string]string
}

// setup starts an embedded NATS server, creates a database on the private
// Postgres and connects to both; the test starts the programs it needs.
// When the test ends, the programs are stopped and checked (see
// [bundle.stopAll]). It skips the test with -short.
func setup(t *testing.T, opts setupOptions) *bundle {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	srv := testenv.NATS(t)
	b := &bundle{nats: srv, natsURL: srv.ClientURL(), streamMaxBytes: opts.streamMaxBytes, gatewayEnv: opts.gatewayEnv}
	if opts.ownPostgres {
		b.pg = ownPostgres(t)
		b.dsn = b.pg.URL()
	} else {
		b.dsn = testenv.Postgres(t)
	}
	if b.streamMaxBytes == 0 {
		b.streamMaxBytes = defaultStreamMaxBytes
	}
	// Cleanups run last-registered first: the programs stop before the
	// NATS server does.
	t.Cleanup(func() { b.stopAll(t) })

	nc, err := nats.Connect(b.natsURL)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	if b.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if b.db, err = pgxpool.New(context.Background(), b.dsn); err != nil {
		t.Fatalf("open database pool: %v", err)
	}
	t.Cleanup(b.db.Close)
	return b
}

// stopAll stops every program at once and checks how each ended; if the
// test failed, it copies their standard error to its log.
func (b *bundle) stopAll(t *testing.T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range b.procs {
		wg.Go(func() {
			if err := p.proc.Terminate(context.Background(), stopTimeout); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, p := range b.procs {
		p.check(t)
	}
	if !t.Failed() {
		return
	}
	for _, p := range b.procs {
		t.Logf("---- %s (pid %d) stderr:\n%s", p.name, p.pid(), tail(p.stderr.String(), 64<<10))
	}
}

// env returns the environment every program gets, with extra added.
func (b *bundle) env(extra map[string]string) map[string]string {
	env := map[string]string{
		"NATS_URL":         b.natsURL,
		"INGEST_MAX_BYTES": strconv.FormatInt(b.streamMaxBytes, 10),
		"LOG_FORMAT":       "json",
		"LOG_LEVEL":        "warn",
	}
	maps.Copy(env, extra)
	return env
}

func (b *bundle) track(p *proc) {
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
}

// checkAlive fails the test if a program it did not end has exited.
func (b *bundle) checkAlive(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.procs {
		if !p.dismissed.Load() && p.exited() {
			t.Fatalf("%v", p.exitErr())
		}
	}
}

// startReady starts a program and waits until ready says it is ready. The
// environment, from makeEnv, names free ports; one may be taken by someone
// else before the program binds it, and then the program exits at once and
// is started again with new ports.
func (b *bundle) startReady(t *testing.T, name, path string, makeEnv func() map[string]string, ready func(*proc) error) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := startProc(t, name, path, b.env(makeEnv()))
		b.track(p)
		err := ready(p)
		if err == nil {
			return p
		}
		if p.lostPortRace() && attempt < 3 {
			p.dismissed.Store(true)
			continue
		}
		t.Fatalf("%s not ready: %v", name, err)
	}
}

// pollReady calls probe until it succeeds, p exits or readyTimeout passes.
func pollReady(p *proc, probe func() error) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := probe()
		if err == nil {
			return nil
		}
		if p.exited() {
			return p.exitErr()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not ready after %s: %w", readyTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// gatewayProc is a running gateway program.
type gatewayProc struct {
	*proc
	// addrs maps each listener's source to its address.
	addrs map[string]string
	// metricsURL is its /metrics.
	metricsURL string
}

// published returns the lines and the frames the gateway has had
// acknowledged by JetStream since it started, each frame once.
func (g *gatewayProc) published(t *testing.T) (lines, frames uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := metrics.Scrape(ctx, g.metricsURL)
	if err != nil {
		t.Fatalf("scrape the gateway: %v", err)
	}
	for series, v := range s {
		switch {
		case strings.HasPrefix(series, gateway.MetricLinesPublished+"{"):
			lines += uint64(v)
		case strings.HasPrefix(series, gateway.MetricFramesPublished+"{"):
			frames += uint64(v)
		}
	}
	return lines, frames
}

// startGateway starts a gateway listening on a free loopback port for each
// of sources (topology.DefaultSource is the unnamed listener), and waits
// until every listener accepts connections. The probe connections send
// nothing; the gateway answers each with an empty receipt.
func (b *bundle) startGateway(t *testing.T, sources ...string) *gatewayProc {
	t.Helper()
	if len(sources) == 0 {
		sources = []string{topology.DefaultSource}
	}
	g := &gatewayProc{}
	makeEnv := func() map[string]string {
		g.addrs = map[string]string{}
		var listen []string
		for _, src := range sources {
			addr := testenv.FreeAddr(t)
			g.addrs[src] = addr
			if src == topology.DefaultSource {
				listen = append(listen, addr)
			} else {
				listen = append(listen, src+"="+addr)
			}
		}
		healthAddr := testenv.FreeAddr(t)
		g.metricsURL = "http://" + healthAddr + "/metrics"
		env := map[string]string{
			"GATEWAY_LISTEN":           strings.Join(listen, ","),
			"GATEWAY_HEALTH_ADDR":      healthAddr,
			"GATEWAY_SHUTDOWN_TIMEOUT": "10s",
		}
		maps.Copy(env, b.gatewayEnv)
		return env
	}
	g.proc = b.startReady(t, "gateway", programs.gateway, makeEnv, func(p *proc) error {
		for _, addr := range g.addrs {
			err := pollReady(p, func() error {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return g
}

// startWorkers starts n worker processes, with extra added to their
// environment, waits until each answers its /readyz (connected to NATS and
// Postgres), then until the events table and the shared consumer exist, so
// the test may query both.
func (b *bundle) startWorkers(t *testing.T, n int, extra map[string]string) []*proc {
	t.Helper()
	var ws []*proc
	for range n {
		b.mu.Lock()
		b.nextW++
		name := fmt.Sprintf("worker-%d", b.nextW)
		b.mu.Unlock()
		var healthAddr string
		makeEnv := func() map[string]string {
			healthAddr = testenv.FreeAddr(t)
			env := map[string]string{
				"DATABASE_URL":            b.dsn,
				"WORKER_HEALTH_ADDR":      healthAddr,
				"WORKER_INSTANCE":         name,
				"WORKER_ACK_WAIT":         ackWait.String(),
				"WORKER_BATCH_BYTES":      strconv.Itoa(batchBytes),
				"WORKER_CONCURRENCY":      strconv.Itoa(workerConcurrency),
				"WORKER_SHUTDOWN_TIMEOUT": "10s",
			}
			maps.Copy(env, extra)
			return env
		}
		w := b.startReady(t, name, programs.worker, makeEnv, func(p *proc) error {
			return pollReady(p, func() error { return health.Probe("http://"+healthAddr+"/readyz", time.Second) })
		})
		w.readyURL = "http://" + healthAddr + "/readyz"
		ws = append(ws, w)
	}
	b.waitFor(t, readyTimeout, "the workers to create the events table and the consumer", func() (bool, string) {
		var table *string
		if err := b.db.QueryRow(t.Context(), "SELECT to_regclass('events')::text").Scan(&table); err != nil {
			t.Fatalf("look for the events table: %v", err)
		}
		if table == nil {
			return false, "no events table"
		}
		if _, err := b.js.Consumer(t.Context(), topology.StreamName, topology.ConsumerName); err != nil {
			return false, "consumer: " + err.Error()
		}
		return true, ""
	})
	return ws
}

// waitFor polls cond until it holds, failing the test after timeout (with
// cond's last word on why not) or as soon as a program dies.
func (b *bundle) waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		b.checkAlive(t)
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(pollInterval)
	}
}

// waitDrained waits until the workers have stored and acknowledged every
// line: the stream is empty and the consumer has nothing pending or
// awaiting acknowledgement. It returns the consumer's final state.
func (b *bundle) waitDrained(t *testing.T, timeout time.Duration) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	b.waitFor(t, timeout, "the workers to drain the stream", func() (bool, string) {
		ci, err := b.consumerInfo(t)
		if err != nil {
			return false, err.Error()
		}
		msgs := b.streamState(t).Msgs
		info = ci
		why := fmt.Sprintf("stream holds %d messages; consumer has %d pending, %d awaiting ack", msgs, ci.NumPending, ci.NumAckPending)
		return msgs == 0 && ci.NumPending == 0 && ci.NumAckPending == 0, why
	})
	return info
}

func (b *bundle) consumerInfo(t *testing.T) (*jetstream.ConsumerInfo, error) {
	t.Helper()
	c, err := b.js.Consumer(t.Context(), topology.StreamName, topology.ConsumerName)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", topology.ConsumerName, err)
	}
	return c.Info(t.Context())
}

func (b *bundle) streamState(t *testing.T) jetstream.StreamState {
	t.Helper()
	s, err := b.js.Stream(t.Context(), topology.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", topology.StreamName, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s info: %v", topology.StreamName, err)
	}
	return info.State
}

// rowCount returns the number of rows in events (0 before it exists).
// slowInserts makes every statement that inserts into table (the workers
// have created it) take at least d longer, as a loaded database would.
func (b *bundle) slowInserts(t *testing.T, table string, d time.Duration) {
	t.Helper()
	_, err := b.db.Exec(t.Context(), fmt.Sprintf(`
CREATE FUNCTION e2e_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(%g); RETURN NULL; END $$;
CREATE TRIGGER e2e_slow AFTER INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION e2e_slow();`,
		d.Seconds(), pgx.Identifier{table}.Sanitize()))
	if err != nil {
		t.Fatalf("slow inserts into %s: %v", table, err)
	}
}

func (b *bundle) rowCount(t *testing.T) int {
	t.Helper()
	var n int
	err := b.db.QueryRow(t.Context(), "SELECT count(*) FROM events").Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return 0
	}
	if err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

// queryIDs returns the source of every row by its payload's id, and the
// ids found on more than one row.
func (b *bundle) queryIDs(t *testing.T) (sources map[string]string, dups []string) {
	t.Helper()
	rows, err := b.db.Query(t.Context(), "SELECT payload->>'id', source FROM events")
	if err != nil {
		t.Fatalf("query rows: %v", err)
	}
	defer rows.Close()
	sources = map[string]string{}
	for rows.Next() {
		var id *string
		var source string
		if err := rows.Scan(&id, &source); err != nil {
			t.Fatalf("scan row: %v", err)
		}
		if id == nil {
			t.Errorf("a row has no id: the payload is not one of the lines sent")
			continue
		}
		if _, ok := sources[*id]; ok {
			dups = append(dups, *id)
		}
		sources[*id] = source
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read rows: %v", err)
	}
	return sources, dups
}

// checkRows checks that events holds exactly one row per id of want, with
// the source want gives, and no other row.
func (b *bundle) checkRows(t *testing.T, want map[string]string) {
	t.Helper()
	var total, distinct int
	if err := b.db.QueryRow(t.Context(), "SELECT count(*), count(DISTINCT payload->>'id') FROM events").Scan(&total, &distinct); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if total != len(want) || distinct != len(want) {
		t.Errorf("events has %d rows with %d distinct ids; want %d of each", total, distinct, len(want))
	}
	got, dups := b.queryIDs(t)
	if len(dups) > 0 {
		t.Errorf("%d ids stored more than once, e.g. %s", len(dups), sample(dups))
	}
	var missing, unexpected, wrongSource []string
	for id, src := range want {
		switch g, ok := got[id]; {
		case !ok:
			missing = append(missing, id)
		case g != src:
			wrongSource = append(wrongSource, fmt.Sprintf("%s: %q, want %q", id, g, src))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			unexpected = append(unexpected, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d lines missing from events, e.g. %s", len(missing), len(want), sample(missing))
	}
	if len(unexpected) > 0 {
		t.Errorf("%d rows that should not exist, e.g. %s", len(unexpected), sample(unexpected))
	}
	if len(wrongSource) > 0 {
		t.Errorf("%d rows with the wrong source, e.g. %s", len(wrongSource), sample(wrongSource))
	}
}

// checkLanded checks that exactly the expected rows landed, with the
// expected texts, and that the accounting adds up.
func (b *bundle) checkLanded(t *testing.T, want expectation) {
	t.Helper()
	b.checkRows(t, want.rows)
	b.checkAccounting(t, want)
	b.checkTexts(t, want.texts)
}

// checkTexts checks that the "text" of each line in want reads back from
// Postgres as the characters sent, escapes decoded.
func (b *bundle) checkTexts(t *testing.T, want map[string]string) {
	t.Helper()
	ids := slices.Collect(maps.Keys(want))
	rows, err := b.db.Query(t.Context(), "SELECT payload->>'id', payload->>'text' FROM events WHERE payload->>'id' = ANY($1)", ids)
	if err != nil {
		t.Fatalf("query texts: %v", err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var id, text string
		if err := rows.Scan(&id, &text); err != nil {
			t.Fatalf("scan text: %v", err)
		}
		seen++
		if w := want[id]; text != w {
			i := 0
			for i < min(len(text), len(w)) && text[i] == w[i] {
				i++
			}
			t.Errorf("line %s: text differs from what was sent at byte %d of %d: got %q…, want %q…",
				id, i, len(w), text[i:min(len(text), i+24)], w[i:min(len(w), i+24)])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read texts: %v", err)
	}
	if seen != len(want) {
		t.Errorf("found %d of the %d lines whose text is checked", seen, len(want))
	}
}

// checkAccounting checks that every line the receipts count as stored is
// accounted for: a row, or an invalid line the workers rejected and
// acknowledged. JetStream must hold nothing any more, and must have
// stored the lines in frames of several lines each (fewer messages than
// lines).
func (b *bundle) checkAccounting(t *testing.T, want expectation) {
	t.Helper()
	if rows := int64(b.rowCount(t)); rows+want.invalid != want.lines {
		t.Errorf("receipts count %d lines stored, but events has %d rows and %d lines were invalid", want.lines, rows, want.invalid)
	}
	if s := b.streamState(t); s.Msgs != 0 || s.LastSeq == 0 || s.LastSeq >= uint64(want.lines) {
		t.Errorf("stream holds %d messages and its last sequence is %d; want none left of %d lines stored in fewer frames", s.Msgs, s.LastSeq, want.lines)
	}
}

// sample returns up to five of ids, sorted, for a failure message.
func sample(ids []string) string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	if len(ids) > 5 {
		return strings.Join(ids[:5], ", ") + ", …"
	}
	return strings.Join(ids, ", ")
}

// redeliveries returns how many deliveries of the consumer were
// redeliveries: deliveries in all, less the stream sequence reached (every
// line is delivered once at least, and sequences have no gaps here).
func redeliveries(ci *jetstream.ConsumerInfo) uint64 {
	return ci.Delivered.Consumer - ci.Delivered.Stream
}

// memStatus returns the resident set size of process pid and its peak, in
// bytes, from /proc/<pid>/status (VmRSS and VmHWM).
func memStatus(pid int) (rss, peak int64, err error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, 0, err
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, 0, err
	}
	if st.VmRSS == 0 || st.VmHWM == 0 {
		return 0, 0, fmt.Errorf("no VmRSS or VmHWM in /proc/%d/status", pid)
	}
	return int64(st.VmRSS), int64(st.VmHWM), nil
}

// tcpRmemMax returns the most a TCP socket's receive buffer may grow to
// (the last field of /proc/sys/net/ipv4/tcp_rmem).
func tcpRmemMax() (int64, error) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/tcp_rmem")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(data))
	if len(fields) != 3 {
		return 0, fmt.Errorf("tcp_rmem is %q, want three numbers", data)
	}
	return strconv.ParseInt(fields[2], 10, 64)
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
