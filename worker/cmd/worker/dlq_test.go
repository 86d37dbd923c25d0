package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
)

// streams creates the ingest and dead-letter streams as a worker does at
// start, and returns a JetStream context.
func streams(t *testing.T, cfg worker.Config) jetstream.JetStream {
	t.Helper()
	_, js := testenv.Connect(t, cfg.NATS.URL)
	if _, err := topology.EnsureStream(t.Context(), js, cfg.Stream); err != nil {
		t.Fatal(err)
	}
	if _, err := deadletter.EnsureStream(t.Context(), js, cfg.DLQ, cfg.Stream.Replicas); err != nil {
		t.Fatal(err)
	}
	return js
}

// deadLetter writes an entry for the line data of source that was at
// ingest sequence seq.
func deadLetter(t *testing.T, js jetstream.JetStream, source, reason string, seq uint64, data string) {
	t.Helper()
	e := deadletter.Entry{
		Subject: topology.Subject(source), Reason: reason, Class: deadletter.ClassTransient,
		Error: "connection refused", StreamSeq: seq, Deliveries: 10, By: "worker-1", At: time.Now(),
		Data: []byte(data),
		// The line's identity, as workers write it on their entries.
		Header: nats.Header{topology.HeaderGateway: {"gw1"}, topology.HeaderLine: {fmt.Sprint(seq)}, topology.HeaderLineID: {fmt.Sprintf("gw1.1.%d", seq)}},
	}
	testenv.Publish(t, js, []*nats.Msg{e.Msg("")})
}

// operate runs `worker ARGS...` against cfg and returns its stdout and
// stderr.
func operate(t *testing.T, cfg worker.Config, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	switch args[0] {
	case "dlq":
		err = dlqTo(t.Context(), cfg, args[1:], &out, &errOut)
	case "status":
		err = statusTo(t.Context(), cfg, args[1:], &out, &errOut)
	default:
		t.Fatalf("no such command %q", args[0])
	}
	return out.String(), errOut.String(), err
}

func TestDLQCommands(t *testing.T) {
	t.Parallel()
	cfg := setup(t, "postgres://postgres@127.0.0.1:1/unused?sslmode=disable")

	// Before anything was dead-lettered.
	if _, _, err := operate(t, cfg, "dlq", "list"); err == nil || !strings.Contains(err.Error(), "no dead letters yet: stream INGEST_DLQ does not exist") {
		t.Errorf("list without the stream: %v", err)
	}
	if _, _, err := operate(t, cfg, "status"); err == nil || !strings.Contains(err.Error(), "stream INGEST does not exist") {
		t.Errorf("status without the stream: %v", err)
	}

	js := streams(t, cfg)
	deadLetter(t, js, "default", deadletter.ReasonMaxDeliveries, 7, `{"a":1}`)
	deadLetter(t, js, "default", deadletter.ReasonMaxDeliveries, 8, `{"a":2}`)
	deadLetter(t, js, "tweets", "invalid_json", 9, `{"a":`)

	out, _, err := operate(t, cfg, "dlq", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"INGEST_DLQ: 3 dead letters", "max_deliveries", "invalid_json", "tweets"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	out, _, err = operate(t, cfg, "dlq", "list", "--reason", "invalid_json", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Entries int `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Entries != 1 {
		t.Errorf("list --json: %v, %s", err, out)
	}

	out, _, err = operate(t, cfg, "dlq", "show", "2", "--full")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"reason:      max_deliveries", "line id:     gw1.1.8", "ingest seq:  8", "deliveries:  10", `{"a":2}`} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}

	// Purge refuses without --yes, and says what it would remove.
	out, _, err = operate(t, cfg, "dlq", "purge", "--reason", "invalid_json")
	if err == nil || !strings.Contains(err.Error(), "add --yes") || !strings.Contains(out, "invalid_json") {
		t.Errorf("purge without --yes: err %v, output:\n%s", err, out)
	}
	if n := dlqMsgs(t, js); n != 3 {
		t.Fatalf("purge without --yes removed entries: %d left", n)
	}

	out, _, err = operate(t, cfg, "dlq", "replay", "--dry-run")
	if err != nil || !strings.Contains(out, "would replay 3 of 3 selected") {
		t.Errorf("replay --dry-run: err %v, output:\n%s", err, out)
	}
	out, _, err = operate(t, cfg, "dlq", "replay", "--source", "default")
	if err != nil || !strings.Contains(out, "replayed 2 of 2 selected") {
		t.Errorf("replay: err %v, output:\n%s", err, out)
	}

	out, _, err = operate(t, cfg, "status", "--interval", "200ms")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"INGEST      2 frames", "INGEST_DLQ  1 dead letter,", "invalid_json 1", "no worker has started"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, _, err = operate(t, cfg, "status", "--interval", "200ms", "--json")
	if err != nil || !strings.Contains(out, `"messages": 2`) {
		t.Errorf("status --json: err %v, output:\n%s", err, out)
	}

	out, _, err = operate(t, cfg, "dlq", "purge", "--yes")
	if err != nil || !strings.Contains(out, "purged 1 dead letter ") || dlqMsgs(t, js) != 0 {
		t.Errorf("purge --yes: err %v, output:\n%s", err, out)
	}
}

func TestDLQUsage(t *testing.T) {
	t.Parallel()
	// Mistakes are caught before any connection: this NATS URL leads
	// nowhere.
	cfg := setup(t, "postgres://postgres@127.0.0.1:1/unused?sslmode=disable")
	cfg.NATS.URL = "nats://" + testenv.FreeAddr(t)
	tests := []struct {
		args    []string
		wantErr string // "" for none
		wantOut string // in stdout or stderr
	}{
		{[]string{"dlq"}, "usage: worker dlq COMMAND", ""},
		{[]string{"dlq", "help"}, "", "replay"},
		{[]string{"dlq", "frob"}, `unknown command "dlq frob"`, ""},
		{[]string{"dlq", "replay", "-h"}, "", "--rate"},
		{[]string{"dlq", "replay", "-h"}, "", "-dry-run"},
		{[]string{"dlq", "purge", "-h"}, "", "-yes"},
		{[]string{"dlq", "list", "--seq", "9-3"}, "must not exceed", ""},
		{[]string{"dlq", "list", "--since", "yesterday"}, "--since", ""},
		{[]string{"dlq", "list", "--reason", "a.b"}, "not a reason token", ""},
		{[]string{"dlq", "list", "extra"}, "takes no arguments", ""},
		{[]string{"dlq", "show"}, "one dead-letter sequence number", ""},
		{[]string{"dlq", "show", "x"}, "not a dead-letter sequence number", ""},
		{[]string{"dlq", "replay", "--rate", "-1"}, "--rate must not be negative", ""},
		{[]string{"dlq", "replay", "--bogus"}, "flag provided but not defined", ""},
		{[]string{"status", "-h"}, "", "--interval"},
		{[]string{"status", "--interval", "1ms"}, "at least 100ms", ""},
	}
	for _, tt := range tests {
		out, errOut, err := operate(t, cfg, tt.args...)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: err %v, want %q", tt.args, err, tt.wantErr)
		}
		if !strings.Contains(out+errOut, tt.wantOut) {
			t.Errorf("%q: output lacks %q:\n%s%s", tt.args, tt.wantOut, out, errOut)
		}
	}
}

// TestReplayStoresEachLineOnce replays into a running worker with real
// Postgres: an interrupted replay, its rerun, and a second dead letter of
// a line already replayed still leave one row per line, keyed by the
// line's identity.
func TestReplayStoresEachLineOnce(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfg := setup(t, dsn)
	js := streams(t, cfg)
	const n = 300
	for i := range n {
		deadLetter(t, js, "replayed", deadletter.ReasonMaxDeliveries, uint64(1000+i), fmt.Sprintf(`{"i":%d}`, i))
	}
	// The same line, dead-lettered twice (say, by two workers racing).
	deadLetter(t, js, "replayed", deadletter.ReasonMaxDeliveries, 1000, `{"i":0}`)

	start(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		// Interrupt once a quarter of the lines are back in the ingest
		// stream (the worker may have taken them already).
		in, err := js.Stream(ctx, topology.StreamName)
		for err == nil {
			var info *jetstream.StreamInfo
			if info, err = in.Info(ctx); err == nil && info.State.LastSeq >= n/4 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	var out, errOut bytes.Buffer
	err := dlqTo(ctx, cfg, []string{"dlq", "replay", "--rate", "500", "--progress", "50ms"}[1:], &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "interrupted") || !strings.Contains(out.String(), "interrupted") {
		t.Fatalf("interrupted replay: err %v, output:\n%s", err, out.String())
	}
	if !strings.Contains(errOut.String(), "replay: ") {
		t.Errorf("no progress on stderr: %q", errOut.String())
	}
	if left := dlqMsgs(t, js); left == 0 {
		t.Fatalf("%d dead letters left after the interruption, want some; output:\n%s\n%s", left, out.String(), errOut.String())
	}
	if _, _, err := operate(t, cfg, "dlq", "replay"); err != nil {
		t.Fatal(err)
	}
	if left := dlqMsgs(t, js); left != 0 {
		t.Fatalf("%d dead letters left after the rerun", left)
	}

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	testenv.Eventually(t, 20*time.Second, "every replayed line stored once", func() error {
		var rows, distinct, keyed int
		err := conn.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT payload),
			count(*) FILTER (WHERE line_id = 'gw1.1.' || ((payload->>'i')::int + 1000))
			FROM events WHERE source = 'replayed'`).Scan(&rows, &distinct, &keyed)
		if err != nil {
			return err
		}
		if rows != n || distinct != n || keyed != n {
			return fmt.Errorf("%d rows, %d distinct, %d keyed by their line's identity; want %d of each", rows, distinct, keyed, n)
		}
		return nil
	})
}

func dlqMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), deadletter.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestReplayWorkerDeadLetter replays an entry the worker itself wrote: a
// line that still fails comes back to the dead letters under a new
// sequence but with its first identity, and replaying that entry again
// keeps it.
func TestReplayWorkerDeadLetter(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfg := setup(t, dsn)
	js := streams(t, cfg)
	start(t, cfg)
	// Ingest sequence 1, without a message id: the line is identified by
	// the stream's creation time and its sequence.
	if _, err := js.Publish(t.Context(), topology.Subject("default"), []byte(`{"broken"`)); err != nil {
		t.Fatal(err)
	}
	ingest, err := js.Stream(t.Context(), topology.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	lineID := fmt.Sprintf("%d.1", ingest.CachedInfo().Created.UnixNano())
	for round := 1; round <= 2; round++ {
		testenv.Eventually(t, 20*time.Second, "dead-lettered", func() error {
			if n := dlqMsgs(t, js); n != 1 {
				return fmt.Errorf("%d dead letters, want 1", n)
			}
			return nil
		})
		out, _, err := operate(t, cfg, "dlq", "list", "--reason", "invalid_json", "--source", "default")
		if err != nil || !strings.Contains(out, "invalid_json") {
			t.Fatalf("round %d: list: %v\n%s", round, err, out)
		}
		s, err := js.Stream(t.Context(), deadletter.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(t.Context(), info.State.LastSeq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := deadletter.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Header.Get(topology.HeaderLineID); e.StreamSeq != uint64(round) || got != lineID {
			t.Errorf("round %d: entry of ingest sequence %d with line id %q; want sequence %d and the line's first identity, %s", round, e.StreamSeq, got, round, lineID)
		}
		if out, _, err := operate(t, cfg, "dlq", "replay"); err != nil || !strings.Contains(out, "replayed 1 of 1") {
			t.Fatalf("round %d: replay: %v\n%s", round, err, out)
		}
	}

	// Once the line is back in the dead letters, status sees an idle
	// worker: its loops' fetch requests wait, nothing is pending.
	testenv.Eventually(t, 20*time.Second, "status of an idle worker", func() error {
		out, _, err := operate(t, cfg, "status", "--interval", "200ms", "--json")
		if err != nil {
			return err
		}
		var st struct {
			Consumer struct {
				Pending int `json:"pending"`
				Waiting int `json:"waiting_pulls"`
			} `json:"consumer"`
			DeadLetters struct {
				ByReason map[string]int `json:"by_reason"`
			} `json:"dead_letters"`
			Verdict string `json:"verdict"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if st.Consumer.Waiting < 1 || st.Consumer.Pending != 0 || st.DeadLetters.ByReason["invalid_json"] != 1 || !strings.HasPrefix(st.Verdict, "idle") {
			return fmt.Errorf("status: %s", out)
		}
		return nil
	})
}
