package main

import (
	"strings"
	"testing"
)

// TestRunConnections runs the connections mode on a small scale, building
// the gateway from source, and checks that the report is complete and its
// counts agree: every connection the clients made was accepted, got a
// receipt and stored its line. Speed is not checked.
func TestRunConnections(t *testing.T) {
	r, stdout, stderr := runReport(t, "-mode", "connections", "-idle-conns", "200", "-clients", "4", "-duration", "1s")
	c := r.Connections
	if c == nil || c.Plain == nil || c.TLS == nil || len(c.Goals) != 3 {
		t.Fatalf("connections result incomplete:\n%s", stdout)
	}
	if r.Raw != nil || r.E2E != nil || r.Corpus.Lines != 0 {
		t.Errorf("the connections mode measured lines: raw %+v, e2e %+v, corpus %+v", r.Raw, r.E2E, r.Corpus)
	}
	i := c.Idle
	if i.RSSBefore <= 0 || i.RSSAfter <= 0 || i.RSSClosed <= 0 || i.AcceptSeconds <= 0 || i.CloseSeconds <= 0 ||
		i.BytesPerConn != float64(i.RSSAfter-i.RSSBefore)/200 {
		t.Errorf("idle = %+v", i)
	}
	if (i.GoroutinesBefore < 0) != (i.GoroutinesAfter < 0) || i.GoroutinesBefore >= 0 && i.GoroutinesAfter < i.GoroutinesBefore+200 {
		t.Errorf("goroutines %d → %d with 200 connections open", i.GoroutinesBefore, i.GoroutinesAfter)
	}
	if c.IdleConns != 200 || c.OpenFiles < 200 || c.OpenFiles != c.OpenFilesHard || c.GatewayOpenFiles < 200 || c.GatewayPeakRSS < i.RSSAfter {
		t.Errorf("limits and peak: %+v", c)
	}
	for name, rr := range map[string]*rateResult{"plain": c.Plain, "TLS": c.TLS} {
		if rr.Name != name || rr.OK == 0 || rr.PerSec <= 0 || rr.Seconds < 1 || rr.P50 <= 0 || rr.P99 < rr.P50 ||
			rr.GatewayCPUSeconds <= 0 || rr.BenchCPUSeconds <= 0 {
			t.Errorf("%s = %+v", name, rr)
		}
		if rr.Attempted != rr.OK || len(rr.Errors) != 0 || rr.Accepted != rr.OK || rr.StoredLines != rr.OK {
			t.Errorf("%s: %d connections, gateway accepted %d, %d receipts ok, %d lines stored, errors %v; want all equal, none",
				name, rr.Attempted, rr.Accepted, rr.OK, rr.StoredLines, rr.Errors)
		}
	}
	if c.TLS.HandshakeP50 <= 0 || c.TLS.HandshakeP50 > c.TLS.P50 || !strings.HasPrefix(c.TLS.Protocol, "TLS 1.") {
		t.Errorf("TLS handshake p50 %v (connection p50 %v), protocol %q", c.TLS.HandshakeP50, c.TLS.P50, c.TLS.Protocol)
	}
	for _, g := range c.Goals {
		if g.Measured <= 0 || g.Ratio != g.Measured/g.Goal || g.Note != "" || g.Met != (g.Measured <= g.Goal == g.AtMost) {
			t.Errorf("goal %+v", g)
		}
	}
	if r.Goal.Text != connGoalText || r.Goal.Met != (c.Goals[0].Met && c.Goals[1].Met && c.Goals[2].Met) {
		t.Errorf("goal %+v", r.Goal)
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

func TestRateCheck(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		r    rateResult
		want string
	}{
		{rateResult{Attempted: 10, OK: 9, StoredLines: 10}, ""},
		{rateResult{}, "no connection was made"},
		{rateResult{Attempted: 3, Errors: map[string]int64{"connect: connection refused": 3}}, "connection refused"},
		{rateResult{Attempted: 10, OK: 10, StoredLines: 9}, "gained only 9"},
		{rateResult{Attempted: 10, OK: 10, StoredLines: 11}, "gained 11"},
	} {
		if err := tt.r.check(); tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: check() = %v, want %q", tt.r, err, tt.want)
		}
	}
}
