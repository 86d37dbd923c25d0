package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestRunConnections runs the connections mode on a small scale, building
// the gateway from source, and checks that the report is complete and its
// counts agree: every connection the clients made was accepted, got a
// receipt and stored its line. Speed is not checked.
func TestRunConnections(t *testing.T) {
	r, stdout, stderr := runReport(t, "-mode", "connections", "-idle-conns", "200", "-clients", "4", "-duration", "1s")
	c := r.Connections
	if c == nil {
		t.Fatalf("no connections result:\n%s", stdout)
	}
	if r.Raw != nil || r.E2E != nil || r.Corpus.Lines != 0 {
		t.Errorf("the connections mode measured lines: raw %+v, e2e %+v, corpus %+v", r.Raw, r.E2E, r.Corpus)
	}
	i := c.Idle
	if i.Conns != 200 || i.RSSBefore <= 0 || i.RSSAfter <= 0 || i.RSSClosed <= 0 || i.AcceptSeconds <= 0 || i.CloseSeconds <= 0 {
		t.Errorf("idle = %+v", i)
	}
	if i.BytesPerConn != float64(i.RSSAfter-i.RSSBefore)/200 {
		t.Errorf("bytes per connection %v, from RSS %d → %d", i.BytesPerConn, i.RSSBefore, i.RSSAfter)
	}
	if (i.GoroutinesBefore < 0) != (i.GoroutinesAfter < 0) || i.GoroutinesBefore >= 0 && i.GoroutinesAfter < i.GoroutinesBefore+200 {
		t.Errorf("goroutines %d → %d with 200 connections open", i.GoroutinesBefore, i.GoroutinesAfter)
	}
	if c.OpenFiles < 200 || c.OpenFiles != c.OpenFilesHard || c.GatewayOpenFiles < 200 || c.GatewayPeakRSS < i.RSSAfter {
		t.Errorf("limits and peak: %+v", c)
	}

	checkRate := func(name string, rr *rateResult) {
		t.Helper()
		if rr == nil {
			t.Fatalf("no %s result:\n%s", name, stdout)
		}
		if rr.Name != name || rr.Clients != 4 || rr.OK == 0 || rr.PerSec <= 0 || rr.Seconds < 1 {
			t.Errorf("%s = %+v", name, rr)
		}
		if rr.Failed != 0 || len(rr.Errors) != 0 || rr.Attempted != rr.OK {
			t.Errorf("%s: %d of %d connections failed: %v", name, rr.Failed, rr.Attempted, rr.Errors)
		}
		if rr.Accepted != rr.OK || rr.StoredLines != rr.OK {
			t.Errorf("%s: gateway accepted %d, %d receipts ok, %d lines stored; want all equal", name, rr.Accepted, rr.OK, rr.StoredLines)
		}
		if rr.P50 <= 0 || rr.P99 < rr.P50 || rr.GatewayCPUSeconds <= 0 || rr.BenchCPUSeconds <= 0 {
			t.Errorf("%s: p50 %v, p99 %v, gateway CPU %v, bench CPU %v", name, rr.P50, rr.P99, rr.GatewayCPUSeconds, rr.BenchCPUSeconds)
		}
	}
	checkRate("plain", c.Plain)
	checkRate("TLS", c.TLS)
	if c.TLS != nil && (c.TLS.HandshakeP50 <= 0 || c.TLS.HandshakeP50 > c.TLS.P50 || !strings.HasPrefix(c.TLS.Protocol, "TLS 1.")) {
		t.Errorf("TLS handshake p50 %v (connection p50 %v), protocol %q", c.TLS.HandshakeP50, c.TLS.P50, c.TLS.Protocol)
	}

	if len(c.Goals) != 3 {
		t.Fatalf("goals = %+v", c.Goals)
	}
	for _, g := range c.Goals[:2] {
		if g.Measured <= 0 || g.Ratio != g.Measured/g.Goal || g.Note != "" {
			t.Errorf("goal %+v", g)
		}
	}
	if r.Goal.Text != connGoalText {
		t.Errorf("goal text %q", r.Goal.Text)
	}
	for _, want := range []string{"idle connections", "per connection", "plain", "checked", "gateway RSS per idle connection ≤ 16 KiB",
		"plain connections ≥ 5,000/s", "TLS handshakes ≥ 1,000/s", "load average", "no workers"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("text report lacks %q:\n%s", want, stderr)
		}
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}

func TestConnectionsFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-mode", "connections"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IdleConns != DefaultIdleConns || cfg.Clients != DefaultClients || cfg.Duration != DefaultDuration {
		t.Errorf("defaults = %+v", cfg)
	}
	for _, args := range [][]string{{"-idle-conns", "0"}, {"-clients", "0"}, {"-duration", "500ms"}} {
		_, err := parseFlags(append([]string{"-mode", "connections"}, args...))
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("parseFlags(%q) = %v, want an error naming %s", args, err, args[0])
		}
	}
}

func TestGoalVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		goal     float64
		atMost   bool
		measured float64
		met      bool
	}{
		{16 << 10, true, 6 << 10, true},
		{16 << 10, true, 20 << 10, false},
		{5000, false, 5200, true},
		{5000, false, 4000, false},
	}
	for _, tt := range tests {
		g := newGoal("g", tt.goal, tt.atMost, perSec)
		g.measure(tt.measured)
		if g.Met != tt.met || g.Ratio != tt.measured/tt.goal {
			t.Errorf("goal %v (at most %v) measured %v: met %v, ratio %v", tt.goal, tt.atMost, tt.measured, g.Met, g.Ratio)
		}
	}
}

func sampleConnections(t *testing.T) *Report {
	t.Helper()
	cfg, err := parseFlags([]string{"-mode", "connections"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := newReport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.setConnections(connectionsResult{
		IdleConns: 10_000, Clients: 32, DurationSeconds: 10, SourceAddrs: "127.0.0.2–127.0.0.101",
		OpenFiles: 20_000, OpenFilesHard: 20_000, GatewayOpenFiles: 20_000, LoadAvg: "1.00 0.50 0.25",
		Idle: idleResult{Conns: 10_000, RSSBefore: 20 << 20, RSSAfter: 20<<20 + 10_000*6<<10, BytesPerConn: 6 << 10,
			GoroutinesBefore: -1, GoroutinesAfter: -1},
		Plain: &rateResult{Name: "plain", Clients: 32, Seconds: 10, Attempted: 42_000, OK: 41_990, Failed: 10,
			Errors: []errorCount{{Kind: "connect: connection refused", Count: 10}}, PerSec: 4_199, P50: 0.0012, P99: 0.0085,
			Accepted: 41_990, StoredLines: 41_990, GatewayCPUSeconds: 8.4, GatewayCores: 0.84, BusyPct: 100, OtherCores: 0.5},
	})
	return r
}

func TestConnectionsReportText(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleConnections(t).writeText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"mode connections", "load average 1.00 0.50 0.25", "6.0 KiB per connection",
		"goroutines not known", "4,199", "1.2ms", "8.5ms", "10 × connect: connection refused",
		"200 µs/conn", "carry 9,997 connections/s", "WARNING", "not measured (not run)",
		"6.0 KiB    0.38×   met", "4,199/s    0.84×   missed"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestRateCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    rateResult
		want string
	}{
		{"consistent", rateResult{Attempted: 10, OK: 9, Failed: 1, StoredLines: 10}, ""},
		{"nothing", rateResult{}, "no connection was made"},
		{"all failed", rateResult{Attempted: 3, Failed: 3, Errors: []errorCount{{"connect: connection refused", 3}}}, "connection refused"},
		{"lost lines", rateResult{Attempted: 10, OK: 10, StoredLines: 9}, "gained only 9"},
		{"extra lines", rateResult{Attempted: 10, OK: 10, StoredLines: 11}, "gained 11"},
	}
	for _, tt := range tests {
		err := tt.r.check()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: check() = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestErrKind(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{Port: 4000}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		err  error
		want string
	}{
		{&stageError{"connect", refused}, "connect: connection refused"},
		{&stageError{"read receipt", io.EOF}, "read receipt: connection closed early"},
		{&stageError{"read receipt", os.ErrDeadlineExceeded}, "read receipt: timed out"},
		{&stageError{"receipt", errors.New(`status "error"`)}, `receipt: status "error"`},
	}
	for _, tt := range tests {
		if got := errKind(tt.err); got != tt.want {
			t.Errorf("errKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestSources(t *testing.T) {
	t.Parallel()
	s := newSources(3)
	if s.String() != "127.0.0.2–127.0.0.4" {
		t.Errorf("sources = %s", s)
	}
	if got := s.dialer(4).LocalAddr.String(); got != "127.0.0.3:0" {
		t.Errorf("dialer(4) from %s", got)
	}
	if got := newSources(300).String(); got != "127.0.0.2–127.0.1.45" {
		t.Errorf("300 sources = %s", got)
	}
}

// TestCertificate serves TLS with the written certificate and key and
// checks that the client configuration makes a verified, full handshake.
func TestCertificate(t *testing.T) {
	t.Parallel()
	cert, err := writeCertificate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprint(c, line)
			c.Close()
		}
	}()
	cfg := cert.clientConfig()
	for range 2 {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		st := c.ConnectionState()
		if st.DidResume || len(st.VerifiedChains) != 1 || st.PeerCertificates[0].PublicKeyAlgorithm.String() != "ECDSA" {
			t.Errorf("resumed %v, verified chains %d, key %v", st.DidResume, len(st.VerifiedChains), st.PeerCertificates[0].PublicKeyAlgorithm)
		}
		fmt.Fprint(c, "hello\n")
		got, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || got != "hello\n" {
			t.Errorf("echo = %q, %v", got, err)
		}
	}
}

func TestGoroutines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		exposition string
		want       int
	}{
		{"# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\n" +
			"go_goroutines 20017\n# TYPE go_threads gauge\ngo_threads 9\n", 20017},
		{"# TYPE go_threads gauge\ngo_threads 9\n", -1}, // no go_goroutines
		{"not an exposition {\n", -1},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, tc.exposition)
		}))
		r := &connRun{healthAddr: strings.TrimPrefix(srv.URL, "http://")}
		if got := r.goroutines(t.Context()); got != tc.want {
			t.Errorf("goroutines from %q = %d, want %d", tc.exposition, got, tc.want)
		}
		srv.Close()
	}
}
