package testenv

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// Logger returns a logger that writes text lines to t's output, at the
// level in $TEST_LOG_LEVEL (debug, info, warn or error; default warn).
// Lines logged after t has finished are dropped rather than panicking, so a
// component that logs while shutting down in a t.Cleanup registered after
// Logger was called still works.
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: logLevel()}))
}

// newTestWriter returns a writer to t's output that goes quiet when t's
// cleanups run.
func newTestWriter(t testing.TB) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return w
}

// testWriter forwards to t.Output until the test is done.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

// Write writes p to the test output, or drops it once the test is done.
func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	return w.t.Output().Write(p)
}

// close stops forwarding.
func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// logLevel parses $TEST_LOG_LEVEL, defaulting to warn.
func logLevel() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.TrimSpace(os.Getenv("TEST_LOG_LEVEL")))); err != nil {
		return slog.LevelWarn // Unset or unknown.
	}
	return level
}
