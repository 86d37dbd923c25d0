package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testcert"
)

// The connections mode measures what a gateway costs per connection: the
// memory an idle one holds, and how many short ones (connect, one line,
// half-close, receipt, close) it serves per second, plain and with a full
// TLS handshake. A receipt needs only JetStream's acknowledgement, so no
// worker runs.

const (
	// connGoalText sums up the goals [Report.setConnections] measures.
	connGoalText = "goals: ≤ 16 KiB gateway RSS per idle connection, ≥ 5,000 plain connections/s, ≥ 1,000 TLS handshakes/s (ECDSA P-256)"
	// idleSettle lets every idle session reach its first read before RSS
	// is read.
	idleSettle = time.Second
	// fdHeadroom is the open files the bench needs besides its client
	// connections (NATS, Postgres, files).
	fdHeadroom = 256
	// exchangeTimeout bounds one client connection, connect to receipt.
	exchangeTimeout = 10 * time.Second
	// sourceAddrCount is how many loopback addresses (127.0.0.2 and up)
	// the clients connect from. A client closes first, so each connection
	// holds its local port in TIME_WAIT for a minute; one address has
	// about 28,000 ephemeral ports, 100 enough for 46,000 connections/s.
	sourceAddrCount = 100
)

// connectionsResult is what the connections mode found and what with:
// open-file limits, GATEWAY_MAX_CONNECTIONS unless -env overrode it,
// /proc/loadavg at the start and the gateway's VmHWM at the end.
type connectionsResult struct {
	IdleConns        int         `json:"idle_conns"`
	Clients          int         `json:"clients"`
	DurationSeconds  float64     `json:"duration_seconds"`
	SourceAddrs      string      `json:"source_addrs"`
	MaxConnections   int         `json:"max_connections"`
	OpenFiles        uint64      `json:"open_files"`
	OpenFilesHard    uint64      `json:"open_files_hard"`
	GatewayOpenFiles uint64      `json:"gateway_open_files"`
	LoadAvg          string      `json:"load_avg"`
	GatewayPeakRSS   int64       `json:"gateway_peak_rss_bytes"`
	Idle             idleResult  `json:"idle"`
	Plain            *rateResult `json:"plain,omitempty"`
	TLS              *rateResult `json:"tls,omitempty"`
	Goals            []goal      `json:"goals"`
}

// idleResult is the gateway with IdleConns idle connections: seconds to
// accept them all and to end every session once closed; VmRSS before, with
// them and after; go_goroutines before and with them, or -1 when unserved.
type idleResult struct {
	AcceptSeconds    float64 `json:"accept_seconds"`
	CloseSeconds     float64 `json:"close_seconds"`
	RSSBefore        int64   `json:"rss_before_bytes"`
	RSSAfter         int64   `json:"rss_after_bytes"`
	RSSClosed        int64   `json:"rss_closed_bytes"`
	BytesPerConn     float64 `json:"bytes_per_conn"`
	GoroutinesBefore int     `json:"goroutines_before"`
	GoroutinesAfter  int     `json:"goroutines_after"`
}

// rateResult is one connection rate, plain or TLS, over Seconds from the
// first connect to the last receipt. Of the Attempted connections, OK got
// a correct receipt; Errors counts the others' causes. The percentiles are
// of a correct connection's seconds to its receipt and handshake. Accepted
// is how many the gateway numbered meanwhile, StoredLines how many lines
// the stream gained. OtherCores is the busy time of all but the gateway and
// the bench: other processes, and kernel work such as loopback TCP.
type rateResult struct {
	Name              string           `json:"name"`
	Seconds           float64          `json:"seconds"`
	Attempted         int64            `json:"attempted"`
	OK                int64            `json:"ok"`
	Errors            map[string]int64 `json:"errors,omitempty"`
	PerSec            float64          `json:"per_sec"`
	P50               float64          `json:"p50_seconds"`
	P99               float64          `json:"p99_seconds"`
	HandshakeP50      float64          `json:"handshake_p50_seconds,omitempty"`
	HandshakeP99      float64          `json:"handshake_p99_seconds,omitempty"`
	Protocol          string           `json:"protocol,omitempty"`
	Accepted          int64            `json:"accepted"`
	StoredLines       int64            `json:"stored_lines"`
	GatewayCPUSeconds float64          `json:"gateway_cpu_seconds"`
	BenchCPUSeconds   float64          `json:"bench_cpu_seconds"`
	BusyPct           float64          `json:"machine_busy_pct"`
	OtherCores        float64          `json:"other_cores"`
}

// connRun is one run of the connections mode in progress.
type connRun struct {
	b          *bench
	gateway    *child
	plain, tls listener
	healthAddr string
	dialers    []net.Dialer // one per source address
	res        connectionsResult
}

// listener is one of the gateway's listeners: over TLS when tls is set,
// which trusts the run's certificate only and keeps no session cache, so
// every connection makes a full, verified handshake.
type listener struct {
	name, addr string
	tls        *tls.Config
}

// runConnections is the connections mode: idle memory, then the plain and
// the TLS connection rates, all against one gateway.
func runConnections(ctx context.Context, b *bench) error {
	cfg := b.cfg
	r := &connRun{b: b, dialers: make([]net.Dialer, sourceAddrCount)}
	for i := range r.dialers {
		r.dialers[i] = net.Dialer{Timeout: exchangeTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+2))}}
	}
	// Every client connection is a file; Go raises the soft limit to the
	// hard one as a program starts, the bench's and the gateway's alike.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open files limit: %w", err)
	}
	if need := uint64(cfg.IdleConns + cfg.Clients + fdHeadroom); lim.Cur < need {
		return fmt.Errorf("-idle-conns %d needs about %d open files but this process may open %d (hard limit %d): lower -idle-conns or raise the hard limit (ulimit -Hn)",
			cfg.IdleConns, need, lim.Cur, lim.Max)
	}
	// The connection cap leaves room for the idle connections and, as a
	// client may connect again before the gateway has closed its last
	// connection, for every client twice and the probes.
	r.res = connectionsResult{IdleConns: cfg.IdleConns, Clients: cfg.Clients, DurationSeconds: cfg.Duration.Seconds(),
		SourceAddrs: fmt.Sprintf("127.0.0.2–127.0.0.%d", sourceAddrCount+1), MaxConnections: cfg.IdleConns + 2*cfg.Clients + 100,
		OpenFiles: lim.Cur, OpenFilesHard: lim.Max, LoadAvg: "unknown"}
	if l, err := procFS().LoadAvg(); err == nil {
		r.res.LoadAvg = fmt.Sprintf("%.2f %.2f %.2f", l.Load1, l.Load5, l.Load15)
	}
	if err := r.startGateway(ctx); err != nil {
		return err
	}
	var err error
	if r.res.Idle, err = r.measureIdle(ctx); err != nil {
		return fmt.Errorf("idle connections: %w", err)
	}
	if r.res.Plain, err = r.measureRate(ctx, r.plain); err != nil {
		return fmt.Errorf("plain connections: %w", err)
	}
	if r.res.TLS, err = r.measureRate(ctx, r.tls); err != nil {
		return fmt.Errorf("TLS connections: %w", err)
	}
	if _, r.res.GatewayPeakRSS, err = rss(r.gateway.pid); err != nil {
		return err
	}
	if err := b.stopPrograms("the gateway"); err != nil {
		return err
	}
	b.report.setConnections(r.res)
	return nil
}

func (r *connRun) programs() []*child { return []*child{r.gateway} }

// dialer returns the i-th connection's dialer, going round the source
// addresses.
func (r *connRun) dialer(i int) *net.Dialer { return &r.dialers[i%len(r.dialers)] }

// startGateway starts the gateway with a plain and a TLS listener and
// waits until it accepts connections on both.
func (r *connRun) startGateway(ctx context.Context) error {
	h := r.b.h
	addrs, err := freeAddrs(3)
	if err != nil {
		return err
	}
	// The certificate is valid for 90 days, so that the gateway does not
	// warn that it expires soon.
	dir := filepath.Join(h.dir, "tls")
	ca, err := testcert.MakeCA(dir, "jetline-bench-ca", 90*24*time.Hour)
	var cert testcert.Pair
	if err == nil {
		cert, err = ca.IssueInto(dir, "127.0.0.1")
	}
	if err != nil {
		return err
	}
	r.plain, r.healthAddr = listener{"plain", addrs[0], nil}, addrs[1]
	r.tls = listener{"TLS", addrs[2], &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	env := r.b.childEnv("GATEWAY_LISTEN="+r.plain.addr, "GATEWAY_HEALTH_ADDR="+r.healthAddr, "GATEWAY_INSTANCE=bench-gateway",
		"GATEWAY_MAX_CONNECTIONS="+strconv.Itoa(r.res.MaxConnections),
		"GATEWAY_TLS_LISTEN="+r.tls.addr, "GATEWAY_TLS_CERT="+cert.CertFile, "GATEWAY_TLS_KEY="+cert.KeyFile)
	r.b.pr.step("starting the gateway on %s, TLS %s (%s); no workers: a receipt needs only JetStream's acknowledgement", r.plain.addr, r.tls.addr, h.binaries.Gateway.Path)
	if r.gateway, err = r.b.startChild("gateway", h.binaries.Gateway.Path, env); err != nil {
		return err
	}
	for _, l := range []listener{r.plain, r.tls} {
		if err := poll(ctx, "the gateway's "+l.name+" listener", r.programs, func() (bool, error) {
			_, err := r.probe(ctx, l)
			if errors.Is(err, syscall.ECONNREFUSED) { // not listening yet
				return false, nil
			}
			return err == nil, err
		}); err != nil {
			return err
		}
	}
	p, err := procFS().Proc(r.gateway.pid)
	var l procfs.ProcLimits
	if err == nil {
		l, err = p.Limits()
	}
	r.res.GatewayOpenFiles = min(l.OpenFiles, 1<<62) // unlimited is all ones
	if err != nil {
		return fmt.Errorf("read limits of pid %d: %w", r.gateway.pid, err)
	}
	return nil
}

// measureIdle opens cfg.IdleConns connections that send nothing, waits
// until the gateway holds them all (its open files) and reads how much its
// RSS grew; then closes them, waits for every session to end, and probes.
func (r *connRun) measureIdle(ctx context.Context) (res idleResult, err error) {
	pr, pid, n := r.b.pr, r.gateway.pid, r.res.IdleConns
	goroutines := func() int { // -1 when the gateway serves no go_goroutines
		if v, ok := scrapeSum(ctx, r.healthAddr, "go_goroutines"); ok {
			return int(v)
		}
		return -1
	}
	// The open files and the goroutines must hold still for two polls, so
	// that the readiness probes' sessions have ended: with 200 connections,
	// the goroutines went 34 → 233 when read once the files alone settled.
	var base int
	last := [2]int{-1, -1}
	if err := r.waitFiles(ctx, "the gateway's open files and goroutines to settle", func(open int) bool {
		now := [2]int{open, goroutines()}
		settled := now == last
		last, base, res.GoroutinesBefore = now, open, now[1]
		return settled
	}); err != nil {
		return res, err
	}
	if res.RSSBefore, _, err = rss(pid); err != nil {
		return res, err
	}
	pr.step("idle: opening %s connections from %s that send nothing (gateway RSS %s)", thousands(int64(n)), r.res.SourceAddrs, mib(res.RSSBefore))
	start := time.Now()
	conns := make([]net.Conn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer closeAll()
	for i := range n {
		c, err := r.dialer(i).DialContext(ctx, "tcp", r.plain.addr)
		if err != nil {
			return res, fmt.Errorf("open idle connection %d of %d: %w", i+1, n, err)
		}
		conns = append(conns, c)
	}
	what := fmt.Sprintf("the gateway to accept every idle connection (with GATEWAY_MAX_CONNECTIONS %d unless -env set it)", r.res.MaxConnections)
	if err := r.waitFiles(ctx, what, func(open int) bool { return open >= base+n }); err != nil {
		return res, err
	}
	res.AcceptSeconds = time.Since(start).Seconds()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(idleSettle):
	}
	if res.RSSAfter, _, err = rss(pid); err != nil {
		return res, err
	}
	res.GoroutinesAfter = goroutines()
	res.BytesPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(n)
	pr.step("idle: %s connections accepted in %.1fs; gateway RSS %s → %s, %.1f KiB per connection",
		thousands(int64(n)), res.AcceptSeconds, mib(res.RSSBefore), mib(res.RSSAfter), res.BytesPerConn/1024)

	start = time.Now()
	closeAll()
	if err := r.waitFiles(ctx, "the gateway to end the sessions of the closed idle connections", func(open int) bool { return open <= base }); err != nil {
		return res, err
	}
	res.CloseSeconds = time.Since(start).Seconds()
	if res.RSSClosed, _, err = rss(pid); err != nil {
		return res, err
	}
	if _, err := r.probe(ctx, r.plain); err != nil {
		return res, fmt.Errorf("after closing the idle connections: %w", err)
	}
	pr.step("idle: closed; the gateway ended every session in %.1fs and still serves (RSS %s)", res.CloseSeconds, mib(res.RSSClosed))
	return res, nil
}

// waitFiles polls the gateway's open file count until done accepts it,
// failing if the gateway exits or readyTimeout passes.
func (r *connRun) waitFiles(ctx context.Context, what string, done func(open int) bool) error {
	var open int
	err := poll(ctx, what, r.programs, func() (bool, error) {
		entries, err := os.ReadDir("/proc/" + strconv.Itoa(r.gateway.pid) + "/fd")
		if err != nil {
			return false, fmt.Errorf("count open files of pid %d: %w", r.gateway.pid, err)
		}
		open = len(entries)
		return done(open), nil
	})
	if err != nil {
		return fmt.Errorf("%w (the gateway has %d files open)", err, open)
	}
	return nil
}

// probe makes a connection to l that sends nothing and returns the
// gateway's number for it, from its "ok" receipt.
func (r *connRun) probe(ctx context.Context, l listener) (int64, error) {
	x, err := exchange(ctx, r.dialer(0), l, nil, bufio.NewReader(nil))
	if err != nil {
		return 0, fmt.Errorf("probe connection to the gateway's %s listener: %w", l.name, err)
	}
	return int64(x.receipt.Conn), nil
}

// mark returns the gateway's last connection number and the lines the
// ingest stream holds. The gateway numbers connections as it accepts them,
// so two marks bracket how many it accepted and how many lines it stored.
func (r *connRun) mark(ctx context.Context) (conn, stored int64, err error) {
	if conn, err = r.probe(ctx, r.plain); err != nil {
		return 0, 0, err
	}
	st, err := r.b.h.js.Stream(ctx, topology.StreamName)
	if err != nil {
		return 0, 0, fmt.Errorf("read stream %s: %w", topology.StreamName, err)
	}
	return conn, int64(st.CachedInfo().State.Msgs), nil
}

// measureRate runs cfg.Clients clients against l for cfg.Duration, each
// making one connection after the other that sends one line. It fails as
// [rateResult.check] says.
func (r *connRun) measureRate(ctx context.Context, l listener) (*rateResult, error) {
	cfg, pr := r.b.cfg, r.b.pr
	how := "connect"
	if l.tls != nil {
		how = "connect → full TLS handshake"
	}
	settle()
	pr.step("%s: %d clients for %s, each connection: %s → one line → half-close → receipt → close", l.name, cfg.Clients, cfg.Duration, how)
	firstConn, firstStored, err := r.mark(ctx)
	if err != nil {
		return nil, fmt.Errorf("before: %w", err)
	}
	before, err := sampleUsage(r.programs(), nil)
	if err != nil {
		return nil, err
	}
	res := &rateResult{Name: l.name, Errors: map[string]int64{}}
	var mu sync.Mutex // guards res and the seconds of the correct connections
	var total, handshake []float64
	var wg sync.WaitGroup
	for id := range cfg.Clients {
		wg.Go(func() {
			br := bufio.NewReaderSize(nil, 1024)
			var line []byte
			for seq := 0; ctx.Err() == nil && time.Since(before.at) < cfg.Duration; seq++ {
				line = fmt.Appendf(line[:0], `{"bench":"connections","client":%d,"seq":%d}`+"\n", id, seq)
				x, err := exchange(ctx, r.dialer(id+seq*cfg.Clients), l, line, br)
				mu.Lock()
				res.Attempted++
				if err != nil {
					res.Errors[errKind(err)]++
				} else {
					res.OK++
					total = append(total, x.total.Seconds())
					if l.tls != nil {
						handshake, res.Protocol = append(handshake, x.handshake.Seconds()), x.protocol
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	after, err := sampleUsage(r.programs(), nil)
	if err == nil {
		err = cmp.Or(ctx.Err(), exited(r.programs()))
	}
	if err != nil {
		return nil, err
	}
	lastConn, lastStored, err := r.mark(ctx)
	if err != nil {
		return nil, fmt.Errorf("after: %w", err)
	}
	res.Seconds = after.at.Sub(before.at).Seconds()
	res.PerSec = float64(res.OK) / res.Seconds
	if len(total) > 0 {
		res.P50, res.P99 = percentile(total, 0.5), percentile(total, 0.99)
	}
	if len(handshake) > 0 {
		res.HandshakeP50, res.HandshakeP99 = percentile(handshake, 0.5), percentile(handshake, 0.99)
	}
	res.Accepted, res.StoredLines = lastConn-firstConn-1, lastStored-firstStored
	u := usage(before, after, r.programs())
	res.GatewayCPUSeconds, res.BenchCPUSeconds = u[0].CPUSeconds, u[1].CPUSeconds
	res.BusyPct, _ = busy(before.machine, after.machine)
	res.OtherCores = max(0, res.BusyPct/100*float64(r.b.report.Machine.CPUs)-u[0].Cores-u[1].Cores)
	pr.step("%s: %s connections/s, %s ok, %s failed in %.1fs; p50 %s, p99 %s; gateway %.0f µs CPU per connection",
		l.name, thousands(int64(res.PerSec)), thousands(res.OK), thousands(res.Attempted-res.OK), res.Seconds,
		seconds(res.P50), seconds(res.P99), perLine(res.GatewayCPUSeconds, int(res.OK)))
	return res, res.check()
}

// check reports what makes the measurement meaningless: no connection
// succeeded, or the stream gained fewer lines than receipts or connections.
func (r rateResult) check() error {
	switch {
	case r.Attempted == 0:
		return errors.New("no connection was made")
	case r.OK == 0:
		return fmt.Errorf("no connection succeeded; %d failed: %v", r.Attempted, r.Errors)
	case r.StoredLines < r.OK:
		return fmt.Errorf("%d receipts acknowledged a line but the stream gained only %d lines", r.OK, r.StoredLines)
	case r.StoredLines > r.Attempted:
		return fmt.Errorf("the stream gained %d lines from %d connections of one line each", r.StoredLines, r.Attempted)
	}
	return nil
}

// exchanged is one correct connection: its receipt, its time to the
// receipt and to the end of the TLS handshake, and that handshake's version
// and key exchange.
type exchanged struct {
	receipt          gateway.Receipt
	total, handshake time.Duration
	protocol         string
}

// exchange makes one connection to l as ncat would: connect (and a TLS
// handshake), write line, half-close, read the receipt into br, close. It
// fails unless the receipt says line (or nothing, when empty) was stored;
// its error starts with the step that failed.
func exchange(ctx context.Context, d *net.Dialer, l listener, line []byte, br *bufio.Reader) (x exchanged, err error) {
	start := time.Now()
	raw, err := d.DialContext(ctx, "tcp", l.addr)
	if err == nil {
		defer raw.Close()
		err = raw.SetDeadline(start.Add(exchangeTimeout))
	}
	if err != nil {
		return x, fmt.Errorf("connect: %w", err)
	}
	conn, closeWrite := raw, raw.(*net.TCPConn).CloseWrite
	if l.tls != nil {
		tc := tls.Client(raw, l.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return x, fmt.Errorf("TLS handshake: %w", err)
		}
		x.handshake = time.Since(start)
		st := tc.ConnectionState()
		x.protocol = tls.VersionName(st.Version) + ", " + st.CurveID.String()
		// CloseWrite of a TLS connection sends close_notify, which the
		// gateway reads as the end of the input.
		conn, closeWrite = tc, tc.CloseWrite
	}
	if _, err := conn.Write(line); err != nil {
		return x, fmt.Errorf("write: %w", err)
	}
	if err := closeWrite(); err != nil {
		return x, fmt.Errorf("half-close: %w", err)
	}
	br.Reset(conn)
	got, err := br.ReadSlice('\n')
	if err != nil {
		return x, fmt.Errorf("read receipt: %w", err)
	}
	if err := json.Unmarshal(got, &x.receipt); err != nil {
		return x, fmt.Errorf("receipt: %q is not a receipt: %w", got, err)
	}
	x.total = time.Since(start)
	if err := checkReceipt(x.receipt, min(len(line), 1), int64(len(line))); err != nil {
		return x, fmt.Errorf("receipt: %w", err)
	}
	return x, nil
}

// errKind reduces an error of [exchange] to its step and cause, without
// addresses or ports, so that the errors of many connections group.
func errKind(err error) string {
	step, _, _ := strings.Cut(err.Error(), ": ")
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		return step + ": " + errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return step + ": timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return step + ": connection closed early"
	}
	return err.Error()
}

// setConnections records the connections mode's result and measures it
// against its goals.
func (r *Report) setConnections(res connectionsResult) {
	res.Goals = []goal{
		newGoal("gateway RSS per idle connection ≤ 16 KiB", 16<<10, true, kib),
		newGoal("plain connections ≥ 5,000/s", 5_000, false, perSec),
		newGoal("TLS handshakes ≥ 1,000/s (ECDSA P-256, full)", 1_000, false, perSec),
	}
	r.Goal = goal{Text: connGoalText, Met: true}
	for i, v := range []float64{res.Idle.BytesPerConn, res.Plain.PerSec, res.TLS.PerSec} {
		res.Goals[i].measure(v)
		r.Goal.Met = r.Goal.Met && res.Goals[i].Met
	}
	r.Connections = &res
}

// writeText writes what the connections mode measured, and its goals.
func (c *connectionsResult) writeText(b *strings.Builder, cpus int) {
	i, n := c.Idle, float64(c.IdleConns)
	fmt.Fprintf(b, "\n%-18s %s held open, accepted in %.1fs; gateway RSS %s → %s: %s per connection\n",
		"idle connections", thousands(int64(n)), i.AcceptSeconds, mib(i.RSSBefore), mib(i.RSSAfter), kib(i.BytesPerConn))
	if i.GoroutinesBefore >= 0 && i.GoroutinesAfter >= 0 {
		fmt.Fprintf(b, "%-18s gateway goroutines %s → %s (%.1f per connection)\n", "",
			thousands(int64(i.GoroutinesBefore)), thousands(int64(i.GoroutinesAfter)), float64(i.GoroutinesAfter-i.GoroutinesBefore)/n)
	} else {
		fmt.Fprintf(b, "%-18s gateway goroutines not known (the gateway serves no go_goroutines on /metrics)\n", "")
	}
	fmt.Fprintf(b, "%-18s all closed: every session ended in %.1fs, RSS %s, gateway still serving; peak RSS of the run %s\n", "",
		i.CloseSeconds, mib(i.RSSClosed), mib(c.GatewayPeakRSS))

	rates := []*rateResult{c.Plain, c.TLS}
	fmt.Fprintf(b, "\n%-10s %10s %10s %8s %9s %9s   (%d clients; connect → one line → half-close → receipt → close)\n",
		"rate", "conns/s", "ok", "failed", "p50", "p99", c.Clients)
	for _, rr := range rates {
		extra := ""
		if rr.HandshakeP50 > 0 {
			extra = fmt.Sprintf("   handshake p50 %s, p99 %s", millis(rr.HandshakeP50), millis(rr.HandshakeP99))
		}
		fmt.Fprintf(b, "%-10s %10s %10s %8s %9s %9s%s\n", rr.Name, thousands(int64(rr.PerSec)), thousands(rr.OK),
			thousands(rr.Attempted-rr.OK), millis(rr.P50), millis(rr.P99), extra)
	}
	for _, rr := range rates {
		fmt.Fprintf(b, "%-10s %s: %s connections in %.1fs, the gateway numbered %s, %s receipts ok, %s lines stored\n",
			"checked", rr.Name, thousands(rr.Attempted), rr.Seconds, thousands(rr.Accepted), thousands(rr.OK), thousands(rr.StoredLines))
		// The eight most frequent kinds, most frequent first.
		kinds := slices.SortedFunc(maps.Keys(rr.Errors), func(a, b string) int { return cmp.Compare(rr.Errors[b], rr.Errors[a]) })
		for _, k := range kinds[:min(len(kinds), 8)] {
			fmt.Fprintf(b, "%-10s %s: %s × %s\n", "errors", rr.Name, thousands(rr.Errors[k]), k)
		}
	}
	row := func(name string, cell func(*rateResult) string) {
		fmt.Fprintf(b, "%-24s %24s %24s\n", name, cell(c.Plain), cell(c.TLS))
	}
	cpu := func(seconds float64, rr *rateResult) string {
		return fmt.Sprintf("%.2f cores, %.0f µs/conn", seconds/rr.Seconds, perLine(seconds, int(rr.OK)))
	}
	b.WriteString("\n")
	row("CPU", func(rr *rateResult) string { return rr.Name })
	row("gateway", func(rr *rateResult) string { return cpu(rr.GatewayCPUSeconds, rr) })
	row("bench (clients + NATS)", func(rr *rateResult) string { return cpu(rr.BenchCPUSeconds, rr) })
	row("other (not these two)", func(rr *rateResult) string { return fmt.Sprintf("%.2f cores", rr.OtherCores) })
	row("machine busy", func(rr *rateResult) string { return fmt.Sprintf("%.0f%% of %d CPUs", rr.BusyPct, cpus) })
	for _, rr := range rates {
		if us := perLine(rr.GatewayCPUSeconds, int(rr.OK)); us > 0 {
			fmt.Fprintf(b, "CPU ceiling: the gateway alone, at %.0f µs per %s connection, would carry %s connections/s on %d CPUs; here the clients and NATS share them\n",
				us, rr.Name, thousands(int64(float64(cpus)*1e6/us)), cpus)
		}
		if rr.OtherCores > backgroundWarn {
			fmt.Fprintf(b, "WARNING: %.2f cores went to other processes or the kernel (its share of loopback TCP included) during %s; its rate is skewed low\n", rr.OtherCores, rr.Name)
		}
	}
	fmt.Fprintf(b, "\n%-46s %14s %8s   %s\n", "goal", "measured", "/goal", "verdict")
	for _, g := range c.Goals {
		fmt.Fprintf(b, "%-46s %14s %7.2f×   %s\n", g.Text, g.unit(g.Measured), g.Ratio, g.verdict())
	}
}
