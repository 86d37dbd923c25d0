package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// TestRunServesMetrics runs the program as configured from the
// environment, sends it lines and watches /metrics on its health address
// move by exactly those lines. It stops the program as an operator does,
// with SIGTERM, so it runs alone (no t.Parallel).
func TestRunServesMetrics(t *testing.T) {
	srv := testenv.NATS(t)
	listen, healthAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	for k, v := range map[string]string{
		"NATS_URL":            srv.ClientURL(),
		"GATEWAY_LISTEN":      listen,
		"GATEWAY_HEALTH_ADDR": healthAddr,
		"GATEWAY_INSTANCE":    "test-gw",
		"LOG_LEVEL":           "warn",
	} {
		t.Setenv(k, v)
	}
	done := make(chan error, 1)
	go func() { done <- run() }()
	stopped := false
	t.Cleanup(func() {
		if stopped {
			return
		}
		select {
		case <-done: // run gave up (and no longer catches SIGTERM)
		case <-time.After(100 * time.Millisecond):
			_ = syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
			<-done
		}
	})

	url := "http://" + healthAddr + metrics.Path
	testenv.Eventually(t, 20*time.Second, "the gateway to be ready", func() error {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("run: %v", err)
		default:
		}
		return health.Probe("http://"+healthAddr+"/readyz", time.Second)
	})
	before, err := metrics.Scrape(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}

	const n = 40
	var input strings.Builder
	for i := range n {
		fmt.Fprintf(&input, `{"i":%d}`+"\n", i)
	}
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(input.String())); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	receipt, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(receipt, `"status":"ok"`) {
		t.Fatalf("receipt %q, err %v", receipt, err)
	}

	after, err := metrics.Scrape(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	for series, delta := range map[string]float64{
		`jetline_gateway_connections_accepted_total{source="default"}`: 1,
		`jetline_gateway_lines_received_total{source="default"}`:       n,
		`jetline_gateway_lines_published_total{source="default"}`:      n,
		`jetline_gateway_bytes_received_total{source="default"}`:       float64(input.Len()),
	} {
		if got := after[series] - before[series]; got != delta {
			t.Errorf("%s moved by %v, want %v", series, got, delta)
		}
	}
	// The lines travel in frames, each publish timed once.
	frames := after[`jetline_gateway_frames_published_total{source="default"}`] - before[`jetline_gateway_frames_published_total{source="default"}`]
	if frames < 1 || frames > n {
		t.Errorf("%d lines went in %v frames, want 1 to %d", n, frames, n)
	}
	if got := after[`jetline_gateway_publish_latency_seconds_count`] - before[`jetline_gateway_publish_latency_seconds_count`]; got != frames {
		t.Errorf("publish latency observed %v times, want once per frame (%v)", got, frames)
	}
	if _, ok := after["process_resident_memory_bytes"]; !ok {
		t.Error("process metrics are not served")
	}

	stopped = true
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run did not return 40s after SIGTERM")
	}
}
