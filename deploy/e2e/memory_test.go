package e2e

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/tweetgen"
)

// TestWorkerMemoryUnderFlood checks that a worker facing a backlog of the
// gateway's frames holds no more of them than worker.Run's doc comment
// says: its live heap after every garbage collection (GODEBUG=gctrace=1)
// stays under that bound plus the worker's own needs, whatever the
// backlog's size. A worker that kept acknowledged frames alive (nats.go
// links each queued message to the next, so one frame kept keeps all those
// delivered after it) grows with the backlog instead: 121 and 164 MB live
// in `go run ./deploy/bench -lines 150000`.
func TestWorkerMemoryUnderFlood(t *testing.T) {
	t.Parallel()
	const (
		// The worker's defaults, as in production.
		batchBytes  = 4 << 20
		concurrency = workerConcurrency
		maxPayload  = embeddednats.DefaultMaxPayload
		// Some 340 MB of ~6 KB tweets, 14 times what the worker may hold.
		lines = 60_000
		// What the worker needs besides frames: 8 MB of nats.go's message
		// channel and a few MB of runtime, pgx and logging. Measured live
		// on a 2-core x86-64 Linux machine, frames and all: 33 MB in `go
		// run ./deploy/bench`, 33-37 MB here, with or without -race (whose
		// bookkeeping is not on the heap); before the worker dropped the
		// frames it was done with, 54 MB here with 30,000 lines and 101 MB
		// with 60,000, built with -race.
		ownNeeds = 20 << 20
	)
	// worker.Run: the batches in hand, the frames consumed ahead of them
	// and the pull budget, and two frames more, 256 KiB each at most (the
	// gateway's frames here are ~100 KB).
	held := 2*batchBytes*concurrency + max(batchBytes*concurrency, maxPayload) + 2*(256<<10)
	limit := held + ownNeeds

	b := setup(t, setupOptions{})
	gw := b.startGateway(t)
	data := tweetgen.New(inputSeed(t), 1).Lines(lines)
	conn := dial(t, gw.addrs[topology.DefaultSource])
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatalf("half-close: %v", err)
	}
	r, err := readReceipt(conn)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "ok" || r.Lines != lines {
		t.Fatalf("receipt %+v, want ok and %d lines", r, lines)
	}
	_, frames := gw.published(t)
	t.Logf("backlog: %d lines, %.1f MiB in %d frames", lines, float64(len(data))/(1<<20), frames)

	start := time.Now()
	w := b.startWorkers(t, 1, map[string]string{
		"GODEBUG":            "gctrace=1",
		"WORKER_BATCH_BYTES": strconv.Itoa(batchBytes),
		"WORKER_ACK_WAIT":    "30s",
	})[0]
	b.waitDrained(t, 5*time.Minute)
	if n := b.rowCount(t); n != lines {
		t.Fatalf("events holds %d rows, want %d", n, lines)
	}
	_, peakRSS, err := memStatus(w.pid())
	if err != nil {
		t.Fatalf("read the worker's memory use: %v", err)
	}

	live := liveHeaps(w.stderr.String())
	if len(live) < 3 {
		t.Fatalf("the worker logged %d garbage collections while draining %.1f MiB, want 3 or more to judge by; its log:\n%s",
			len(live), float64(len(data))/(1<<20), tail(w.stderr.String(), 4000))
	}
	peak := slices.Max(live)
	t.Logf("drained in %s; live heap after %d collections peaked at %s (limit %s: %s of frames, %s of its own); peak RSS %s",
		time.Since(start).Round(time.Millisecond), len(live), mib(peak), mib(int64(limit)), mib(int64(held)), mib(ownNeeds), mib(peakRSS))
	if peak > int64(limit) {
		mibs := make([]int64, len(live))
		for i, n := range live {
			mibs[i] = n >> 20
		}
		t.Errorf("the worker's live heap reached %s, over the %s it may hold (%s of frames and %s of its own): frames are kept beyond worker.Run's bound; live heap after each collection, MiB: %v",
			mib(peak), mib(int64(limit)), mib(int64(held)), mib(ownNeeds), mibs)
	}
}

// gcTrace matches a line of GODEBUG=gctrace=1: its heap sizes are at the
// start of the collection, at its end, and the live heap marked.
var gcTrace = regexp.MustCompile(`^gc \d+ @.*: .* (\d+)->(\d+)->(\d+) MB`)

// liveHeaps returns the live heap, in bytes, after each garbage collection
// that logs (from a program run with GODEBUG=gctrace=1) report.
func liveHeaps(logs string) []int64 {
	var live []int64
	for line := range strings.Lines(logs) {
		if m := gcTrace.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[3], 10, 64)
			live = append(live, n<<20)
		}
	}
	return live
}
