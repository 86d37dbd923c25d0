package main

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// idleResult is the gateway's memory with many idle connections open.
type idleResult struct {
	Conns int `json:"conns"`
	// AcceptSeconds runs from the first dial to the gateway holding every
	// connection open.
	AcceptSeconds float64 `json:"accept_seconds"`
	// RSSBefore and RSSAfter are the gateway's resident set (VmRSS)
	// before the first connection and once every connection is accepted
	// and has settled; RSSClosed is after they are all closed again.
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

// measureIdle opens cfg.IdleConns connections that send nothing, waits
// until the gateway holds them all, and reads how much its resident set
// grew. Then it closes them, waits until the gateway has ended every
// session, and checks it still answers.
func (r *connRun) measureIdle(ctx context.Context) (idleResult, error) {
	pr, pid, n := r.b.pr, r.gateway.pid, r.b.cfg.IdleConns
	res := idleResult{Conns: n, GoroutinesBefore: r.goroutines(ctx)}
	base, err := r.steadyFiles(ctx)
	if err != nil {
		return res, err
	}
	if res.RSSBefore, err = currentRSS(pid); err != nil {
		return res, err
	}

	pr.step("idle: opening %s connections from %s that send nothing (gateway RSS %s)", thousands(int64(n)), r.srcs, mib(res.RSSBefore))
	start := time.Now()
	conns, err := r.openIdle(ctx, n)
	defer closeConns(conns)
	if err != nil {
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
	if res.RSSAfter, err = currentRSS(pid); err != nil {
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
	if res.RSSClosed, err = currentRSS(pid); err != nil {
		return res, err
	}
	if _, err := r.probe(ctx); err != nil {
		return res, fmt.Errorf("after closing the idle connections: %w", err)
	}
	pr.step("idle: closed; the gateway ended every session in %.1fs and still serves (RSS %s)", res.CloseSeconds, mib(res.RSSClosed))
	return res, nil
}

// openIdle opens n connections to the plain listener, spread over the
// source addresses. On error it closes those it opened.
func (r *connRun) openIdle(ctx context.Context, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range idleDialers {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				c, err := r.srcs.dialer(i).DialContext(gctx, "tcp", r.plainAddr)
				if err != nil {
					return fmt.Errorf("open idle connection %d of %d: %w", i+1, n, err)
				}
				conns[i] = c
			}
		})
	}
	if err := g.Wait(); err != nil {
		closeConns(conns)
		return nil, err
	}
	return conns, nil
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

// steadyFiles waits until the gateway's open file count is the same for
// two polls in a row, so that connections of readiness probes have ended,
// and returns it.
func (r *connRun) steadyFiles(ctx context.Context) (int, error) {
	last := -1
	var open int
	err := poll(ctx, acceptTimeout, "the gateway's open files to settle", func() (bool, error) {
		if err := r.exited(); err != nil {
			return false, err
		}
		var err error
		if open, err = openFiles(r.gateway.pid); err != nil {
			return false, err
		}
		steady := open == last
		last = open
		return steady, nil
	})
	return open, err
}

// waitFiles polls the gateway's open file count until done accepts it,
// failing if the gateway exits or acceptTimeout passes.
func (r *connRun) waitFiles(ctx context.Context, what string, done func(open int) bool) error {
	var open int
	err := poll(ctx, acceptTimeout, what, func() (bool, error) {
		if err := r.exited(); err != nil {
			return false, err
		}
		var err error
		open, err = openFiles(r.gateway.pid)
		return err == nil && done(open), err
	})
	if err != nil {
		return fmt.Errorf("%w (the gateway has %d files open)", err, open)
	}
	return nil
}
