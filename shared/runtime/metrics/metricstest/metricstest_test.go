package metricstest_test

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/shared/runtime/metrics/metricstest"
)

func TestServeAndScrape(t *testing.T) {
	t.Parallel()
	lines := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_lines_total", Help: "Lines."})
	url := metricstest.Serve(t, metrics.Handler(slog.New(slog.DiscardHandler), lines))

	if got := metricstest.Scrape(t, url)["test_lines_total"]; got != 0 {
		t.Fatalf("test_lines_total = %v before any line, want 0", got)
	}
	lines.Add(3)
	if got := metricstest.Scrape(t, url)["test_lines_total"]; got != 3 {
		t.Fatalf("test_lines_total = %v, want 3", got)
	}
}
