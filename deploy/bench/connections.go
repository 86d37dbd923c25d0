package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
)

// The connections mode measures what a gateway costs per connection rather
// than per line: the memory an idle connection holds, and how many short
// connections (connect, one line, half-close, receipt, close) it serves
// per second, in plain TCP and with a full TLS handshake each. A receipt
// is written once JetStream has acknowledged the line, so no worker runs:
// lines stay in the stream.

// Goals of the connections mode: the most gateway RSS one idle connection
// may add, the plain connections per second to reach, and the TLS
// handshakes per second to reach with an ECDSA P-256 certificate and no
// session resumption.
const (
	goalIdleBytes   = 16 << 10
	goalPlainPerSec = 5_000
	goalTLSPerSec   = 1_000
	connGoalText    = "goals: ≤ 16 KiB gateway RSS per idle connection, ≥ 5,000 plain connections/s, ≥ 1,000 TLS handshakes/s (ECDSA P-256)"
)

// Timing and sizing of the connections mode.
const (
	// idleSettle is how long the gateway is left alone once every idle
	// connection is accepted, so each session has reached its first read
	// before RSS is read.
	idleSettle = time.Second
	// idleDialers is how many goroutines open the idle connections.
	idleDialers = 16
	// fdHeadroom is what the bench needs besides its client connections:
	// NATS, its clients, Postgres connections, files.
	fdHeadroom = 256
	// exchangeTimeout bounds one client connection, from connect to
	// receipt.
	exchangeTimeout = 10 * time.Second
	// maxErrorKinds is how many kinds of client errors the report lists.
	maxErrorKinds = 8
	// sourceAddrCount is how many loopback addresses the clients connect
	// from. A client closes first (it half-closes before the gateway
	// answers), so each of its connections holds its local port in
	// TIME_WAIT for a minute; one address has about 28,000 ephemeral
	// ports, 100 have enough for 46,000 connections a second.
	sourceAddrCount = 100
)

// connectionsResult is what the connections mode found and what with.
type connectionsResult struct {
	IdleConns       int     `json:"idle_conns"`
	Clients         int     `json:"clients"`
	DurationSeconds float64 `json:"duration_seconds"`
	// SourceAddrs are the clients' local addresses, 127.0.0.2 and up: all
	// of 127.0.0.0/8 is the loopback interface on Linux.
	SourceAddrs string `json:"source_addrs"`
	// MaxConnections is the GATEWAY_MAX_CONNECTIONS the gateway ran with
	// unless -env overrode it.
	MaxConnections int `json:"max_connections"`
	// OpenFiles and OpenFilesHard are the bench's limits on open files
	// (the soft one raised to the hard one), GatewayOpenFiles the
	// gateway's soft limit.
	OpenFiles        uint64 `json:"open_files"`
	OpenFilesHard    uint64 `json:"open_files_hard"`
	GatewayOpenFiles uint64 `json:"gateway_open_files"`
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute load when the mode
	// started.
	LoadAvg string `json:"load_avg"`
	// GatewayPeakRSS is the gateway's VmHWM at the end.
	GatewayPeakRSS int64 `json:"gateway_peak_rss_bytes"`

	Idle  idleResult  `json:"idle"`
	Plain *rateResult `json:"plain,omitempty"`
	TLS   *rateResult `json:"tls,omitempty"`

	Goals []goal `json:"goals"`
}

// idleResult is the gateway's memory with many idle connections open.
type idleResult struct {
	Conns int `json:"conns"`
	// AcceptSeconds runs from the first dial to the gateway holding every
	// connection open.
	AcceptSeconds float64 `json:"accept_seconds"`
	// RSSBefore and RSSAfter are the gateway's VmRSS before the first
	// connection and once every connection is accepted and has settled;
	// RSSClosed is after they are all closed again.
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	RSSClosed int64 `json:"rss_closed_bytes"`
	// BytesPerConn is (RSSAfter − RSSBefore) / Conns.
	BytesPerConn float64 `json:"bytes_per_conn"`
	// GoroutinesBefore and GoroutinesAfter are the gateway's go_goroutines
	// from its /metrics, or -1 when it serves none.
	GoroutinesBefore int `json:"goroutines_before"`
	GoroutinesAfter  int `json:"goroutines_after"`
	// CloseSeconds runs from closing the connections to the gateway
	// having ended every session; the gateway then still serves.
	CloseSeconds float64 `json:"close_seconds"`
}

// rateResult is what one connection rate measurement found.
type rateResult struct {
	// Name is "plain" or "TLS".
	Name    string `json:"name"`
	Clients int    `json:"clients"`
	// Seconds runs from the first connect to the last client's last
	// receipt.
	Seconds float64 `json:"seconds"`
	// Attempted connections, of which OK got a correct receipt and Failed
	// did not; Errors groups the failures by cause.
	Attempted int64        `json:"attempted"`
	OK        int64        `json:"ok"`
	Failed    int64        `json:"failed"`
	Errors    []errorCount `json:"errors,omitempty"`
	// PerSec is OK / Seconds.
	PerSec float64 `json:"per_sec"`
	// P50 and P99 are percentiles, in seconds, of a correct connection's
	// time from connect to receipt; HandshakeP50 and HandshakeP99 of its
	// time from connect to the end of the TLS handshake.
	P50          float64 `json:"p50_seconds"`
	P99          float64 `json:"p99_seconds"`
	HandshakeP50 float64 `json:"handshake_p50_seconds,omitempty"`
	HandshakeP99 float64 `json:"handshake_p99_seconds,omitempty"`
	// Protocol is the negotiated TLS version and key exchange.
	Protocol string `json:"protocol,omitempty"`
	// Accepted is how many connections the gateway numbered meanwhile
	// (from the connection numbers of two receipts around the
	// measurement), and StoredLines how many lines the ingest stream
	// gained.
	Accepted    int64 `json:"accepted"`
	StoredLines int64 `json:"stored_lines"`
	// CPU use during the measurement: the gateway, the bench process (the
	// clients and NATS), the machine, and the busy time of everything
	// else, in cores: other processes, and kernel work charged to no
	// process, such as part of the loopback TCP traffic.
	GatewayCPUSeconds float64 `json:"gateway_cpu_seconds"`
	GatewayCores      float64 `json:"gateway_cores"`
	BenchCPUSeconds   float64 `json:"bench_cpu_seconds"`
	BenchCores        float64 `json:"bench_cores"`
	BusyPct           float64 `json:"machine_busy_pct"`
	OtherCores        float64 `json:"other_cores"`
}

// errorCount is how many connections failed with one kind of error.
type errorCount struct {
	Kind  string `json:"kind"`
	Count int64  `json:"count"`
}

// gatewayCPUPerConn returns the gateway's CPU time per correct connection
// in microseconds.
func (r rateResult) gatewayCPUPerConn() float64 { return perLine(r.GatewayCPUSeconds, int(r.OK)) }

// connRun is one run of the connections mode in progress.
type connRun struct {
	b       *bench
	gateway *child
	// plainAddr, tlsAddr and healthAddr are where the gateway listens.
	plainAddr, tlsAddr, healthAddr string
	// tlsClient trusts the run's self-signed certificate.
	tlsClient *tls.Config
	// dialers connect from the source addresses, in turn.
	dialers []net.Dialer
	res     connectionsResult
}

// runConnections is the connections mode: idle memory, then the plain and
// the TLS connection rates, all against one gateway.
func runConnections(ctx context.Context, b *bench) error {
	cfg := b.cfg
	r := &connRun{b: b, dialers: make([]net.Dialer, sourceAddrCount)}
	for i := range r.dialers {
		r.dialers[i] = net.Dialer{Timeout: exchangeTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte((i+2)>>8), byte(i+2))}}
	}
	// The connection cap leaves room for the idle connections and, as a
	// client may connect again before the gateway has closed its last
	// connection, for every client twice and the probes.
	r.res = connectionsResult{
		IdleConns: cfg.IdleConns, Clients: cfg.Clients, DurationSeconds: cfg.Duration.Seconds(),
		SourceAddrs:    fmt.Sprintf("%s–%s", r.dialers[0].LocalAddr.(*net.TCPAddr).IP, r.dialers[len(r.dialers)-1].LocalAddr.(*net.TCPAddr).IP),
		MaxConnections: cfg.IdleConns + 2*cfg.Clients + 100, LoadAvg: "unknown",
	}
	if l, err := procFS().LoadAvg(); err == nil {
		r.res.LoadAvg = fmt.Sprintf("%.2f %.2f %.2f", l.Load1, l.Load5, l.Load15)
	}
	// Every client connection is a file: the soft limit goes up to the
	// hard one.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open files limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the open files limit to %d: %w", lim.Max, err)
	}
	r.res.OpenFiles, r.res.OpenFilesHard = lim.Cur, lim.Max
	if need := uint64(cfg.IdleConns + cfg.Clients + fdHeadroom); r.res.OpenFiles < need {
		return fmt.Errorf("-idle-conns %d needs about %d open files but this process may open %d (hard limit %d): lower -idle-conns or raise the hard limit (ulimit -Hn)",
			cfg.IdleConns, need, r.res.OpenFiles, r.res.OpenFilesHard)
	}
	if err := r.startGateway(ctx); err != nil {
		return err
	}
	var err error
	if r.res.Idle, err = r.measureIdle(ctx); err != nil {
		return fmt.Errorf("idle connections: %w", err)
	}
	for _, m := range []struct {
		name, addr string
		tls        *tls.Config
		res        **rateResult
	}{{"plain", r.plainAddr, nil, &r.res.Plain}, {"TLS", r.tlsAddr, r.tlsClient, &r.res.TLS}} {
		settle()
		rr, err := r.measureRate(ctx, m.name, m.addr, m.tls)
		if err != nil {
			return fmt.Errorf("%s connections: %w", m.name, err)
		}
		*m.res = &rr
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

// dialer returns the dialer of the i-th connection, going round the
// source addresses. It is safe for concurrent use.
func (r *connRun) dialer(i int) *net.Dialer { return &r.dialers[i%len(r.dialers)] }

// startGateway starts the gateway with a plain listener and a TLS
// listener with a fresh ECDSA P-256 certificate, and waits until it
// accepts connections on both.
func (r *connRun) startGateway(ctx context.Context) error {
	h, cfg := r.b.h, r.b.cfg
	addrs, err := freeAddrs(3)
	if err != nil {
		return err
	}
	r.plainAddr, r.healthAddr, r.tlsAddr = addrs[0], addrs[1], addrs[2]
	certFile, keyFile, err := r.writeCertificate(filepath.Join(h.dir, "tls"))
	if err != nil {
		return err
	}
	env := r.b.childEnv("GATEWAY_LISTEN="+r.plainAddr, "GATEWAY_HEALTH_ADDR="+r.healthAddr, "GATEWAY_INSTANCE=bench-gateway",
		"GATEWAY_MAX_CONNECTIONS="+strconv.Itoa(r.res.MaxConnections),
		"GATEWAY_TLS_LISTEN="+r.tlsAddr, "GATEWAY_TLS_CERT="+certFile, "GATEWAY_TLS_KEY="+keyFile)
	r.b.pr.step("starting the gateway on %s, TLS %s (%s); no workers: a receipt needs only JetStream's acknowledgement", r.plainAddr, r.tlsAddr, h.binaries.Gateway.Path)
	if r.gateway, err = r.b.startChild("gateway", h.binaries.Gateway.Path, env); err != nil {
		return err
	}
	// A connection (over TLS on the TLS listener) that sends nothing gets
	// an "ok" receipt; a refused one means not yet.
	for _, l := range []struct {
		what, addr string
		tls        *tls.Config
	}{{"gateway listening", r.plainAddr, nil}, {"TLS listener", r.tlsAddr, r.tlsClient}} {
		if err := poll(ctx, l.what, r.programs, func() (bool, error) {
			_, err := exchange(ctx, r.dialer(0), l.addr, l.tls, nil, bufio.NewReader(nil))
			var se *stageError
			if errors.As(err, &se) && se.stage == "connect" {
				return false, nil
			}
			return err == nil, err
		}); err != nil {
			return err
		}
	}
	p, err := procfs.NewProc(r.gateway.pid)
	var l procfs.ProcLimits
	if err == nil {
		l, err = p.Limits()
	}
	if err != nil {
		return fmt.Errorf("read limits of pid %d: %w", r.gateway.pid, err)
	}
	r.res.GatewayOpenFiles = min(l.OpenFiles, 1<<62) // unlimited is all ones
	if need := uint64(cfg.IdleConns + 64); r.res.GatewayOpenFiles < need {
		return fmt.Errorf("the gateway may open %d files, too few for -idle-conns %d: lower -idle-conns or raise the hard limit (ulimit -Hn)", r.res.GatewayOpenFiles, cfg.IdleConns)
	}
	return nil
}

// writeCertificate writes into dir a fresh self-signed ECDSA P-256
// certificate for 127.0.0.1 and its key, and makes the clients' TLS
// configuration trust only it, with no session cache, so every connection
// makes a full, verified handshake. It is valid for 90 days, so the
// gateway does not warn that it expires soon (shared/devkit/testcert's
// last an hour, and it needs a testing.TB).
func (r *connRun) writeCertificate(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "jetline bench gateway"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("create certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	r.tlsClient = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	err = errors.Join(os.MkdirAll(dir, 0o700),
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644),
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	if err != nil {
		return "", "", fmt.Errorf("write the certificate: %w", err)
	}
	return certFile, keyFile, nil
}

// measureIdle opens cfg.IdleConns connections that send nothing, waits
// until the gateway holds them all (its open files), and reads how much
// its resident set grew. Then it closes them, waits until the gateway has
// ended every session, and checks it still answers.
func (r *connRun) measureIdle(ctx context.Context) (idleResult, error) {
	pr, pid, n := r.b.pr, r.gateway.pid, r.b.cfg.IdleConns
	res := idleResult{Conns: n}
	// The open files must hold still for two polls, so that connections
	// of the readiness probes have ended, and their sessions with them.
	base, last := -1, -2
	if err := r.waitFiles(ctx, "the gateway's open files to settle", func(open int) bool {
		base, last = open, base
		return base == last
	}); err != nil {
		return res, err
	}
	res.GoroutinesBefore = r.goroutines(ctx)
	var err error
	if res.RSSBefore, _, err = rss(pid); err != nil {
		return res, err
	}
	pr.step("idle: opening %s connections from %s that send nothing (gateway RSS %s)", thousands(int64(n)), r.res.SourceAddrs, mib(res.RSSBefore))
	start := time.Now()
	conns := make([]net.Conn, n)
	defer closeConns(conns)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range idleDialers {
		g.Go(func() error {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c, err := r.dialer(i).DialContext(gctx, "tcp", r.plainAddr)
				if err != nil {
					return fmt.Errorf("open idle connection %d of %d: %w", i+1, n, err)
				}
				conns[i] = c
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
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
	res.GoroutinesAfter = r.goroutines(ctx)
	res.BytesPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(n)
	pr.step("idle: %s connections accepted in %.1fs; gateway RSS %s → %s, %.1f KiB per connection",
		thousands(int64(n)), res.AcceptSeconds, mib(res.RSSBefore), mib(res.RSSAfter), res.BytesPerConn/1024)

	start = time.Now()
	closeConns(conns)
	if err := r.waitFiles(ctx, "the gateway to end the sessions of the closed idle connections", func(open int) bool { return open <= base }); err != nil {
		return res, err
	}
	res.CloseSeconds = time.Since(start).Seconds()
	if res.RSSClosed, _, err = rss(pid); err != nil {
		return res, err
	}
	if _, err := r.probe(ctx); err != nil {
		return res, fmt.Errorf("after closing the idle connections: %w", err)
	}
	pr.step("idle: closed; the gateway ended every session in %.1fs and still serves (RSS %s)", res.CloseSeconds, mib(res.RSSClosed))
	return res, nil
}

// closeConns closes every connection of conns and forgets it; it is safe
// to call twice.
func closeConns(conns []net.Conn) {
	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
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

// goroutines returns the gateway's go_goroutines from its /metrics, or -1
// when it serves no such metric.
func (r *connRun) goroutines(ctx context.Context) int {
	if v, ok := scrapeSum(ctx, r.healthAddr, "go_goroutines"); ok {
		return int(v)
	}
	return -1
}

// probe makes a connection to the plain listener that sends nothing and
// returns the gateway's number for it, from its receipt. The gateway
// numbers connections as it accepts them, so two probes bracket how many
// it accepted in between.
func (r *connRun) probe(ctx context.Context) (uint64, error) {
	x, err := exchange(ctx, r.dialer(0), r.plainAddr, nil, nil, bufio.NewReader(nil))
	if err != nil {
		return 0, fmt.Errorf("probe connection to the gateway: %w", err)
	}
	return x.receipt.Conn, nil
}

// mark is the gateway's last connection number (see [connRun.probe]) and
// the lines the ingest stream holds, at one moment.
type mark struct{ conn, stored uint64 }

func (r *connRun) mark(ctx context.Context) (mark, error) {
	conn, err := r.probe(ctx)
	if err != nil {
		return mark{}, err
	}
	st, err := r.b.h.js.Stream(ctx, topology.StreamName)
	if err != nil {
		return mark{}, fmt.Errorf("read stream %s: %w", topology.StreamName, err)
	}
	return mark{conn, st.CachedInfo().State.Msgs}, nil
}

// measureRate runs cfg.Clients clients against addr for cfg.Duration, each
// opening one connection after the other (with a full TLS handshake when
// tlsCfg is set), sending one line, half-closing and reading the receipt.
// It fails when no connection succeeds, or when the stream's line count
// contradicts the receipts.
func (r *connRun) measureRate(ctx context.Context, name, addr string, tlsCfg *tls.Config) (rateResult, error) {
	cfg, pr := r.b.cfg, r.b.pr
	res := rateResult{Name: name, Clients: cfg.Clients}
	how := "connect"
	if tlsCfg != nil {
		how = "connect → full TLS handshake"
	}
	pr.step("%s: %d clients for %s, each connection: %s → one line → half-close → receipt → close", name, cfg.Clients, cfg.Duration, how)
	first, err := r.mark(ctx)
	if err != nil {
		return res, fmt.Errorf("before: %w", err)
	}
	before, err := sampleUsage(r.programs(), "")
	if err != nil {
		return res, err
	}
	tallies := make([]clientTally, cfg.Clients)
	var ok atomic.Int64
	var wg sync.WaitGroup
	deadline := before.at.Add(cfg.Duration)
	for i := range tallies {
		wg.Go(func() { tallies[i] = r.runClient(ctx, i, addr, tlsCfg, deadline, &ok) })
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(progressEvery)
	for waiting := true; waiting; {
		select {
		case now := <-tick.C:
			elapsed, n := now.Sub(before.at).Seconds(), ok.Load()
			pr.step("  %5.1fs  %s: %9s connections ok, %7s/s", elapsed, name, thousands(n), thousands(int64(float64(n)/elapsed)))
		case <-done:
			waiting = false
		}
	}
	tick.Stop()
	after, err := sampleUsage(r.programs(), "")
	if err == nil {
		err = cmp.Or(ctx.Err(), exited(r.programs()))
	}
	if err != nil {
		return res, err
	}
	last, err := r.mark(ctx)
	if err != nil {
		return res, fmt.Errorf("after: %w", err)
	}
	res.merge(tallies)
	res.Seconds = after.at.Sub(before.at).Seconds()
	res.PerSec = float64(res.OK) / res.Seconds
	res.Accepted = int64(last.conn) - int64(first.conn) - 1
	res.StoredLines = int64(last.stored) - int64(first.stored)
	u := usage(before, after, r.programs())
	res.GatewayCPUSeconds, res.GatewayCores = u[0].CPUSeconds, u[0].Cores
	res.BenchCPUSeconds, res.BenchCores = u[1].CPUSeconds, u[1].Cores
	res.BusyPct, _ = busy(before.machine, after.machine)
	res.OtherCores = max(0, res.BusyPct/100*float64(r.b.report.Machine.CPUs)-res.GatewayCores-res.BenchCores)
	pr.step("%s: %s connections/s, %s ok, %s failed in %.1fs; p50 %s, p99 %s; gateway %.0f µs CPU per connection",
		name, thousands(int64(res.PerSec)), thousands(res.OK), thousands(res.Failed), res.Seconds,
		seconds(res.P50), seconds(res.P99), res.gatewayCPUPerConn())
	return res, res.check()
}

// check reports what makes the measurement meaningless: no connection
// succeeded, or the ingest stream gained fewer lines than the receipts
// acknowledged, or more than were sent.
func (r rateResult) check() error {
	switch {
	case r.OK == 0 && len(r.Errors) > 0:
		return fmt.Errorf("no connection succeeded; %d failed with %s", r.Errors[0].Count, r.Errors[0].Kind)
	case r.OK == 0:
		return errors.New("no connection was made")
	case r.StoredLines < r.OK:
		return fmt.Errorf("%d receipts acknowledged a line but the stream gained only %d lines", r.OK, r.StoredLines)
	case r.StoredLines > r.Attempted:
		return fmt.Errorf("the stream gained %d lines from %d connections of one line each", r.StoredLines, r.Attempted)
	}
	return nil
}

// clientTally is what one client saw.
type clientTally struct {
	attempted, ok int64
	// total and handshake are the times of correct connections, in
	// seconds.
	total, handshake []float64
	errs             map[string]int64
	protocol         string
}

// runClient makes connections one after the other until deadline. Each
// sends one line naming the client and its sequence number.
func (r *connRun) runClient(ctx context.Context, id int, addr string, tlsCfg *tls.Config, deadline time.Time, ok *atomic.Int64) clientTally {
	t := clientTally{errs: map[string]int64{}}
	br := bufio.NewReaderSize(nil, 1024)
	var line []byte
	for seq := 0; ctx.Err() == nil && time.Now().Before(deadline); seq++ {
		line = fmt.Appendf(line[:0], `{"bench":"connections","client":%d,"seq":%d}`+"\n", id, seq)
		x, err := exchange(ctx, r.dialer(id+seq*r.b.cfg.Clients), addr, tlsCfg, line, br)
		t.attempted++
		if err != nil {
			if ctx.Err() == nil {
				t.errs[errKind(err)]++
			}
			continue
		}
		t.ok++
		ok.Add(1)
		t.total = append(t.total, x.total.Seconds())
		if tlsCfg != nil {
			t.handshake = append(t.handshake, x.handshake.Seconds())
			t.protocol = x.protocol
		}
	}
	return t
}

// merge adds up the clients' tallies into r.
func (r *rateResult) merge(ts []clientTally) {
	var total, handshake []float64
	errs := map[string]int64{}
	for _, t := range ts {
		r.Attempted += t.attempted
		r.OK += t.ok
		total = append(total, t.total...)
		handshake = append(handshake, t.handshake...)
		for k, n := range t.errs {
			errs[k] += n
			r.Failed += n
		}
		r.Protocol = cmp.Or(t.protocol, r.Protocol)
	}
	if len(total) > 0 {
		r.P50, r.P99 = percentile(total, 0.5), percentile(total, 0.99)
	}
	if len(handshake) > 0 {
		r.HandshakeP50, r.HandshakeP99 = percentile(handshake, 0.5), percentile(handshake, 0.99)
	}
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		r.Errors = append(r.Errors, errorCount{Kind: k, Count: errs[k]})
	}
	slices.SortStableFunc(r.Errors, func(a, b errorCount) int { return cmp.Compare(b.Count, a.Count) })
	r.Errors = r.Errors[:min(len(r.Errors), maxErrorKinds)]
}

// exchanged is one correct connection.
type exchanged struct {
	receipt gateway.Receipt
	// total runs from connect to receipt, handshake from connect to the
	// end of the TLS handshake.
	total, handshake time.Duration
	// protocol is the TLS version and key exchange.
	protocol string
}

// stageError is a connection's error with the step it failed at.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// exchange makes one connection as ncat would: connect (and, with tlsCfg,
// a TLS handshake), write line, half-close, read the receipt, close. It
// fails unless the receipt says the line, or nothing when line is empty,
// was stored. br is reused to read the receipt.
func exchange(ctx context.Context, d *net.Dialer, addr string, tlsCfg *tls.Config, line []byte, br *bufio.Reader) (exchanged, error) {
	var x exchanged
	start := time.Now()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return x, &stageError{"connect", err}
	}
	defer raw.Close()
	if err := raw.SetDeadline(start.Add(exchangeTimeout)); err != nil {
		return x, &stageError{"connect", err}
	}
	conn, closeWrite := raw, raw.(*net.TCPConn).CloseWrite
	if tlsCfg != nil {
		tc := tls.Client(raw, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return x, &stageError{"TLS handshake", err}
		}
		x.handshake = time.Since(start)
		st := tc.ConnectionState()
		x.protocol = tls.VersionName(st.Version) + ", " + st.CurveID.String()
		// CloseWrite of a TLS connection sends close_notify, which the
		// gateway reads as the end of the input.
		conn, closeWrite = tc, tc.CloseWrite
	}
	if len(line) > 0 {
		if _, err := conn.Write(line); err != nil {
			return x, &stageError{"write", err}
		}
	}
	if err := closeWrite(); err != nil {
		return x, &stageError{"half-close", err}
	}
	br.Reset(conn)
	got, err := br.ReadSlice('\n')
	if err != nil {
		return x, &stageError{"read receipt", err}
	}
	if err := json.Unmarshal(got, &x.receipt); err != nil {
		return x, &stageError{"receipt", fmt.Errorf("%q is not a receipt: %w", got, err)}
	}
	if err := checkReceipt(x.receipt, min(len(line), 1), int64(len(line))); err != nil {
		return x, &stageError{"receipt", err}
	}
	x.total = time.Since(start)
	return x, nil
}

// errKind reduces err to the step it failed at and its cause, without
// addresses or ports, so that the errors of many connections group.
func errKind(err error) string {
	stage := "connection"
	var se *stageError
	if errors.As(err, &se) {
		stage = se.stage
	}
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		return stage + ": " + errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return stage + ": timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return stage + ": connection closed early"
	}
	return err.Error()
}
