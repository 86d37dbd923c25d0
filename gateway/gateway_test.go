package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/natsconn"
)

// testEnv is the base configuration of every test gateway.
var testEnv = map[string]string{
	"GATEWAY_LISTEN":      "127.0.0.1:0",
	"GATEWAY_ACCEPTORS":   "2",
	"GATEWAY_HEALTH_ADDR": "off",
	"GATEWAY_INSTANCE":    "test-gw",
}

type bundle struct {
	srv    *embeddednats.Server
	gw     *gateway.Gateway
	js     jetstream.JetStream
	stream jetstream.Stream
	cancel context.CancelFunc
	runErr chan error
}

type setupOptions struct {
	env            map[string]string    // added to testEnv
	streamMaxBytes int64                // default 64 MiB
	noRun          bool                 // leave running the gateway to the test
	memory         bool                 // keep the stream in memory (benchmarks)
	natsDelay      time.Duration        // one-way delay between gateway and NATS
	server         *embeddednats.Server // a running server to use (another gateway's); nil starts one
}

// setup starts an embedded NATS server with the ingest stream and a running
// gateway listening on 127.0.0.1.
func setup(t testing.TB, opts setupOptions) *bundle {
	t.Helper()
	logger := testenv.Logger(t)
	srv := opts.server
	if srv == nil {
		var err error
		if srv, err = embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: t.TempDir()}, logger); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
	}
	url := srv.ClientURL()
	if opts.natsDelay > 0 {
		url = delayProxy(t, srv.Addr().String(), opts.natsDelay)
	}
	// Connect as the program does: reconnect forever.
	nc, js, err := natsconn.Connect(t.Context(), natsconn.Config{URL: url, ConnectTimeout: 10 * time.Second}, "gateway-test", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	maxBytes := opts.streamMaxBytes
	if maxBytes == 0 {
		maxBytes = 64 << 20
	}
	ctx := t.Context()
	scfg := topology.StreamConfig{MaxBytes: maxBytes, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}.Stream()
	if opts.memory {
		scfg.Storage = jetstream.MemoryStorage
	}
	stream, err := js.CreateOrUpdateStream(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deadletter.EnsureStream(ctx, js, deadletter.Config{MaxAge: time.Hour, MaxBytes: 256 << 20}, 1); err != nil {
		t.Fatal(err)
	}

	environ := maps.Clone(testEnv)
	maps.Copy(environ, opts.env)
	var cfg gateway.Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(cfg, nc, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Listen(); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b := &bundle{srv: srv, gw: gw, js: js, stream: stream, cancel: cancel, runErr: make(chan error, 1)}
	if opts.noRun {
		close(b.runErr)
		return b
	}
	go func() {
		b.runErr <- gw.Run(runCtx)
		close(b.runErr)
	}()
	t.Cleanup(func() {
		if err := b.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

// stop shuts the gateway down and returns Run's result. Safe to call twice.
func (b *bundle) stop() error {
	b.cancel()
	select {
	case err := <-b.runErr:
		return err
	case <-time.After(40 * time.Second):
		return errors.New("gateway did not stop")
	}
}

func (b *bundle) addr(t testing.TB, i int) string {
	t.Helper()
	addrs := b.gw.Addrs()
	if len(addrs) <= i {
		t.Fatalf("gateway has %d listeners, want more than %d", len(addrs), i)
	}
	return addrs[i].String()
}

// storedMsgs returns every message in the stream, oldest first, without
// removing them.
func (b *bundle) storedMsgs(t testing.TB) []jetstream.Msg {
	t.Helper()
	ctx := t.Context()
	want := b.msgCount(t)
	if want == 0 {
		return nil
	}
	// A work-queue stream allows only explicitly acknowledged pull
	// consumers; this one reads without acknowledging and is deleted after.
	cons, err := b.js.CreateConsumer(ctx, topology.StreamName, jetstream.ConsumerConfig{
		Name: "peek", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1, AckWait: time.Hour,
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	defer func() {
		if err := b.js.DeleteConsumer(context.Background(), topology.StreamName, "peek"); err != nil {
			t.Errorf("delete consumer: %v", err)
		}
	}()
	// A pull request sent while the client reconnects after a server
	// restart can go unanswered: a fetch that gets nothing is tried
	// again, a few times.
	var out []jetstream.Msg
	for empty := 0; uint64(len(out)) < want; {
		batch, err := cons.Fetch(int(min(want-uint64(len(out)), 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		n := len(out)
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if len(out) > n {
			empty = 0
		} else if empty++; empty == 3 {
			t.Fatalf("read %d of %d stored messages, then nothing in three fetches (last: %v)", n, want, batch.Error())
		}
	}
	return out
}

// storedLine is one line of a frame in the stream.
type storedLine struct {
	subject string
	header  nats.Header // the frame's
	conn    string
	line    int64
	id      string // the line's identity, from the frame's message id
	data    string
}

// storedLines returns every line in the stream, oldest first, split from
// their frames, without removing them. It fails the test if a frame's
// headers do not describe its lines: the message id names the first line,
// and the line count matches the payload.
func (b *bundle) storedLines(t testing.TB) []storedLine {
	t.Helper()
	var out []storedLine
	for _, m := range b.storedMsgs(t) {
		h := m.Headers()
		first, err := strconv.ParseInt(h.Get(topology.HeaderLine), 10, 64)
		if err != nil {
			t.Fatalf("frame %s: %s = %q", h.Get(topology.HeaderMsgID), topology.HeaderLine, h.Get(topology.HeaderLine))
		}
		lines, err := strconv.ParseInt(h.Get(topology.HeaderLines), 10, 64)
		if err != nil {
			t.Fatalf("frame %s: %s = %q", h.Get(topology.HeaderMsgID), topology.HeaderLines, h.Get(topology.HeaderLines))
		}
		ids, ok := topology.FrameLineIDs(h.Get(topology.HeaderMsgID), first, lines)
		if !ok {
			t.Fatalf("frame %s does not name its first line %d", h.Get(topology.HeaderMsgID), first)
		}
		n := 0
		for k, line := range topology.Lines(m.Data()) {
			if k != n {
				t.Fatalf("frame %s has a blank line at %d", h.Get(topology.HeaderMsgID), n)
			}
			n++
			out = append(out, storedLine{subject: m.Subject(), header: h, conn: h.Get(topology.HeaderConn),
				line: first + int64(k), id: ids.Line(first + int64(k)), data: string(line)})
		}
		if got := h.Get(topology.HeaderLines); got != strconv.Itoa(n) {
			t.Fatalf("frame %s holds %d lines, %s says %s", h.Get(topology.HeaderMsgID), n, topology.HeaderLines, got)
		}
		if !bytes.HasSuffix(m.Data(), []byte("\n")) {
			t.Fatalf("frame %s does not end with a newline", h.Get(topology.HeaderMsgID))
		}
	}
	return out
}

// lineCount returns how many lines the stream holds.
func (b *bundle) lineCount(t testing.TB) uint64 {
	t.Helper()
	if b.msgCount(t) == 0 {
		return 0
	}
	return uint64(len(b.storedLines(t)))
}

func (b *bundle) msgCount(t testing.TB) uint64 {
	t.Helper()
	info, err := b.stream.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readReceipt reads the receipt line the gateway sends before closing.
func readReceipt(t testing.TB, c net.Conn, timeout time.Duration) gateway.Receipt {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read receipt: %v (got %q)", err, line)
	}
	var r gateway.Receipt
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("receipt %q: %v", line, err)
	}
	return r
}

// send sends data the way ncat does (write, then half-close) and returns
// the receipt.
func send(t testing.TB, addr string, data []byte) gateway.Receipt {
	t.Helper()
	c := dial(t, addr)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return readReceipt(t, c, 20*time.Second)
}

func jsonLine(conn, i int) string {
	return fmt.Sprintf(`{"conn":%d,"i":%d,"text":"%s"}`, conn, i, strings.Repeat("x", i%50))
}

func TestGatewayStoresEveryLineWithHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	const conns, perConn = 4, 300

	type sent struct {
		receipt gateway.Receipt
		lines   map[int64]string // line number → record
		bytes   int
		blank   int64
	}
	results := make([]sent, conns)
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() {
			var buf bytes.Buffer
			s := sent{lines: map[int64]string{}}
			line := int64(0)
			for i := range perConn {
				line++
				rec := jsonLine(c, i)
				s.lines[line] = rec
				switch i % 3 {
				case 0:
					buf.WriteString(rec + "\n")
				case 1:
					buf.WriteString(rec + "\r\n")
				case 2:
					buf.WriteString(rec + "\n\r\n") // a record and a blank line
					line++
					s.blank++
				}
			}
			buf.WriteString("last-without-newline")
			line++
			s.lines[line] = "last-without-newline"
			s.bytes = buf.Len()
			s.receipt = send(t, b.addr(t, 0), buf.Bytes())
			results[c] = s
		})
	}
	wg.Wait()

	byConn := map[string]sent{}
	for _, s := range results {
		r := s.receipt
		want := gateway.Receipt{Status: gateway.StatusOK, Lines: int64(len(s.lines)), Bytes: int64(s.bytes), Compression: gateway.CompressionNone,
			BytesDecompressed: int64(s.bytes), Blank: s.blank, Gateway: "test-gw", Conn: r.Conn}
		if r != want {
			t.Errorf("receipt = %+v, want %+v", r, want)
		}
		byConn[strconv.FormatUint(r.Conn, 10)] = s
	}
	if len(byConn) != conns {
		t.Fatalf("connection ids not distinct: %v", byConn)
	}

	lines := b.storedLines(t)
	if want := conns * (perConn + 1); len(lines) != want {
		t.Fatalf("stream holds %d lines, want %d", len(lines), want)
	}
	if frames := b.msgCount(t); frames >= uint64(len(lines)) {
		t.Errorf("%d lines took %d messages; want frames of several lines", len(lines), frames)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		h := l.header
		if l.subject != topology.Subject(topology.DefaultSource) {
			t.Errorf("subject = %q", l.subject)
		}
		if want := "test-gw." + l.conn + "." + strconv.FormatInt(l.line, 10); l.id != want {
			t.Errorf("line id = %q, want %q", l.id, want)
		}
		if seen[l.id] {
			t.Errorf("line %s stored twice", l.id)
		}
		seen[l.id] = true
		if got := h.Get(topology.HeaderGateway); got != "test-gw" {
			t.Errorf("%s = %q", topology.HeaderGateway, got)
		}
		if ts, err := time.Parse(time.RFC3339Nano, h.Get(topology.HeaderReceivedAt)); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("%s = %q (%v)", topology.HeaderReceivedAt, h.Get(topology.HeaderReceivedAt), err)
		}
		s, ok := byConn[l.conn]
		if !ok {
			t.Fatalf("line from unknown connection %q", l.conn)
		}
		if want, ok := s.lines[l.line]; !ok || l.data != want {
			t.Errorf("conn %s line %d = %q, want %q", l.conn, l.line, l.data, want)
		}
	}
}

func TestGatewayNamedSource(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_LISTEN": "127.0.0.1:0,tweets=127.0.0.1:0"}})
	if r := send(t, b.addr(t, 1), []byte("{\"tweet\":1}\n")); r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("receipt = %+v", r)
	}
	if r := send(t, b.addr(t, 0), []byte("{\"plain\":1}\n")); r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("receipt = %+v", r)
	}
	got := map[string]string{}
	for _, l := range b.storedLines(t) {
		got[l.subject] = l.data
	}
	want := map[string]string{"ingest.tweets": `{"tweet":1}`, "ingest.default": `{"plain":1}`}
	if !maps.Equal(got, want) {
		t.Fatalf("stored = %v, want %v", got, want)
	}
}

func TestGatewayOversizeLineIsSkipped(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_LINE_BYTES": "100", "GATEWAY_READ_BUFFER_BYTES": "512"}})
	input := "first\n" + strings.Repeat("y", 5000) + "\nthird\n" + strings.Repeat("z", 101)
	r := send(t, b.addr(t, 0), []byte(input))
	want := gateway.Receipt{Status: gateway.StatusOK, Lines: 2, Bytes: int64(len(input)), Compression: gateway.CompressionNone,
		BytesDecompressed: int64(len(input)), TooLong: 2, DeadLettered: 2, Gateway: "test-gw", Conn: r.Conn}
	if r != want {
		t.Fatalf("receipt = %+v, want %+v", r, want)
	}
	var got []string
	for _, l := range b.storedLines(t) {
		got = append(got, strconv.FormatInt(l.line, 10)+":"+l.data)
	}
	if strings.Join(got, ",") != "1:first,3:third" {
		t.Fatalf("stored %v, want lines 1 and 3", got)
	}
}

func TestGatewayIdleTimeoutSendsReceipt(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_IDLE_TIMEOUT": "300ms"}})
	c := dial(t, b.addr(t, 0))
	if _, err := c.Write([]byte("one\ntwo\npartial")); err != nil {
		t.Fatal(err)
	}
	r := readReceipt(t, c, 10*time.Second)
	if r.Status != gateway.StatusIdleTimeout || r.Lines != 2 || r.ResumeLine != 3 || r.Error == "" {
		t.Fatalf("receipt = %+v, want idle_timeout with 2 lines, resume at 3", r)
	}
}

// A connection that sends nothing (a port probe) gets an empty ok receipt.
func TestGatewayEmptyConnection(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	r := send(t, b.addr(t, 0), nil)
	if want := (gateway.Receipt{Status: gateway.StatusOK, Compression: gateway.CompressionNone, Gateway: "test-gw", Conn: r.Conn}); r != want {
		t.Fatalf("receipt = %+v, want %+v", r, want)
	}
}

func TestGatewayConnectionCap(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_CONNECTIONS": "1"}})
	first := dial(t, b.addr(t, 0))
	if _, err := first.Write([]byte("first\n")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the first line to be stored", func() error {
		if got := b.lineCount(t); got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})

	// The second connection completes its handshake in the kernel's
	// backlog, but the gateway does not accept it while the first is open.
	second := dial(t, b.addr(t, 0))
	if _, err := second.Write([]byte("second\n")); err != nil {
		t.Fatal(err)
	}
	if err := second.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = second.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := second.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second connection read = %d, %v; want no answer while the first is open", n, err)
	}
	if n := b.msgCount(t); n != 1 {
		t.Fatalf("stream holds %d messages while at the cap, want 1", n)
	}

	if err := first.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := readReceipt(t, first, 10*time.Second); r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("first receipt = %+v", r)
	}
	if r := readReceipt(t, second, 10*time.Second); r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("second receipt = %+v", r)
	}
}

// streamLines writes numbered lines to c until writing fails, counting the
// bytes written.
func streamLines(c net.Conn, lineSize int, written *atomic.Int64, limit int) {
	pad := strings.Repeat("p", max(0, lineSize-40))
	var buf []byte
	for i := 1; limit == 0 || i <= limit; i++ {
		buf = fmt.Appendf(buf, "{\"i\":%d,\"pad\":\"%s\"}\n", i, pad)
		if len(buf) >= 32<<10 || i == limit {
			n, err := c.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
			buf = buf[:0]
		}
	}
}

func TestGatewayShutdownMidStream(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_SHUTDOWN_TIMEOUT": "5s"}})
	c := dial(t, b.addr(t, 0))
	var written atomic.Int64
	go streamLines(c, 200, &written, 0)
	testenv.Eventually(t, 20*time.Second, "lines to be stored", func() error {
		if got := b.msgCount(t); got < 20 {
			return fmt.Errorf("%v, want at least %v", got, 20)
		}
		return nil
	})

	stopped := make(chan error, 1)
	go func() { stopped <- b.stop() }()
	r := readReceipt(t, c, 10*time.Second)
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Status != gateway.StatusShutdown || r.Error == "" {
		t.Fatalf("receipt = %+v, want status shutdown", r)
	}
	lines := b.storedLines(t)
	if int64(len(lines)) != r.Lines {
		t.Fatalf("receipt says %d lines stored, stream holds %d", r.Lines, len(lines))
	}
	if r.ResumeLine != r.Lines+1 {
		t.Fatalf("resume_line = %d, want %d (lines + 1, no blank lines were sent)", r.ResumeLine, r.Lines+1)
	}
	for i, l := range lines {
		if want := int64(i + 1); l.line != want {
			t.Fatalf("line %d of the stream is line %d, want %d", i, l.line, want)
		}
	}
}

func TestGatewayStreamFullHoldsSender(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{
		streamMaxBytes: 256 << 10,
		env: map[string]string{
			"GATEWAY_INFLIGHT_BYTES": "65536",
			"GATEWAY_INFLIGHT_LINES": "64",
			"GATEWAY_MAX_LINE_BYTES": "4096",
			"GATEWAY_FRAME_BYTES":    "8192",
		},
	})
	const lineSize, lines = 1000, 4000 // 4 MB, far more than socket buffers and the stream hold
	c := dial(t, b.addr(t, 0))
	_ = c.SetWriteBuffer(32 << 10)
	var written atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		streamLines(c, lineSize, &written, lines)
		_ = c.CloseWrite()
	}()

	// The stream fills up, then the sender stalls: the gateway stops
	// reading once its window is full of refused lines.
	testenv.Eventually(t, 20*time.Second, "the stream to fill", func() error {
		info, err := b.stream.Info(t.Context())
		if err != nil {
			return err
		}
		if info.State.Bytes <= 200<<10 {
			return fmt.Errorf("stream holds %d bytes, want more than %d", info.State.Bytes, 200<<10)
		}
		return nil
	})
	var last int64 = -1
	testenv.Eventually(t, 20*time.Second, "the sender to stall", func() error {
		time.Sleep(300 * time.Millisecond)
		n, before := written.Load(), last
		last = n
		if n != before {
			return fmt.Errorf("sender wrote %d bytes, %d in the last 300ms", n, n-before)
		}
		return nil
	})
	select {
	case <-writerDone:
		t.Fatalf("sender finished writing %d bytes although the stream is full", written.Load())
	default:
	}
	stored := b.lineCount(t)
	t.Logf("sender stalled after writing %d bytes; stream holds %d lines", written.Load(), stored)

	// A consumer removes lines (work-queue retention deletes acked ones);
	// everything flows again and lands exactly once.
	cons, err := b.js.CreateOrUpdateConsumer(t.Context(), topology.StreamName, jetstream.ConsumerConfig{Durable: "drain", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		first, _ := strconv.ParseInt(m.Headers().Get(topology.HeaderLine), 10, 64)
		mu.Lock()
		for k := range topology.Lines(m.Data()) {
			seen[strconv.FormatInt(first+int64(k), 10)]++
		}
		mu.Unlock()
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	r := readReceipt(t, c, 60*time.Second)
	if r.Status != gateway.StatusOK || r.Lines != lines {
		t.Fatalf("receipt = %+v, want ok with %d lines (stream held %d when full)", r, lines, stored)
	}
	testenv.Eventually(t, 20*time.Second, "the consumer to see every line", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != lines {
			return fmt.Errorf("%d distinct lines seen, want %d", len(seen), lines)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for line, n := range seen {
		if n != 1 {
			t.Errorf("line %s delivered %d times", line, n)
		}
	}
}

// Lines in flight when NATS restarts fail and are published again; each is
// stored exactly once.
func TestGatewaySurvivesNATSRestart(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_PUBLISH_TIMEOUT": "2s"}})
	const lines = 8000
	c := dial(t, b.addr(t, 0))
	var written atomic.Int64
	go func() {
		streamLines(c, 200, &written, lines)
		_ = c.CloseWrite()
	}()
	testenv.Eventually(t, 20*time.Second, "some lines to be stored", func() error {
		if got := b.lineCount(t); got < 1000 {
			return fmt.Errorf("%v, want at least %v", got, 1000)
		}
		return nil
	})
	if err := b.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r := readReceipt(t, c, 30*time.Second)
	if r.Status != gateway.StatusOK || r.Lines != lines {
		t.Fatalf("receipt = %+v, want ok with %d lines", r, lines)
	}
	// The test's own client may still be reconnecting, its first
	// request lost: the gateway's publishes are acknowledged, but a
	// stream info can time out.
	testenv.Eventually(t, 30*time.Second, "the stream to answer the test's client after the restart", func() error {
		_, err := b.stream.Info(t.Context())
		return err
	})
	stored := b.storedLines(t)
	seen := map[int64]bool{}
	for _, l := range stored {
		if seen[l.line] {
			t.Errorf("line %d stored twice", l.line)
		}
		seen[l.line] = true
	}
	if len(seen) != lines || len(stored) != lines {
		t.Fatalf("stream holds %d lines, %d distinct; want %d", len(stored), len(seen), lines)
	}
}

func TestGatewayClampsMaxLineToPayload(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_LINE_BYTES": "16777216", "GATEWAY_INFLIGHT_BYTES": "33554432"}})
	if got, want := b.gw.MaxLineBytes(), embeddednats.DefaultMaxPayload-gateway.HeaderReserve; got != want {
		t.Fatalf("max line = %d, want %d", got, want)
	}
	big := bytes.Repeat([]byte("b"), b.gw.MaxLineBytes())
	r := send(t, b.addr(t, 0), append(big, '\n'))
	if r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("receipt = %+v", r)
	}
}

func TestGatewayRunTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{noRun: true})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.gw.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil after a shutdown", err)
	}
	if err := b.gw.Run(t.Context()); !errors.Is(err, gateway.ErrAlreadyRunning) {
		t.Fatalf("second Run = %v, want %v", err, gateway.ErrAlreadyRunning)
	}
}
