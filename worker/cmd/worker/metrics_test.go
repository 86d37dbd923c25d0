package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/metrics"
)

// TestRunServesMetrics runs the program with the tweets pipeline, sends it
// lines that are inserted, filtered and dead-lettered, and watches
// /metrics on its health address move by exactly those lines, then the
// consumer and stream gauges settle.
func TestRunServesMetrics(t *testing.T) {
	t.Parallel()
	cfg := setup(t, testenv.Postgres(t))
	cfg.Pipelines = []string{tweetsSpec}
	stop := start(t, cfg)
	url := "http://" + cfg.HealthAddr + metrics.Path

	var before metrics.Samples
	testenv.Eventually(t, 20*time.Second, "metrics served", func() (err error) {
		before, err = metrics.Scrape(t.Context(), url)
		return err
	})

	_, js := testenv.Connect(t, cfg.NATS.URL)
	const raw = 30
	msgs := []struct{ source, data string }{
		{"tweets", `{"id": 1, "created_at": "Mon Jan 01 10:00:00 +0000 2018", "text": "hi", "lang": "en", "user": {"screen_name": "Ann"}}`},
		{"tweets", `{"id": 2, "created_at": "Mon Jan 01 10:00:00 +0000 2018", "text": "rt", "lang": "en", "user": {"screen_name": "Bob"}, "retweeted_status": {"id": 1}}`},
		{"smoke", `{"broken": `},
	}
	for i := range raw {
		msgs = append(msgs, struct{ source, data string }{"smoke", fmt.Sprintf(`{"i": %d}`, i)})
	}
	for _, m := range msgs {
		if _, err := js.Publish(t.Context(), topology.Subject(m.source), []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}

	want := map[string]float64{
		`jetline_worker_rows_inserted_total{table="tweets"}`:              1,
		`jetline_worker_lines_filtered_total{source="tweets"}`:            1,
		`jetline_worker_rows_inserted_total{table="events"}`:              raw,
		`jetline_worker_rows_duplicate_total{table="events"}`:             0,
		`jetline_worker_lines_dead_lettered_total{reason="invalid_json"}`: 1,
	}
	settled := map[string]float64{
		`jetline_worker_consumer_pending`:              0,
		`jetline_worker_consumer_ack_pending`:          0,
		`jetline_stream_messages{stream="INGEST"}`:     0,
		`jetline_stream_messages{stream="INGEST_DLQ"}`: 1,
	}
	testenv.Eventually(t, 20*time.Second, "metrics moved by the lines sent", func() error {
		after, err := metrics.Scrape(t.Context(), url)
		if err != nil {
			return err
		}
		for series, delta := range want {
			if got := after[series] - before[series]; got != delta {
				return fmt.Errorf("%s moved by %v, want %v", series, got, delta)
			}
		}
		for series, v := range settled {
			if got, ok := after[series]; !ok || got != v {
				return fmt.Errorf("%s = %v (exported: %v), want %v", series, got, ok, v)
			}
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}
