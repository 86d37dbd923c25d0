// Package metrics serves the Prometheus metrics of both programs on their
// health server's /metrics. Each program has a registry of its own (no
// global state, so tests can run several programs in one process) holding
// the Go runtime and process collectors plus the program's own collectors.
// The metric names are listed in README.md ("Metrics"); a dashboard and
// alerts depend on them.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where the health server serves the metrics.
const Path = "/metrics"

// NewRegistry returns a registry holding the Go runtime and process
// collectors and cs. It panics if two collectors describe the same metric,
// which is a programming error.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}

// Handler returns the handler of [Path] for a registry made by
// [NewRegistry] from cs; see there for when it panics. A collector that
// fails during a scrape is logged and the rest are served, so one broken
// source of numbers does not blank the dashboard.
func Handler(logger *slog.Logger, cs ...prometheus.Collector) http.Handler {
	reg := NewRegistry(cs...)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      errorLog{logger.With("component", "metrics")},
		ErrorHandling: promhttp.ContinueOnError,
		// Count scrapes and their errors in the same registry.
		Registry: reg,
	})
}

// errorLog adapts a *slog.Logger to promhttp's Logger.
type errorLog struct{ logger *slog.Logger }

func (l errorLog) Println(v ...any) {
	l.logger.Warn("serving metrics", "err", fmt.Sprint(v...))
}
