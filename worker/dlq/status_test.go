package dlq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetline/jetline/shared/testenv"
	"github.com/jetline/jetline/shared/topology"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	b := setup(t, 1<<20)
	ctx := context.Background()
	if _, err := topology.EnsureConsumer(ctx, b.js, topology.ConsumerConfig{AckWait: time.Minute, MaxAckPending: 100, MaxDeliver: -1}); err != nil {
		t.Fatal(err)
	}
	lines := make([]*nats.Msg, 30)
	for i := range lines {
		lines[i] = &nats.Msg{Subject: topology.Subject("default"), Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}
	}
	testenv.Publish(t, b.js, lines)
	b.deadLetter(t, entry("default", "invalid_json", 1, "{"), entry("tweets", "invalid_json", 2, "{"), entry("tweets", "pg_22003", 3, "{"))

	// Publish more lines between the two readings, none consumed.
	done := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		for i := range 10 {
			if _, err := b.js.Publish(ctx, topology.Subject("default"), fmt.Appendf(nil, `{"j":%d}`, i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	st, err := TakeStatus(ctx, b.js, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st.Ingest.Messages != 40 || st.Ingest.MaxBytes != 1<<20 || st.Ingest.FullPercent <= 0 {
		t.Errorf("ingest = %+v, want 40 lines of a 1 MiB stream", st.Ingest)
	}
	if c := st.Consumer; c == nil || c.Pending != 40 || c.AckPending != 0 || c.MaxAckPending != 100 {
		t.Errorf("consumer = %+v, want 40 pending", c)
	}
	if d := st.DeadLetters; d == nil || d.Messages != 3 || d.ByReason["invalid_json"] != 2 || d.ByReason["pg_22003"] != 1 {
		t.Errorf("dead letters = %+v, want invalid_json 2, pg_22003 1", d)
	}
	if st.Rates.In <= 0 || st.Rates.Out != 0 || st.Rates.Backlog <= 0 {
		t.Errorf("rates = %+v, want lines in, none out", st.Rates)
	}
	if !strings.HasPrefix(st.Verdict, "stalled: 40 lines waiting and no worker fetching") {
		t.Errorf("verdict = %q", st.Verdict)
	}

	var out bytes.Buffer
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"INGEST      40 lines", "of 1.0 MiB", "workers     40 to fetch, 0 being stored (max 100)",
		"0 fetch requests waiting", "INGEST_DLQ  3 dead letters", "invalid_json 2, pg_22003 1", "stalled",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"messages":40`, `"pending":40`, `"invalid_json":2`, `"verdict":"stalled`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	base := func() Status {
		return Status{Interval: 2 * time.Second, Ingest: IngestStatus{MaxBytes: 100}, Consumer: &ConsumerStatus{}}
	}
	tests := []struct {
		name    string
		change  func(*Status)
		verdict string
		warning string
	}{
		{"idle", func(*Status) {}, "idle", ""},
		{"keeping up", func(s *Status) { s.Rates = Rates{In: 50, Out: 50} }, "keeping up: 50 lines/s", ""},
		{"no consumer", func(s *Status) { s.Consumer = nil; s.Ingest.Messages = 5 }, "no worker has started", ""},
		{"no worker fetching", func(s *Status) { s.Consumer.Pending = 9 }, "stalled: 9 lines waiting and no worker fetching", ""},
		{"workers stuck", func(s *Status) { s.Consumer.Pending, s.Consumer.AckPending = 9, 500 }, "stalled: 509 lines waiting, workers hold 500", ""},
		{"growing", func(s *Status) {
			s.Consumer.Pending = 1000
			s.Rates = Rates{In: 300, Out: 100, Backlog: 200}
		}, "backlog growing by 200 lines/s (300 in, 100 out)", ""},
		{"draining", func(s *Status) {
			s.Consumer.Pending = 1000
			s.Rates = Rates{In: 0, Out: 100, Backlog: -100}
		}, "draining: 1000 waiting, shrinking by 100 lines/s, empty in about 10s", ""},
		{"nearly full", func(s *Status) { s.Ingest.FullPercent = 95 }, "idle", "INGEST is 95% full"},
		{"dead letters arriving", func(s *Status) { s.DeadLetters = &DeadLetterStatus{}; s.Rates.DeadLetters = 2 }, "idle", "lines are being dead-lettered (2.0/s)"},
		{"redeliveries", func(s *Status) { s.Consumer.AckPending, s.Consumer.Redelivered = 10, 3; s.Rates = Rates{In: 5, Out: 5} }, "steady: 10 waiting", "3 lines in flight were delivered before"},
	}
	for _, tt := range tests {
		st := base()
		tt.change(&st)
		verdict, warnings := judge(st)
		if !strings.HasPrefix(verdict, tt.verdict) {
			t.Errorf("%s: verdict %q, want it to start with %q", tt.name, verdict, tt.verdict)
		}
		if all := strings.Join(warnings, "\n"); tt.warning == "" && all != "" || !strings.Contains(all, tt.warning) {
			t.Errorf("%s: warnings %q, want %q", tt.name, all, tt.warning)
		}
	}
}

func TestStatusWithoutIngest(t *testing.T) {
	t.Parallel()
	js := testenv.JetStream(t)
	if _, err := TakeStatus(context.Background(), js, time.Millisecond); !errors.Is(err, ErrNoIngest) {
		t.Errorf("status without the ingest stream: %v, want ErrNoIngest", err)
	}
}
