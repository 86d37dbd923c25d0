// Package metricstest serves a component's metrics the way the programs do
// and reads them the way Prometheus does, for tests that watch counters
// move:
//
//	url := metricstest.Serve(t, metrics.Handler(logger, component.Metrics()))
//	before := metricstest.Scrape(t, url)
//	// … work …
//	after := metricstest.Scrape(t, url)
package metricstest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// listenTimeout bounds how long Serve waits for the server to listen.
const listenTimeout = 5 * time.Second

// Serve serves h at [metrics.Path] of a [health.Server] on a free loopback
// port until t ends, and returns the URL of the metrics. It fails the test
// if the server does not listen within 5 s or ends with an error.
func Serve(t *testing.T, h http.Handler) string {
	t.Helper()
	hs := health.New("127.0.0.1:0", testenv.Logger(t))
	hs.Handle("GET "+metrics.Path, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("health server: %v", err)
		}
	})
	deadline := time.Now().Add(listenTimeout)
	for hs.Addr() == nil {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("health server ended before listening: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("health server not listening after %s", listenTimeout)
		}
	}
	return "http://" + hs.Addr().String() + metrics.Path
}

// Scrape returns the samples served at url, failing the test on an error.
func Scrape(t *testing.T, url string) metrics.Samples {
	t.Helper()
	s, err := metrics.Scrape(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
