package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

// take returns the records so far as message plus attributes, and forgets
// them.
func (r *recorder) take() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, rec := range r.records {
		m := map[string]any{"msg": rec.Message}
		rec.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.Any()
			return true
		})
		out = append(out, m)
	}
	r.records = nil
	return out
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRefusalLogOncePerPeerPerMinute(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newRefusalLog(slog.New(rec), clock.now)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	errNo := errors.New("no")

	expect := func(step string, want ...map[string]any) {
		t.Helper()
		got := rec.take()
		if len(got) != len(want) {
			t.Fatalf("%s: logged %v, want %d lines %v", step, got, len(want), want)
		}
		for i, w := range want {
			for k, v := range w {
				if got[i][k] != v {
					t.Errorf("%s: line %d has %s = %v, want %v (line %v)", step, i, k, got[i][k], v, got[i])
				}
			}
			if _, ok := w["refused_unlogged_since"]; !ok && got[i]["refused_unlogged_since"] != nil {
				t.Errorf("%s: line %d counts unlogged refusals, want none: %v", step, i, got[i])
			}
		}
	}

	l.note(RefusedAllowlist, a, errNo)
	for range 5 {
		l.note(RefusedPerIP, a, errNo)
	}
	expect("first refusals of a", map[string]any{"msg": "connection refused", "peer": "192.0.2.1", "reason": RefusedAllowlist})
	l.note(RefusedTLSHandshake, b, errNo)
	expect("first refusal of b", map[string]any{"msg": "connection refused", "peer": "2001:db8::1", "reason": RefusedTLSHandshake})

	clock.advance(59 * time.Second)
	l.note(RefusedPerIP, a, errNo)
	expect("a within the minute")

	clock.advance(time.Second)
	l.note(RefusedPerIP, a, errNo)
	expect("a a minute later", map[string]any{"peer": "192.0.2.1", "reason": RefusedPerIP, "refused_unlogged_since": uint64(6)})

	// b, quiet for a minute, was forgotten; it starts afresh.
	l.note(RefusedAllowlist, b, errNo)
	for range 3 {
		l.note(RefusedAllowlist, b, errNo)
	}
	expect("b again", map[string]any{"peer": "2001:db8::1"})

	// Both quiet for over a minute: the sweep reports b's unlogged three.
	clock.advance(65 * time.Second)
	l.note(RefusedAllowlist, a, errNo)
	expect("after a quiet minute",
		map[string]any{"msg": "connections refused and not logged, from peers not refused for a minute or too many to track", "refused_unlogged": uint64(3)},
		map[string]any{"peer": "192.0.2.1"})
	if len(l.peers) != 1 {
		t.Fatalf("log remembers %d peers, want 1 (a)", len(l.peers))
	}
}

func TestRefusalLogBoundsPeers(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := newRefusalLog(slog.New(rec), clock.now)
	base := netip.MustParseAddr("10.0.0.0")
	peer := base
	for range refusalLogPeers + 10 {
		peer = peer.Next()
		l.note(RefusedAllowlist, peer, nil)
	}
	if n := len(rec.take()); n != refusalLogPeers {
		t.Fatalf("logged %d refusals of distinct peers, want %d (the most remembered)", n, refusalLogPeers)
	}
	if len(l.peers) != refusalLogPeers {
		t.Fatalf("log remembers %d peers, want at most %d", len(l.peers), refusalLogPeers)
	}
	clock.advance(time.Minute)
	l.note(RefusedAllowlist, base, nil)
	got := rec.take()
	if len(got) != 2 || got[0]["refused_unlogged"] != uint64(10) {
		t.Fatalf("after a minute logged %v, want the 10 untracked refusals summed, then the new one", got)
	}
	if len(l.peers) != 1 {
		t.Fatalf("log remembers %d peers after the sweep, want 1", len(l.peers))
	}
}

func TestGuard(t *testing.T) {
	t.Parallel()
	allow, err := ParseAllowCIDRs("10.0.0.0/8,192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(allow, 2, newRefusalLog(testenv.Logger(t), time.Now))
	in, in2, out := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("192.0.2.8")
	if reason, _ := g.admit(out); reason != RefusedAllowlist {
		t.Fatalf("admit(%s) reason = %q, want %q", out, reason, RefusedAllowlist)
	}
	for range 2 {
		if _, err := g.admit(in); err != nil {
			t.Fatalf("admit(%s) = %v within the cap", in, err)
		}
	}
	if reason, _ := g.admit(in); reason != RefusedPerIP {
		t.Fatalf("third admit(%s) reason = %q, want %q", in, reason, RefusedPerIP)
	}
	if _, err := g.admit(in2); err != nil {
		t.Fatalf("admit(%s) = %v; the cap is per address", in2, err)
	}
	g.leave(in)
	if _, err := g.admit(in); err != nil {
		t.Fatalf("admit(%s) after one left = %v", in, err)
	}
	g.leave(in)
	g.leave(in)
	g.leave(in2)
	if len(g.open) != 0 {
		t.Fatalf("guard still counts %v after every connection left", g.open)
	}
}

func TestRaiseOpenFilesLimit(t *testing.T) {
	t.Parallel()
	before, after, hard, err := raiseOpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	if after != hard || after < before {
		t.Fatalf("open files limit %d → %d, hard limit %d; want it raised to the hard limit", before, after, hard)
	}

	rec := &recorder{}
	RaiseOpenFilesLimit(1, slog.New(rec))
	if got := rec.take(); len(got) != 1 || got[0]["msg"] != "open files limit" || got[0]["open_files_limit"] != after {
		t.Fatalf("logged %v, want only the limit", got)
	}
	if after >= 1<<40 {
		return // no GATEWAY_MAX_CONNECTIONS exceeds an unlimited limit
	}
	RaiseOpenFilesLimit(int(after), slog.New(rec))
	if got := rec.take(); len(got) != 2 || got[1]["max_connections"] != int64(after) {
		t.Fatalf("logged %v, want the limit and a warning that %d connections do not fit", got, after)
	}
}
