package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
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
	if !strings.HasPrefix(st.Verdict, "stalled: 40 frames waiting and no worker fetching") {
		t.Errorf("verdict = %q", st.Verdict)
	}

	var out bytes.Buffer
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"INGEST      40 frames", "of 1.0 MiB", "workers     40 to fetch, 0 being stored (max 100)",
		"0 pull requests waiting", "INGEST_DLQ  3 dead letters", "invalid_json 2, pg_22003 1", "stalled",
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
		{"keeping up", func(s *Status) { s.Rates = Rates{In: 50, Out: 50} }, "keeping up: 50 frames/s", ""},
		{"no consumer", func(s *Status) { s.Consumer = nil; s.Ingest.Messages = 5 }, "no worker has started", ""},
		{"no worker fetching", func(s *Status) { s.Consumer.Pending = 9 }, "stalled: 9 frames waiting and no worker fetching", ""},
		{"no worker connected", func(s *Status) { s.Consumer.Pending, s.Workers = 9, &WorkersStatus{} }, "stalled: 9 frames waiting and no worker connected", ""},
		{"workers not fetching", func(s *Status) {
			s.Consumer.Pending, s.Workers = 9, &WorkersStatus{Count: 1, Workers: []WorkerStatus{{}}}
		}, "stalled: 9 frames waiting, 1 worker connected but none fetching", ""},
		{"workers fetching", func(s *Status) {
			s.Consumer.Pending, s.Consumer.Waiting, s.Workers = 9, 2, &WorkersStatus{Count: 1, Workers: []WorkerStatus{{}}}
		}, "stalled: 9 frames waiting, workers hold 0", ""},
		{"workers stuck", func(s *Status) { s.Consumer.Pending, s.Consumer.AckPending = 9, 500 }, "stalled: 509 frames waiting, workers hold 500", ""},
		{"growing", func(s *Status) {
			s.Consumer.Pending = 1000
			s.Rates = Rates{In: 300, Out: 100, Backlog: 200}
		}, "backlog growing by 200 frames/s (300 in, 100 out)", ""},
		{"draining", func(s *Status) {
			s.Consumer.Pending = 1000
			s.Rates = Rates{In: 0, Out: 100, Backlog: -100}
		}, "draining: 1000 frames waiting, shrinking by 100 frames/s, empty in about 10s", ""},
		{"nearly full", func(s *Status) { s.Ingest.FullPercent = 95 }, "idle", "INGEST is 95% full"},
		{"dead letters arriving", func(s *Status) { s.DeadLetters = &DeadLetterStatus{}; s.Rates.DeadLetters = 2 }, "idle", "lines are being dead-lettered (2.0/s)"},
		{"redeliveries", func(s *Status) { s.Consumer.AckPending, s.Consumer.Redelivered = 10, 3; s.Rates = Rates{In: 5, Out: 5} }, "steady: 10 frames waiting", "3 frames in flight were delivered before"},
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

// putPresence writes e under its instance's key, as a running worker does.
func putPresence(t *testing.T, kv jetstream.KeyValue, e worker.PresenceEntry) {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), worker.PresenceKey(e.Instance), data); err != nil {
		t.Fatal(err)
	}
}

func TestStatusWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, 1<<20)
	ctx := context.Background()
	if _, err := topology.EnsureConsumer(ctx, b.js, topology.ConsumerConfig{AckWait: time.Minute, MaxAckPending: 100, MaxDeliver: -1}); err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, b.js, []*nats.Msg{{Subject: topology.Subject("default"), Data: []byte(`{}`)}})

	// No bucket: no worker has reported yet, and the verdict cannot tell
	// whether workers run.
	st, err := TakeStatus(ctx, b.js, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.Workers != nil || !strings.HasPrefix(st.Verdict, "stalled: 1 frames waiting and no worker fetching") {
		t.Errorf("without the bucket: workers %+v, verdict %q", st.Workers, st.Verdict)
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "no worker has reported yet") {
		t.Errorf("status without the bucket lacks \"no worker has reported yet\":\n%s", out.String())
	}

	// An empty bucket: every worker has stopped.
	kv, err := b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: topology.WorkersBucket, History: 1, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st, err = TakeStatus(ctx, b.js, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.Workers == nil || st.Workers.Count != 0 || !strings.HasPrefix(st.Verdict, "stalled: 1 frames waiting and no worker connected") {
		t.Errorf("with an empty bucket: workers %+v, verdict %q", st.Workers, st.Verdict)
	}

	// Two workers; one reports between the readings, having settled 300
	// lines in 1.5s; the other did not report between them and is late.
	now := time.Now()
	busy := worker.PresenceEntry{Instance: "w-1.example", Host: "h1", PID: 7, Started: now.Add(-time.Hour), Heartbeat: now.Add(-time.Second), HeartbeatSeconds: 5,
		Concurrency: 2, BatchSize: 500, Totals: worker.PresenceTotals{Lines: 1000, Inserted: 990, DeadLettered: 10}, RecentLinesPerSec: 50}
	late := worker.PresenceEntry{Instance: "w-2", Host: "h2", PID: 8, Started: now.Add(-time.Hour), Heartbeat: now.Add(-20 * time.Second), HeartbeatSeconds: 5,
		Totals: worker.PresenceTotals{Lines: 40, Inserted: 40}, RecentLinesPerSec: 4}
	putPresence(t, kv, busy)
	putPresence(t, kv, late)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(100 * time.Millisecond)
		busy.Heartbeat = busy.Heartbeat.Add(1500 * time.Millisecond)
		busy.Totals.Lines += 300
		busy.Totals.Inserted += 300
		putPresence(t, kv, busy)
	}()
	st, err = TakeStatus(ctx, b.js, 400*time.Millisecond)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if st.Workers == nil || st.Workers.Count != 2 || len(st.Workers.Workers) != 2 {
		t.Fatalf("workers = %+v, want 2", st.Workers)
	}
	w1, w2 := st.Workers.Workers[0], st.Workers.Workers[1]
	if w1.Instance != "w-1.example" || w1.LinesPerSec != 200 || w1.Totals.Inserted != 1290 || w1.Late() {
		t.Errorf("busy worker = %+v, want 200 lines/s from its two heartbeats, 1290 inserted", w1)
	}
	if w2.Instance != "w-2" || w2.LinesPerSec != 4 || !w2.Late() || w2.HeartbeatAge < 20*time.Second {
		t.Errorf("late worker = %+v, want its own 4 lines/s, late", w2)
	}
	if !strings.HasPrefix(st.Verdict, "stalled: 1 frames waiting, 2 workers connected but none fetching") {
		t.Errorf("verdict = %q", st.Verdict)
	}
	if all := strings.Join(st.Warnings, "\n"); !strings.Contains(all, "worker w-2 last reported 20s ago (every 5s)") {
		t.Errorf("warnings = %q, want w-2 late", all)
	}
	out.Reset()
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connected   2 workers", "w-1.example", "h1", "up 1h0m0s", "200 lines/s  1290 inserted  10 dead-lettered", "w-2", "(late)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"workers":{"count":2`, `"instance":"w-1.example"`, `"lines_per_sec":200`, `"inserted":1290`, `"heartbeat_age_seconds":`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}
}

// TestStatusCluster reads an R3 ingest stream on a real three-node
// cluster: its leader and two current replicas, then, with a follower's
// node stopped, that replica lagging and a warning naming it.
func TestStatusCluster(t *testing.T) {
	t.Parallel()
	c := testenv.NATSCluster(t, 3)
	_, js := testenv.Connect(t, c.URL())
	ctx := t.Context()
	if _, err := topology.EnsureStream(ctx, js, topology.StreamConfig{MaxBytes: 1 << 20, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, topology.Subject("default"), []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}

	var st Status
	testenv.Eventually(t, 30*time.Second, "a leader and two current replicas", func() error {
		var err error
		if st, err = TakeStatus(ctx, js, 10*time.Millisecond); err != nil {
			return err
		}
		cs := st.Ingest.Cluster
		switch {
		case cs == nil:
			return errors.New("no cluster in the status")
		case cs.Leader == "" || len(cs.Replicas) != 2:
			return fmt.Errorf("cluster %+v", *cs)
		}
		for _, r := range cs.Replicas {
			if r.Lagging() {
				return fmt.Errorf("replica %+v is lagging", r)
			}
		}
		return nil
	})
	leader := c.StreamLeader(topology.StreamName)
	if leader == nil || st.Ingest.Cluster.Leader != leader.Name() || st.Ingest.Cluster.Name != embeddednats.ClusterName {
		t.Fatalf("status cluster %+v, want cluster %s led by %v", *st.Ingest.Cluster, embeddednats.ClusterName, leader)
	}
	for _, w := range st.Warnings {
		if strings.Contains(w, "replica") {
			t.Errorf("healthy cluster warns %q", w)
		}
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if want := "replicas    cluster jetline, leader " + leader.Name() + ", 2 other replicas"; !strings.Contains(out.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, out.String())
	}

	follower := st.Ingest.Cluster.Replicas[0].Name
	for i := range c.Size() {
		if c.Node(i).Name() == follower {
			c.StopNode(i)
		}
	}
	// The leader notices a lost peer within seconds; more lines make
	// the stopped replica fall behind.
	testenv.Eventually(t, 30*time.Second, "replica "+follower+" to lag", func() error {
		if _, err := js.Publish(ctx, topology.Subject("default"), []byte(`{"a":2}`)); err != nil {
			return err
		}
		var err error
		if st, err = TakeStatus(ctx, js, 10*time.Millisecond); err != nil {
			return err
		}
		cs := st.Ingest.Cluster
		if cs == nil {
			return errors.New("no cluster in the status")
		}
		for _, r := range cs.Replicas {
			if r.Name == follower && r.Lagging() {
				return nil
			}
		}
		return fmt.Errorf("cluster %+v", *cs)
	})
	if !slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "replica "+follower) }) {
		t.Errorf("warnings %q do not name the lagging replica %s", st.Warnings, follower)
	}
	out.Reset()
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), follower) || !(strings.Contains(out.String(), "offline") || strings.Contains(out.String(), "lagging")) {
		t.Errorf("status does not show %s lagging:\n%s", follower, out.String())
	}
	t.Logf("\n%s", out.String())
}
