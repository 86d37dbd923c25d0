package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
)

// natsBundle is an embedded NATS server with the ingest stream, the shared
// consumer and the dead-letter stream.
type natsBundle struct {
	srv    *embeddednats.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer
	dlq    jetstream.Stream
}

func setupNATS(t testing.TB, ackWait time.Duration) *natsBundle {
	t.Helper()
	return setupNATSWith(t, ackWait, embeddednats.Options{})
}

// setupNATSWith is setupNATS with a server started with opts.
func setupNATSWith(t testing.TB, ackWait time.Duration, opts embeddednats.Options) *natsBundle {
	t.Helper()
	srv := testenv.NATSWith(t, opts)
	nc, js := testenv.Connect(t, srv.ClientURL())
	ctx := t.Context()
	stream, err := topology.EnsureStream(ctx, js, topology.StreamConfig{MaxBytes: 1 << 30, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := topology.EnsureConsumer(ctx, js, topology.ConsumerConfig{AckWait: ackWait, MaxAckPending: 20000, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := deadletter.EnsureStream(ctx, js, deadletter.Config{MaxAge: time.Hour, MaxBytes: 1 << 30}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &natsBundle{srv: srv, nc: nc, js: js, stream: stream, cons: cons, dlq: dlq}
}

// deadLetters returns every entry in the dead-letter stream, in order.
func (nb *natsBundle) deadLetters(t testing.TB) []deadletter.Entry {
	t.Helper()
	si, err := nb.dlq.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []deadletter.Entry
	for seq := si.State.FirstSeq; seq <= si.State.LastSeq && si.State.Msgs > 0; seq++ {
		m, err := nb.dlq.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		e, err := deadletter.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// publish publishes lines on source's subject the way the gateway does and
// returns when the stream has stored them all.
func (nb *natsBundle) publish(t testing.TB, source string, lines [][]byte) {
	t.Helper()
	msgs := make([]*nats.Msg, len(lines))
	for i, line := range lines {
		m := nats.NewMsg(topology.Subject(source))
		m.Data = line
		m.Header.Set(topology.HeaderReceivedAt, receivedAt(i).Format(time.RFC3339Nano))
		msgs[i] = m
	}
	testenv.Publish(t, nb.js, msgs)
}

// publishFrame publishes lines as one frame, as gateway "gw" publishes
// the lines of its connection 1 from line first on.
func (nb *natsBundle) publishFrame(t testing.TB, source string, first int64, lines [][]byte) {
	t.Helper()
	m := nats.NewMsg(topology.Subject(source))
	for _, line := range lines {
		m.Data = append(append(m.Data, line...), '\n')
	}
	m.Header.Set(topology.HeaderMsgID, topology.ConnLineIDs("gw", "1").Line(first))
	m.Header.Set(topology.HeaderLine, strconv.FormatInt(first, 10))
	m.Header.Set(topology.HeaderLines, strconv.Itoa(len(lines)))
	m.Header.Set(topology.HeaderReceivedAt, receivedAt(0).Format(time.RFC3339Nano))
	testenv.Publish(t, nb.js, []*nats.Msg{m})
}

func receivedAt(i int) time.Time { return baseTime.Add(time.Duration(i) * time.Microsecond) }

// testOptions are worker options sized for tests: small batches, short
// waits and backoffs.
func testOptions() Options {
	return Options{
		BatchSize:        100,
		BatchBytes:       1 << 20,
		Concurrency:      3,
		RetryBackoff:     100 * time.Millisecond,
		RetryMaxBackoff:  400 * time.Millisecond,
		ShutdownTimeout:  10 * time.Second,
		ProgressInterval: time.Second,
	}
}

// startWorker runs a worker on cons that lands every line raw in table
// events of store, until the returned stop is called (or the test ends);
// stop returns Run's error.
func startWorker(t testing.TB, cons jetstream.Consumer, store Store, opts Options) (*Worker, func() error) {
	t.Helper()
	return runWorker(t, cons, rawRouter(t, store), opts)
}

// rawRouter routes every source to the raw landing table events in store.
func rawRouter(t testing.TB, store Store) *Router {
	t.Helper()
	raw, err := NewRawLanding("events")
	if err != nil {
		t.Fatal(err)
	}
	router, err := NewRouter(Route{Transform: raw, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return router
}

// runWorker runs a worker on cons with router until the returned stop is
// called (or the test ends); stop returns Run's error.
func runWorker(t testing.TB, cons jetstream.Consumer, router *Router, opts Options) (*Worker, func() error) {
	t.Helper()
	w, err := New(cons, router, opts, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(opts.ShutdownTimeout + 5*time.Second):
				runErr = errors.New("Run did not return after shutdown timeout")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return w, stop
}

// drained returns nil when the stream holds no lines and the consumer has
// nothing pending or unacknowledged, and otherwise what is left.
func (nb *natsBundle) drained(t testing.TB) error {
	t.Helper()
	si, err := nb.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ci, err := nb.cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Msgs != 0 || ci.NumPending != 0 || ci.NumAckPending != 0 {
		return fmt.Errorf("stream holds %d messages, consumer has %d pending and %d unacknowledged", si.State.Msgs, ci.NumPending, ci.NumAckPending)
	}
	return nil
}

// storedIDs returns the line ids in events, sorted.
func (b *storeBundle) storedIDs(t testing.TB) []string {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT line_id FROM events ORDER BY line_id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// storedSeqs returns the seqs in events, in order.
func (b *storeBundle) storedSeqs(t testing.TB) []int64 {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT seq FROM events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return seqs
}

// mixedLines returns n tweet lines in which every 37th is truncated (not
// JSON), every 53rd has a \u0000 escape and every 101st a number too large
// for Postgres's numeric; it also returns the stream sequences (1-based
// positions) of the lines that must be stored.
func mixedLines(n int) (lines [][]byte, want []int64, rejected map[string]uint64) {
	rejected = map[string]uint64{}
	for i := range n {
		seq := i + 1
		line := tweetLine(seq)
		switch {
		case seq%37 == 0:
			line = line[:len(line)/2]
			rejected[ReasonInvalidJSON]++
		case seq%53 == 0:
			line = fmt.Appendf(nil, `{"id":%d,"text":"nul \u0000 here"}`, seq)
			rejected[ReasonUnsupportedEscape]++
		case seq%101 == 0:
			line = fmt.Appendf(nil, `{"id":%d,"n":1e1000000}`, seq)
			rejected["pg_22003"]++
		default:
			want = append(want, int64(seq))
		}
		lines = append(lines, line)
	}
	return lines, want, rejected
}

func TestWorkerStoresEveryLineOnce(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	const n = 1500
	lines, want, wantRejected := mixedLines(n)
	nb.publish(t, "tweets", lines)

	opts := testOptions()
	opts.DeadLetters, opts.Instance = nb.js, "w-test"
	w, stop := startWorker(t, nb.cons, sb.store, opts)
	testenv.Eventually(t, 30*time.Second, "all lines settled", func() error {
		if got := w.Stats().Lines; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	if got := sb.storedSeqs(t); !slices.Equal(got, want) {
		t.Fatalf("stored %d rows, want %d (first difference near %v)", len(got), len(want), firstDiff(got, want))
	}
	s := w.Stats()
	var rejected uint64
	for _, c := range wantRejected {
		rejected += c
	}
	if s.Inserted != uint64(len(want)) || s.Duplicates != 0 || s.Rejected != rejected || s.Lines != n || s.Retried != 0 {
		t.Fatalf("stats %+v, want %d inserted, %d rejected, %d lines", s, len(want), rejected, n)
	}
	if !maps.Equal(s.RejectedBy, wantRejected) || !maps.Equal(s.DeadLetteredBy, wantRejected) || s.DeadLettered != rejected {
		t.Fatalf("rejected by reason %v, dead-lettered %d by %v; want %v", s.RejectedBy, s.DeadLettered, s.DeadLetteredBy, wantRejected)
	}
	// Every refused line is in the dead letters once, as it came, with
	// who refused it and why; it was dead-lettered on its first delivery.
	gotBy := map[string]uint64{}
	entries := nb.deadLetters(t)
	for _, e := range entries {
		gotBy[e.Reason]++
		line := lines[e.StreamSeq-1]
		if !bytes.Equal(e.Data, line) || e.Subject != "ingest.tweets" || e.Source != "tweets" || e.Class != deadletter.ClassPermanent ||
			e.Deliveries != 1 || e.By != "w-test" || e.Error == "" || e.Header.Get(topology.HeaderReceivedAt) != receivedAt(int(e.StreamSeq-1)).Format(time.RFC3339Nano) {
			t.Errorf("dead letter %+v for line %d %.40q", e, e.StreamSeq, line)
		}
		if e.Reason == "pg_22003" && !strings.Contains(e.Error, "numeric") {
			t.Errorf("dead letter of line %d: error %q, want the database's message", e.StreamSeq, e.Error)
		}
	}
	if len(entries) != int(rejected) || !maps.Equal(gotBy, wantRejected) {
		t.Fatalf("%d dead letters by %v, want %d by %v", len(entries), gotBy, rejected, wantRejected)
	}
	if s.Batches < n/100 {
		t.Fatalf("%d batches for %d lines in batches of 100", s.Batches, n)
	}
	// Acks are processed asynchronously by the server.
	testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })

	// The row carries the line as received.
	var (
		source string
		at     time.Time
		same   bool
	)
	err := sb.pool.QueryRow(t.Context(), `SELECT source, received_at, payload = $2::jsonb FROM events WHERE seq = $1`,
		int64(7), string(lines[6])).Scan(&source, &at, &same)
	if err != nil {
		t.Fatal(err)
	}
	if source != "tweets" || !at.Equal(receivedAt(6)) || !same {
		t.Fatalf("row 7 = (%q, %s, payload equal %v), want (tweets, %s, true)", source, at, same, receivedAt(6))
	}
}

func firstDiff(a, b []int64) int64 {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return min(a[i], b[i])
		}
	}
	return -1
}

// TestWorkerRedeliveredBatch has a worker die between commit and ack: its
// lines come back after AckWait and must not be stored twice.
func TestWorkerRedeliveredBatch(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, time.Second)
	sb := setupStore(t)
	const n = 400
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = tweetLine(i + 1)
	}
	nb.publish(t, "tweets", lines)

	// The doomed worker: fetch, transform, commit, never ack.
	raw, _ := NewRawLanding("events")
	mb, err := nb.cons.Fetch(150, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]any
	for m := range mb.Messages() {
		// As the worker reads it: the line has no message id, and the
		// worker no stream creation time, so it is identified by its
		// sequence.
		line, _, res := readLine(m, "")
		var row []any
		if res.Outcome == Insert {
			row, res = transformOne(raw, &line)
		}
		if res.Outcome != Insert || line.ID != strconv.FormatUint(line.Seq, 10) {
			t.Fatalf("line %d (id %q): %+v", line.Seq, line.ID, res)
		}
		rows = append(rows, row)
	}
	if len(rows) != 150 {
		t.Fatalf("fetched %d lines, want 150", len(rows))
	}
	if _, err := sb.store.Write(t.Context(), rowsOf(rows)); err != nil {
		t.Fatal(err)
	}

	w, stop := startWorker(t, nb.cons, sb.store, testOptions())
	testenv.Eventually(t, 30*time.Second, "all lines acknowledged", func() error {
		if got := w.Stats().Lines; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	if s.Inserted != n-150 || s.Duplicates != 150 {
		t.Fatalf("stats %+v, want %d inserted and 150 duplicates", s, n-150)
	}
	if got := sb.storedSeqs(t); len(got) != n || got[0] != 1 || got[n-1] != n {
		t.Fatalf("stored %d rows (%v…), want seqs 1..%d", len(got), got[:min(3, len(got))], n)
	}
	testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })
}

// TestWorkerDatabaseDown runs a worker whose database is unreachable: it
// must keep every line (negatively acknowledged, never acknowledged) and
// keep running; a worker with a working database then stores them all.
func TestWorkerDatabaseDown(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	const n = 250
	lines, want, _ := mixedLines(n)
	nb.publish(t, "tweets", lines)

	down := newPool(t, "postgres://postgres@"+testenv.FreeAddr(t)+"/jetline?sslmode=disable&connect_timeout=2")
	raw, _ := NewRawLanding("events")
	downStore, err := NewPostgresStore(down, raw.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	w, stop := startWorker(t, nb.cons, downStore, testOptions())
	// Every storable line is handed back at least twice.
	testenv.Eventually(t, 20*time.Second, "retries", func() error {
		if got := w.Stats().Retried; got < 2*uint64(len(want)) {
			return fmt.Errorf("%v, want at least %v", got, 2*uint64(len(want)))
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	if s.Inserted != 0 || s.Batches != 0 || s.Failures < 2 {
		t.Fatalf("stats with database down: %+v", s)
	}
	// Lines that never needed the database were settled anyway.
	if s.Lines != s.Rejected || s.Rejected == 0 {
		t.Fatalf("with database down %d lines were acknowledged, %d rejected by the transform: want equal and non-zero", s.Lines, s.Rejected)
	}
	testenv.Eventually(t, 10*time.Second, "the stream to hold all but the acknowledged rejects", func() error {
		si, err := nb.stream.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if si.State.Msgs != n-s.Lines {
			return fmt.Errorf("stream holds %d messages, want %d", si.State.Msgs, n-s.Lines)
		}
		return nil
	})

	w2, stop2 := startWorker(t, nb.cons, sb.store, testOptions())
	testenv.Eventually(t, 30*time.Second, "stored after recovery", func() error {
		if got := w2.Stats().Lines; got != n-s.Lines {
			return fmt.Errorf("%v, want %v", got, n-s.Lines)
		}
		return nil
	})
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if got := sb.storedSeqs(t); !slices.Equal(got, want) {
		t.Fatalf("stored %d rows after recovery, want %d", len(got), len(want))
	}
	if w2.Stats().Inserted != uint64(len(want)) {
		t.Fatalf("recovered worker stats %+v, want %d inserted", w2.Stats(), len(want))
	}
	testenv.Eventually(t, 10*time.Second, "stream drained after recovery", func() error { return nb.drained(t) })
}

// TestWorkerShutdown stops a busy worker: it must return promptly, and
// what it acknowledged must be exactly what it stored; a second worker
// then finishes the rest with nothing twice.
func TestWorkerShutdown(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	const n = 2000
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = tweetLine(i + 1)
	}
	nb.publish(t, "tweets", lines)

	w, stop := startWorker(t, nb.cons, sb.store, testOptions())
	testenv.Eventually(t, 30*time.Second, "first batches", func() error {
		if got := w.Stats().Lines; got < 300 {
			return fmt.Errorf("%v, want at least %v", got, 300)
		}
		return nil
	})
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	s := w.Stats()
	if stored := len(sb.storedSeqs(t)); uint64(stored) != s.Inserted || s.Lines != s.Inserted {
		t.Fatalf("after shutdown: %d rows stored, stats %+v; want rows = inserted = acknowledged", stored, s)
	}
	if s.Lines == n {
		t.Log("worker finished everything before stopping; shutdown mid-stream not exercised")
	}

	w2, stop2 := startWorker(t, nb.cons, sb.store, testOptions())
	testenv.Eventually(t, 30*time.Second, "the rest stored", func() error {
		if got := len(sb.storedSeqs(t)); got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if got := w2.Stats().Inserted + s.Inserted; got != n {
		t.Fatalf("inserted %d in total, want %d", got, n)
	}
}

// blockingStore is a Store that never commits: Write waits for ctx.
type blockingStore struct{ calls chan struct{} }

func (b *blockingStore) Write(ctx context.Context, _ *Rows) (WriteResult, error) {
	select {
	case b.calls <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return WriteResult{}, ctx.Err()
}

// TestWorkerShutdownTimeout: a batch that cannot be stored before the
// shutdown timeout is handed back at once, not acknowledged, and Run
// returns in time.
func TestWorkerShutdownTimeout(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	const n = 50
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = []byte(fmt.Sprintf(`{"i":%d}`, i))
	}
	nb.publish(t, "tweets", lines)

	store := &blockingStore{calls: make(chan struct{}, 1)}
	opts := testOptions()
	opts.ShutdownTimeout = 500 * time.Millisecond
	w, stop := startWorker(t, nb.cons, store, opts)
	select {
	case <-store.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("store never called")
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > opts.ShutdownTimeout+time.Second {
		t.Fatalf("Run returned %s after stop, want about the shutdown timeout (%s)", d, opts.ShutdownTimeout)
	}
	if s := w.Stats(); s.Lines != 0 || s.Retried == 0 {
		t.Fatalf("stats %+v: want nothing acknowledged, lines handed back", s)
	}
	// Handed back without delay: another consumer gets them at once, long
	// before AckWait.
	mb, err := nb.cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range mb.Messages() {
		got++
		_ = m.Ack()
	}
	if got != n {
		t.Fatalf("refetched %d lines after shutdown, want %d", got, n)
	}
}

// switchableProxy forwards TCP connections to a target until it is
// switched off: then it cuts every connection and refuses new ones, as a
// database host dropping off the network would look to the worker.
type switchableProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	off   bool
	conns map[net.Conn]struct{}
}

func newSwitchableProxy(t testing.TB, target string) *switchableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchableProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.switchOff(true) })
	go p.serve()
	return p
}

func (p *switchableProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *switchableProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.off {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

// switchOff cuts all connections and refuses new ones (off), or lets them
// through again.
func (p *switchableProxy) switchOff(off bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.off = off
	if off {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestWorkerReadinessDatabaseDown: while the database is unreachable,
// /readyz (which pings it, as the worker program wires it) says not ready
// and the worker keeps running, handing lines back; when the database is
// back, readiness returns and the lines are stored.
func TestWorkerReadinessDatabaseDown(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	dsn, err := url.Parse(testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newSwitchableProxy(t, dsn.Host)
	dsn.Host = proxy.ln.Addr().String()
	q := dsn.Query()
	q.Set("connect_timeout", "1")
	dsn.RawQuery = q.Encode()
	pool := newPool(t, dsn.String())
	raw, _ := NewRawLanding("events")
	store, err := NewPostgresStore(pool, raw.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(t.Context()); err != nil {
		t.Fatal(err)
	}

	hs := health.New("127.0.0.1:0", testenv.Logger(t))
	hs.AddCheck("postgres", pool.Ping)
	hctx, stopHealth := context.WithCancel(context.Background())
	healthDone := make(chan error, 1)
	go func() { healthDone <- hs.Run(hctx) }()
	t.Cleanup(func() { stopHealth(); <-healthDone })
	testenv.Eventually(t, 10*time.Second, "health server listening", func() error {
		if hs.Addr() == nil {
			return errors.New("no address yet")
		}
		return nil
	})
	readyz := func() int {
		resp, err := http.Get("http://" + hs.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ready := func() bool { return readyz() == http.StatusOK }

	opts := testOptions()
	opts.DeadLetters = nb.js
	w, stop := startWorker(t, nb.cons, store, opts)
	lines := make([][]byte, 200)
	for i := range lines {
		lines[i] = tweetLine(i + 1)
	}
	nb.publish(t, "tweets", lines[:100])
	testenv.Eventually(t, 30*time.Second, "first lines stored", func() error {
		if got := w.Stats().Lines; got != 100 {
			return fmt.Errorf("%v, want %v", got, 100)
		}
		return nil
	})
	if !ready() {
		t.Fatal("not ready with the database up")
	}

	proxy.switchOff(true)
	testenv.Eventually(t, 10*time.Second, "not ready with the database down", func() error {
		if code := readyz(); code == http.StatusOK {
			return fmt.Errorf("/readyz answers %d", code)
		}
		return nil
	})
	nb.publish(t, "tweets", lines[100:])
	testenv.Eventually(t, 30*time.Second, "stores failing and lines handed back", func() error {
		if got := w.Stats().Retried; got < 100 {
			return fmt.Errorf("%v, want at least %v", got, 100)
		}
		return nil
	})
	if s := w.Stats(); s.Lines != 100 || s.DeadLettered != 0 {
		t.Fatalf("stats with the database down %+v: want nothing more settled, nothing dead-lettered", s)
	}
	if ready() {
		t.Fatal("ready with the database down")
	}

	proxy.switchOff(false)
	testenv.Eventually(t, 10*time.Second, "ready again", func() error {
		if code := readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz answers %d", code)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, "all lines stored after recovery", func() error {
		if got := w.Stats().Lines; got != 200 {
			return fmt.Errorf("%v, want %v", got, 200)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	var stored int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM events`).Scan(&stored); err != nil || stored != 200 {
		t.Fatalf("%d rows stored (%v), want 200", stored, err)
	}
}

// TestLineStoredOnceAcrossNATSRestart: a publish retried across a NATS
// restart with the same message id, of a line the workers already
// stored, is stored again by JetStream (it rebuilds its duplicate window
// only from the lines still in the stream, and a work queue keeps none the
// workers acknowledged), under a new sequence. The line's identity is its
// message id, so it makes one row.
func TestLineStoredOnceAcrossNATSRestart(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	w, stop := startWorker(t, nb.cons, sb.store, testOptions())
	// publish publishes the line, as the gateway does, until JetStream
	// acknowledges it: across the restart, attempts fail or time out
	// while the client reconnects and the server recovers its streams.
	publish := func() *jetstream.PubAck {
		t.Helper()
		m := nats.NewMsg(topology.Subject("tweets"))
		m.Data = tweetLine(1)
		m.Header.Set(topology.HeaderMsgID, "gw-0a1b2c3d.1.1")
		var ack *jetstream.PubAck
		testenv.Eventually(t, time.Minute, "JetStream to acknowledge the line", func() (err error) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			ack, err = nb.js.PublishMsg(ctx, m)
			return err
		})
		return ack
	}
	if ack := publish(); ack.Sequence != 1 {
		t.Fatalf("first publish stored as %d, want 1", ack.Sequence)
	}
	testenv.Eventually(t, 30*time.Second, "the line stored and acknowledged", func() error {
		if got := w.Stats().Lines; got != 1 {
			return fmt.Errorf("%d lines settled, want 1", got)
		}
		return nb.drained(t)
	})

	if err := nb.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// (An attempt that timed out may have stored it already; the next is
	// then acknowledged as a duplicate of that one, sequence 2 all the
	// same.)
	if ack := publish(); ack.Sequence != 2 {
		t.Fatalf("the publish retried after the restart: %+v; want it stored again, as sequence 2", ack)
	}
	testenv.Eventually(t, 60*time.Second, "the copy settled", func() error {
		if got := w.Stats().Lines; got != 2 {
			return fmt.Errorf("%v, want %v", got, 2)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := sb.storedSeqs(t); !slices.Equal(got, []int64{1}) {
		t.Fatalf("events holds the sequences %v; want the line once, [1]", got)
	}
	if s := w.Stats(); s.Inserted != 1 || s.Duplicates != 1 {
		t.Fatalf("stats %+v, want 1 inserted and 1 duplicate", s)
	}
}
