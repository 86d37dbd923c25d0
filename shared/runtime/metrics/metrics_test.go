package metrics_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/jetline/jetline/shared/runtime/metrics"
)

func TestHandlerServesCollectorsAndRuntime(t *testing.T) {
	t.Parallel()
	lines := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_lines_total", Help: "Lines."}, []string{"source", "kind"})
	lines.WithLabelValues("default", "raw").Add(3)
	lines.WithLabelValues(`we"ird`, "raw").Add(1)
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "test_latency_seconds", Help: "Latency.", Buckets: []float64{0.1, 1}})
	latency.Observe(0.05)
	latency.Observe(0.5)
	srv := httptest.NewServer(metrics.Handler(slog.New(slog.DiscardHandler), lines, latency))
	t.Cleanup(srv.Close)

	got, err := metrics.Scrape(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`test_lines_total{kind="raw",source="default"}`: 3,
		`test_lines_total{kind="raw",source="we\"ird"}`: 1,
		`test_latency_seconds_count`:                    2,
		`test_latency_seconds_sum`:                      0.55,
		`test_latency_seconds_bucket{le="0.1"}`:         1,
		`test_latency_seconds_bucket{le="1"}`:           2,
		`test_latency_seconds_bucket{le="+Inf"}`:        2,
	}
	for series, v := range want {
		if got[series] != v {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
	for _, series := range []string{"go_goroutines", "process_cpu_seconds_total", `promhttp_metric_handler_errors_total{cause="gathering"}`} {
		if _, ok := got[series]; !ok {
			t.Errorf("%s is not served", series)
		}
	}
}

func TestNewRegistryPanicsOnClash(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("registering the Go collector twice did not panic")
		}
	}()
	metrics.NewRegistry(collectors.NewGoCollector())
}

func TestScrapeFailsOnError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	if _, err := metrics.Scrape(t.Context(), srv.URL); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Scrape of a failing endpoint: err = %v, want the status", err)
	}
}
