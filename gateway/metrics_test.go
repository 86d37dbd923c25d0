package gateway_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/shared/runtime/metrics/metricstest"
)

// TestMetricsCountLines sends lines to a gateway on a real NATS server and
// checks that /metrics moved by exactly what was sent: lines, bytes, too
// long lines and their dead letters, the connection, the acknowledgements
// and their latencies.
func TestMetricsCountLines(t *testing.T) {
	t.Parallel()
	const maxLine = 1024
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_LINE_BYTES": fmt.Sprint(maxLine)}})
	url := metricstest.Serve(t, metrics.Handler(testenv.Logger(t), b.gw.Metrics()))

	before := metricstest.Scrape(t, url)
	for _, series := range []string{
		`jetline_gateway_lines_received_total{source="default"}`,
		`jetline_gateway_lines_published_total{source="default"}`,
		`jetline_gateway_lines_dead_lettered_total{reason="too_long"}`,
		`jetline_gateway_connections_refused_total{reason="per_ip"}`,
		`jetline_gateway_publish_latency_seconds_count`,
		`jetline_gateway_backpressure_seconds_total`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if _, ok := before[series]; !ok {
			t.Errorf("%s is not exported before any connection", series)
		}
	}

	const lines, tooLong, blank = 250, 3, 2
	var data bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&data, "%s\n", jsonLine(1, i))
		if i%100 == 50 {
			data.WriteString(`{"long":"` + strings.Repeat("x", maxLine) + "\"}\n")
		}
	}
	data.WriteString(`{"long":"` + strings.Repeat("y", 3*maxLine) + "\"}\n")
	data.WriteString(strings.Repeat("\n", blank))
	r := send(t, b.addr(t, 0), data.Bytes())
	if r.Status != gateway.StatusOK || r.Lines != lines || r.TooLong != tooLong {
		t.Fatalf("receipt %+v, want ok with %d lines, %d too long", r, lines, tooLong)
	}
	// The receipt is written before the session gives its slot back.
	testenv.Eventually(t, 5*time.Second, "connection closed", func() error {
		if got := metricstest.Scrape(t, url)["jetline_gateway_connections_open"]; got != 0 {
			return fmt.Errorf("%v, want %v", got, 0)
		}
		return nil
	})

	after := metricstest.Scrape(t, url)
	// The oversize lines cut the input into frames: the two amid the
	// lines make at least three.
	frames := float64(b.msgCount(t))
	if frames < tooLong || frames >= lines {
		t.Errorf("%d lines were stored in %v frames; want at least %d and fewer than lines", lines, frames, tooLong)
	}
	want := map[string]float64{
		`jetline_gateway_connections_accepted_total{source="default"}`: 1,
		`jetline_gateway_lines_received_total{source="default"}`:       lines,
		`jetline_gateway_lines_published_total{source="default"}`:      lines,
		`jetline_gateway_bytes_received_total{source="default"}`:       float64(data.Len()),
		`jetline_gateway_lines_too_long_total{source="default"}`:       tooLong,
		`jetline_gateway_lines_dead_lettered_total{reason="too_long"}`: tooLong,
		`jetline_gateway_frames_published_total{source="default"}`:     frames,
		`jetline_gateway_publish_latency_seconds_count`:                frames,
		`jetline_gateway_connections_refused_total{reason="per_ip"}`:   0,
	}
	for series, delta := range want {
		if got := after[series] - before[series]; got != delta {
			t.Errorf("%s moved by %v, want %v (before %v, after %v)", series, got, delta, before[series], after[series])
		}
	}
	for _, series := range []string{"jetline_gateway_publish_inflight_lines", "jetline_gateway_publish_inflight_bytes"} {
		if v, ok := after[series]; !ok || v != 0 {
			t.Errorf("%s = %v (exported %v), want 0 once every line is acknowledged", series, v, ok)
		}
	}
	if sum := after["jetline_gateway_publish_latency_seconds_sum"] - before["jetline_gateway_publish_latency_seconds_sum"]; sum <= 0 {
		t.Errorf("publish latencies sum to %v, want more than 0", sum)
	}
	if n := b.lineCount(t); n != lines {
		t.Errorf("stream holds %d lines, want %d", n, lines)
	}
}

// TestMetricsCountBackpressure fills a small stream so that the sender is
// held back, and checks that the in-flight gauges show the lines waiting
// in its window (at most the window, bytes to match),
// that the failing publishes are counted as retries and that the time the
// sender is held back grows while it is.
func TestMetricsCountBackpressure(t *testing.T) {
	t.Parallel()
	const window = 16
	b := setup(t, setupOptions{
		streamMaxBytes: 256 << 10,
		env: map[string]string{
			"GATEWAY_INFLIGHT_LINES":   fmt.Sprint(window),
			"GATEWAY_FRAME_LINES":      "4",
			"GATEWAY_SHUTDOWN_TIMEOUT": "2s",
		},
	})
	url := metricstest.Serve(t, metrics.Handler(testenv.Logger(t), b.gw.Metrics()))
	const bp = "jetline_gateway_backpressure_seconds_total"
	before := metricstest.Scrape(t, url)
	if before[bp] != 0 {
		t.Fatalf("%s = %v before any connection", bp, before[bp])
	}

	c := dial(t, b.addr(t, 0))
	line := `{"pad":"` + strings.Repeat("p", 1000) + "\"}\n"
	go func() {
		// More than the stream holds: the gateway stops reading once its
		// window is full of lines the stream refuses.
		for range 1000 {
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	// Once the stream refuses lines, the window holds refused lines until
	// there is room again (a reader held on a full window is woken only
	// when enough of it is free, so it need not be full to the last line).
	var held metrics.Samples
	testenv.Eventually(t, time.Minute, "refused lines to hold the sender back", func() error {
		held = metricstest.Scrape(t, url)
		if held["jetline_gateway_publish_inflight_lines"] > 0 &&
			held["jetline_gateway_publish_retries_total"] > 0 && held[bp] > 0 {
			return nil
		}
		return fmt.Errorf("in flight %v, retries %v, held back %vs",
			held["jetline_gateway_publish_inflight_lines"], held["jetline_gateway_publish_retries_total"], held[bp])
	})
	lines := held["jetline_gateway_publish_inflight_lines"]
	if lines > window {
		t.Errorf("in flight lines = %v, more than the window (%d)", lines, window)
	}
	if got, want := held["jetline_gateway_publish_inflight_bytes"], lines*float64(len(line)); got != want {
		t.Errorf("in flight bytes = %v, want %v (%v lines of %d bytes, each with its newline)", got, want, lines, len(line))
	}
	testenv.Eventually(t, 10*time.Second, "the held-back time to grow", func() error {
		if got := metricstest.Scrape(t, url)[bp]; got <= held[bp] {
			return fmt.Errorf("%v, want more than %v", got, held[bp])
		}
		return nil
	})
}
