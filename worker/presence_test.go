package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// startPresence runs p until the returned stop is called (or the test
// ends); stop returns Run's error.
func startPresence(t testing.TB, p *Presence) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = errors.New("presence Run did not return 10s after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// newPresence returns the presence of w through js, beating every
// heartbeat.
func newPresence(t testing.TB, js jetstream.JetStream, w *Worker, heartbeat, ttl time.Duration, logger *slog.Logger) *Presence {
	t.Helper()
	p, err := NewPresence(js, w, PresenceOptions{Heartbeat: heartbeat, TTL: ttl}, logger)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// present returns the running workers by instance; none while the bucket
// does not exist.
func present(t testing.TB, js jetstream.JetStream) map[string]PresenceEntry {
	t.Helper()
	entries, err := ReadPresence(t.Context(), js)
	if err != nil && !errors.Is(err, ErrNoPresence) {
		t.Fatal(err)
	}
	out := map[string]PresenceEntry{}
	for _, e := range entries {
		out[e.Instance] = e
	}
	return out
}

// logBuffer collects log lines from several goroutines.
type logBuffer struct{ testenv.Buffer }

func (b *logBuffer) count(s string) int { return strings.Count(b.String(), s) }

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

func TestPresenceKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "worker", "worker-1_a": "worker-1_a", "w/1 test": "w_1_test", "host.example.com": "host_example_com", "wörker": "w_rker"} {
		if got := PresenceKey(in); got != want {
			t.Errorf("PresenceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPresenceOfRunningWorker(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	const n = 300
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"i":%d}`, i)
	}
	nb.publish(t, "smoke", lines)
	opts := testOptions()
	opts.Instance = "w/1 test"
	w, stopWorker := startWorker(t, nb.cons, sb.store, opts)
	stop := startPresence(t, newPresence(t, nb.js, w, 50*time.Millisecond, 5*time.Second, testenv.Logger(t)))

	var e PresenceEntry
	testenv.Eventually(t, 30*time.Second, "the worker's presence with every line", func() error {
		e = present(t, nb.js)["w/1 test"]
		if e.Totals.Lines != n {
			return fmt.Errorf("presence counts %d lines, want %d", e.Totals.Lines, n)
		}
		return nil
	})
	host, _ := os.Hostname()
	if e.Host != host || e.PID != os.Getpid() || e.Concurrency != 3 || e.BatchSize != 100 || e.HeartbeatSeconds != 0.05 ||
		e.Totals.Inserted != n || e.Started.IsZero() || !e.Heartbeat.After(e.Started) {
		t.Errorf("presence = %+v, want this process, its options and %d inserted", e, n)
	}
	kv, err := nb.js.KeyValue(t.Context(), topology.WorkersBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(t.Context(), "w_1_test"); err != nil {
		t.Errorf("get key w_1_test: %v", err)
	}

	// A clean stop deletes the entry at once.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := present(t, nb.js); len(got) != 0 {
		t.Errorf("after a clean stop, present = %v, want nobody", got)
	}
	if err := stopWorker(); err != nil {
		t.Fatal(err)
	}
}

func TestPresenceOfKilledWorkerAgesOut(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	w, err := New(nb.cons, rawRouter(t, &blockingStore{calls: make(chan struct{}, 1)}), testOptions(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	w.opts.Instance = "doomed"
	// The presence has its own connection, so closing it is the
	// process dying: no more heartbeats, and no delete.
	nc, js := testenv.Connect(t, nb.srv.ClientURL())
	stop := startPresence(t, newPresence(t, js, w, 100*time.Millisecond, 2*time.Second, testenv.Logger(t)))
	testenv.Eventually(t, 10*time.Second, "the worker's presence", func() error {
		if _, ok := present(t, nb.js)["doomed"]; !ok {
			return errors.New("no entry for doomed")
		}
		return nil
	})
	nc.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, ok := present(t, nb.js)["doomed"]; !ok {
		t.Fatal("the entry went at once; want it kept until its TTL, as nothing deleted it")
	}
	testenv.Eventually(t, 15*time.Second, "the entry to age out", func() error {
		if got := len(present(t, nb.js)); got != 0 {
			return fmt.Errorf("%v, want %v", got, 0)
		}
		return nil
	})
}

func TestPresenceFailureDoesNotStopWorker(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	opts := testOptions()
	opts.Instance = "w-1"
	w, stopWorker := startWorker(t, nb.cons, sb.store, opts)

	// Every put fails: the presence's connection is closed.
	nc, closedJS := testenv.Connect(t, nb.srv.ClientURL())
	nc.Close()
	var logs logBuffer
	stop := startPresence(t, newPresence(t, closedJS, w, 20*time.Millisecond, time.Second, logs.logger()))
	const n = 200
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"i":%d}`, i)
	}
	nb.publish(t, "smoke", lines)
	testenv.Eventually(t, 30*time.Second, "every line stored", func() error {
		if got := w.Stats().Inserted; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, "the failure logged", func() error {
		if got := logs.count("cannot report presence"); got <= 0 {
			return fmt.Errorf("%v, want more than %v", got, 0)
		}
		return nil
	})
	// Let a few more heartbeats fail: they are not logged again.
	time.Sleep(200 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("presence Run: %v, want nil", err)
	}
	if got := logs.count("cannot report presence"); got != 1 {
		t.Errorf("failure logged %d times, want once per streak:\n%s", got, logs.String())
	}
	if err := stopWorker(); err != nil {
		t.Fatalf("worker Run: %v", err)
	}
}

func TestPresenceRecreatesDeletedBucket(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	w, err := New(nb.cons, rawRouter(t, &blockingStore{calls: make(chan struct{}, 1)}), testOptions(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	w.opts.Instance = "w-1"
	var logs logBuffer
	startPresence(t, newPresence(t, nb.js, w, 20*time.Millisecond, time.Second, logs.logger()))
	testenv.Eventually(t, 10*time.Second, "the worker's presence", func() error {
		if got := len(present(t, nb.js)); got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})
	if err := nb.js.DeleteKeyValue(t.Context(), topology.WorkersBucket); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "presence reported again", func() error {
		if got := logs.count("presence reported again"); got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})
	// The recovering put may land while the bucket is still being made
	// again; the next heartbeats settle it.
	testenv.Eventually(t, 10*time.Second, "w-1 present again", func() error {
		if got := len(present(t, nb.js)); got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})
	// Each streak of failures is logged once, and its end once. A loaded
	// machine may time out a later heartbeat too: that is a streak of its
	// own, and may still be under way when the logs are counted.
	if failed, back := logs.count("cannot report presence"), logs.count("presence reported again"); failed < 1 || failed != back && failed != back+1 {
		t.Errorf("failure logged %d times and recovery %d times, want once each per streak:\n%s", failed, back, logs.String())
	}
}
