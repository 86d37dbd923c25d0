package worker

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	sharedmetrics "github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/shared/runtime/metrics/metricstest"
)

// skipping is a transform that lands lines raw in its table, except those
// containing "skip", which it filters.
type skipping struct{ *RawLanding }

func (s skipping) Transform(line *Line, rows *Rows) Result {
	if bytes.Contains(line.Data, []byte(`"skip"`)) {
		return Result{Outcome: Filter, Reason: "skip"}
	}
	return s.RawLanding.Transform(line, rows)
}

// TestMetricsCountLines runs a worker on real NATS and Postgres, sends it
// lines that are inserted, duplicates, filtered and dead-lettered, and
// checks that /metrics moved by exactly those numbers and that the
// consumer and stream gauges show everything settled.
func TestMetricsCountLines(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	nb := setupNATS(t, 30*time.Second)
	if _, err := deadletter.EnsureStream(ctx, nb.js, deadletter.Config{MaxAge: time.Hour, MaxBytes: 1 << 30}, 1); err != nil {
		t.Fatal(err)
	}
	sb := setupStore(t)
	logger := testenv.Logger(t)

	// Route "picky" to table kept through a filtering transform.
	rawKept, err := NewRawLanding("kept")
	if err != nil {
		t.Fatal(err)
	}
	keptStore, err := NewPostgresStore(sb.pool, rawKept.Tables(), logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := keptStore.CreateTables(ctx); err != nil {
		t.Fatal(err)
	}
	router := rawRouter(t, sb.store)
	if err := router.Handle("picky", Route{Transform: skipping{rawKept}, Store: keptStore}); err != nil {
		t.Fatal(err)
	}

	// The first valid lines are tweets, the next invalid ones are not
	// JSON; the rows of the first dup lines are stored already.
	const valid, invalid, dup, picky, skipped = 300, 7, 40, 120, 30
	var lines [][]byte
	for i := range valid {
		lines = append(lines, tweetLine(i+1))
	}
	for i := range invalid {
		lines = append(lines, fmt.Appendf(nil, `{"broken":%d`, i))
	}
	stored := rawRows(1, dup)
	for _, row := range stored {
		// Keyed as the worker identifies a line published without a
		// message id, by a worker without the stream's creation time.
		row[0] = strconv.FormatInt(row[1].(int64), 10)
	}
	if _, err := sb.store.Write(ctx, rowsOf(stored)); err != nil {
		t.Fatal(err)
	}
	var pickyLines [][]byte
	for i := range picky {
		if i < skipped {
			pickyLines = append(pickyLines, fmt.Appendf(nil, `{"n":%d,"skip":true}`, i))
		} else {
			pickyLines = append(pickyLines, fmt.Appendf(nil, `{"n":%d}`, i))
		}
	}

	opts := testOptions()
	opts.DeadLetters = nb.js
	w, err := New(nb.cons, router, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	url := metricstest.Serve(t, sharedmetrics.Handler(logger, w.Metrics(nb.js)))
	before := metricstest.Scrape(t, url)
	// Every line was read at about baseTime (receivedAt), long before it
	// is settled.
	sinceBefore := time.Since(baseTime).Seconds()

	nb.publish(t, topology.DefaultSource, lines)
	nb.publish(t, "picky", pickyLines)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	total := uint64(valid + invalid + picky)
	testenv.Eventually(t, 30*time.Second, "every line settled", func() error {
		if got := w.Stats().Lines; got != total {
			return fmt.Errorf("%v, want %v", got, total)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	s := w.Stats()
	after := metricstest.Scrape(t, url)
	sinceAfter := time.Since(baseTime).Seconds()
	want := map[string]float64{
		`jetline_worker_rows_inserted_total{table="events"}`:                valid - dup,
		`jetline_worker_rows_duplicate_total{table="events"}`:               dup,
		`jetline_worker_rows_inserted_total{table="kept"}`:                  picky - skipped,
		`jetline_worker_rows_duplicate_total{table="kept"}`:                 0,
		`jetline_worker_lines_filtered_total{source="picky"}`:               skipped,
		`jetline_worker_lines_dead_lettered_total{reason="invalid_json"}`:   invalid,
		`jetline_worker_lines_dead_lettered_total{reason="max_deliveries"}`: 0,
		`jetline_worker_lines_retried_total`:                                0,
		`jetline_worker_batches_total{outcome="stored"}`:                    float64(s.Batches),
		`jetline_worker_batches_total{outcome="failed"}`:                    0,
		`jetline_worker_batch_lines_count`:                                  float64(s.Batches),
		`jetline_worker_batch_lines_sum`:                                    float64(total),
		`jetline_worker_batch_duration_seconds_count`:                       float64(s.Batches),
		`jetline_worker_settle_latency_seconds_count`:                       float64(s.Frames),
		`jetline_worker_store_failures_total{class="transient"}`:            0,
		`jetline_worker_store_failures_total{class="permanent"}`:            0,
	}
	for series, delta := range want {
		if got := after[series] - before[series]; got != delta {
			t.Errorf("%s moved by %v, want %v (before %v, after %v)", series, got, delta, before[series], after[series])
		}
	}
	if s.Batches == 0 {
		t.Fatal("no batch counted")
	}
	// Each frame's latency is from its line's read time to its settling.
	latency := `jetline_worker_settle_latency_seconds_sum`
	if got, n := after[latency]-before[latency], float64(s.Frames); got < n*sinceBefore || got > n*sinceAfter {
		t.Errorf("%s moved by %.0f s, want %v frames of %.0f to %.0f s each", latency, got, n, sinceBefore, sinceAfter)
	}

	// The JetStream numbers are cached for a few seconds; wait for the
	// ones taken after the lines settled.
	settled := map[string]float64{
		`jetline_worker_consumer_pending`:              0,
		`jetline_worker_consumer_ack_pending`:          0,
		`jetline_worker_consumer_redelivered`:          0,
		`jetline_stream_messages{stream="INGEST"}`:     0,
		`jetline_stream_messages{stream="INGEST_DLQ"}`: invalid,
	}
	var last sharedmetrics.Samples
	testenv.Eventually(t, 3*jetstreamStateCacheFor, "consumer and stream gauges to show every line settled", func() error {
		last = metricstest.Scrape(t, url)
		for series, v := range settled {
			if got, ok := last[series]; !ok || got != v {
				return fmt.Errorf("%s = %v (present: %t), want %v", series, got, ok, v)
			}
		}
		if dlq := `jetline_stream_bytes{stream="INGEST_DLQ"}`; last[dlq] <= 0 {
			return fmt.Errorf("%s = %v, want more than 0", dlq, last[dlq])
		}
		return nil
	})
	if before[`jetline_worker_consumer_pending`] != float64(0) {
		t.Errorf("pending before publishing = %v, want 0", before[`jetline_worker_consumer_pending`])
	}
}

// TestMetricsConsumerLag checks that lines waiting in the stream show as
// the consumer's pending count while no worker runs.
func TestMetricsConsumerLag(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	router := rawRouter(t, sb.store)
	w, err := New(nb.cons, router, testOptions(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 25
	var lines [][]byte
	for i := range n {
		lines = append(lines, tweetLine(i+1))
	}
	nb.publish(t, topology.DefaultSource, lines)
	url := metricstest.Serve(t, sharedmetrics.Handler(testenv.Logger(t), w.Metrics(nb.js)))
	got := metricstest.Scrape(t, url)
	if got[`jetline_worker_consumer_pending`] != n || got[`jetline_stream_messages{stream="INGEST"}`] != n {
		t.Errorf("pending %v, stream messages %v; want %d each",
			got[`jetline_worker_consumer_pending`], got[`jetline_stream_messages{stream="INGEST"}`], n)
	}
}
