package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jetline/jetline/shared/runtime/health"
)

// readyPollInterval is how often an unready child's /readyz is probed.
const readyPollInterval = 250 * time.Millisecond

// waitReady probes every endpoint's /readyz until all answer 200, a child
// exits, ctx is done or cfg.ReadyTimeout passes. A timeout is logged with
// what each unready child last answered, and not treated as an error: the
// child may yet become ready, and its own log says why it is not.
func (r *runner) waitReady(ctx context.Context, sup *supervisor, endpoints []endpoint) {
	start := time.Now()
	deadline := time.NewTimer(r.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(readyPollInterval)
	defer tick.Stop()
	pending := map[endpoint]error{}
	for _, e := range endpoints {
		pending[e] = nil
	}
	for {
		for e := range pending {
			if err := health.Probe(e.readyURL(), time.Second); err != nil {
				pending[e] = err
				continue
			}
			delete(pending, e)
			r.log().Info("ready", slog.String("child", e.name), slog.Duration("elapsed", time.Since(start).Round(time.Millisecond)))
		}
		if len(pending) == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		case <-sup.Failed():
			return
		case <-deadline.C:
			for e, err := range pending {
				r.log().Warn("not ready yet; see its log lines", slog.String("child", e.name),
					slog.Duration("waited", r.cfg.ReadyTimeout), slog.Any("err", err))
			}
			return
		}
	}
}
