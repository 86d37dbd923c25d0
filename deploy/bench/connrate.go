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
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jetline/jetline/gateway"
)

// exchangeTimeout bounds one client connection, from connect to receipt.
const exchangeTimeout = 10 * time.Second

// maxErrorKinds is how many kinds of client errors the report lists.
const maxErrorKinds = 8

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
func (r rateResult) gatewayCPUPerConn() float64 {
	if r.OK == 0 {
		return 0
	}
	return r.GatewayCPUSeconds / float64(r.OK) * 1e6
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

	firstConn, err := r.probe(ctx)
	if err != nil {
		return res, fmt.Errorf("before: %w", err)
	}
	storedBefore, err := r.storedLines(ctx)
	if err != nil {
		return res, err
	}
	before, err := r.sample()
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
	r.showProgress(&wg, name, before.at, &ok)
	after, err := r.sample()
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if err := r.exited(); err != nil {
		return res, err
	}
	lastConn, err := r.probe(ctx)
	if err != nil {
		return res, fmt.Errorf("after: %w", err)
	}
	storedAfter, err := r.storedLines(ctx)
	if err != nil {
		return res, err
	}

	res.merge(tallies)
	res.Seconds = after.at.Sub(before.at).Seconds()
	res.PerSec = float64(res.OK) / res.Seconds
	res.Accepted = int64(lastConn) - int64(firstConn) - 1
	res.StoredLines = int64(storedAfter) - int64(storedBefore)
	res.account(before, after, r.b.report.Machine.CPUs)
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

// showProgress prints the connections made every progressEvery until wg
// is done.
func (r *connRun) showProgress(wg *sync.WaitGroup, name string, start time.Time, ok *atomic.Int64) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			elapsed := now.Sub(start).Seconds()
			n := ok.Load()
			r.b.pr.step("  %5.1fs  %s: %9s connections ok, %7s/s", elapsed, name, thousands(n), thousands(int64(float64(n)/elapsed)))
		}
	}
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
		x, err := exchange(ctx, r.srcs.dialer(id+seq*r.b.cfg.Clients), addr, tlsCfg, line, br)
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
		if t.protocol != "" {
			r.Protocol = t.protocol
		}
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

// connSample is the CPU time used so far by the gateway and the bench
// process, and the machine's.
type connSample struct {
	at             time.Time
	gateway, bench time.Duration
	machine        machineTicks
}

func (r *connRun) sample() (connSample, error) {
	var s connSample
	var err error
	if s.machine, err = readMachineTicks(); err != nil {
		return s, err
	}
	s.at = time.Now()
	if s.gateway, err = cpuTime(r.gateway.pid); err != nil {
		return s, err
	}
	if s.bench, err = cpuTime(os.Getpid()); err != nil {
		return s, err
	}
	return s, nil
}

// account fills in the CPU use between two samples.
func (r *rateResult) account(before, after connSample, cpus int) {
	window := after.at.Sub(before.at).Seconds()
	r.GatewayCPUSeconds = (after.gateway - before.gateway).Seconds()
	r.BenchCPUSeconds = (after.bench - before.bench).Seconds()
	r.GatewayCores = r.GatewayCPUSeconds / window
	r.BenchCores = r.BenchCPUSeconds / window
	r.BusyPct, _ = busy(before.machine, after.machine)
	r.OtherCores = max(0, r.BusyPct/100*float64(cpus)-r.GatewayCores-r.BenchCores)
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
	lines := 0
	if len(line) > 0 {
		lines = 1
	}
	if err := checkReceipt(x.receipt, lines, int64(len(line))); err != nil {
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

// probe makes a connection to the plain listener that sends nothing and
// returns the gateway's number for it, from its receipt. The gateway
// numbers connections as it accepts them, so two probes bracket how many
// it accepted in between.
func (r *connRun) probe(ctx context.Context) (uint64, error) {
	x, err := exchange(ctx, r.srcs.dialer(0), r.plainAddr, nil, nil, bufio.NewReader(nil))
	if err != nil {
		return 0, fmt.Errorf("probe connection to the gateway: %w", err)
	}
	return x.receipt.Conn, nil
}

// sourceAddrCount is how many loopback addresses the clients connect
// from. A client closes first (it half-closes before the gateway
// answers), so each of its connections holds its local port in TIME_WAIT
// for a minute; one address has about 28,000 ephemeral ports, 100 have
// enough for 46,000 connections a second.
const sourceAddrCount = 100

// sources are the clients' local addresses, 127.0.0.2 and up: all of
// 127.0.0.0/8 is the loopback interface on Linux.
type sources struct {
	dialers []net.Dialer
}

func newSources(n int) *sources {
	s := &sources{dialers: make([]net.Dialer, n)}
	for i := range s.dialers {
		s.dialers[i] = net.Dialer{Timeout: exchangeTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte((i+2)>>8), byte(i+2))}}
	}
	return s
}

// dialer returns the dialer of the i-th connection, going round the
// addresses. It is safe for concurrent use.
func (s *sources) dialer(i int) *net.Dialer { return &s.dialers[i%len(s.dialers)] }

func (s *sources) String() string {
	first := s.dialers[0].LocalAddr.(*net.TCPAddr).IP
	last := s.dialers[len(s.dialers)-1].LocalAddr.(*net.TCPAddr).IP
	return fmt.Sprintf("%s–%s", first, last)
}
