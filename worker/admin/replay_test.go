package admin

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

func TestReplay(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	ctx := context.Background()
	b.deadLetter(t,
		entry("default", "invalid_json", 11, `{"a":1}`), // dlq seq 1
		entry("tweets", "pg_22003", 12, `{"b":2}`),      // 2
		tooLong("default", 1<<20),                       // 3
		entry("default", "invalid_json", 14, `{"c":3}`), // 4
	)

	var progress bytes.Buffer
	res, err := Replay(ctx, b.js, ReplayOptions{Filter: Filter{Source: "default"}, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if res.Selected != 3 || res.Replayed != 2 || res.SkippedTotal() != 1 || res.Skipped[skipTruncated] != 1 || res.Failed != 0 || res.Interrupted {
		t.Errorf("result = %+v, want 3 selected, 2 replayed, 1 skipped as truncated", res)
	}
	var out bytes.Buffer
	if err := WriteReplayResult(&out, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replayed 2 of 3 selected", "skipped 1", "failed 0", "skipped 1: truncated"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}

	msgs := b.ingested(t)
	if len(msgs) != 2 {
		t.Fatalf("ingest stream holds %d lines, want 2", len(msgs))
	}
	for i, want := range []struct {
		dlqSeq, line uint64
		data         string
	}{{1, 11, `{"a":1}`}, {4, 14, `{"c":3}`}} {
		m := msgs[i]
		if m.Subject != "ingest.default" || string(m.Data) != want.data {
			t.Errorf("replayed line %d: %s %q", i, m.Subject, m.Data)
		}
		h := m.Header
		if got, id := h.Get(topology.HeaderLineID), fmt.Sprintf("gw1.7.%d", want.line); got != id {
			t.Errorf("line %d: %s = %q, want %s, the identity the worker wrote on the entry", i, topology.HeaderLineID, got, id)
		}
		if got := h.Get(jetstream.MsgIDHeader); got != fmt.Sprintf("replay.%d", want.dlqSeq) {
			t.Errorf("line %d: Nats-Msg-Id = %q, want replay.%d", i, got, want.dlqSeq)
		}
		if h.Get(topology.HeaderGateway) != "gw1" || h.Get(topology.HeaderLine) != strconv.FormatUint(want.line, 10) || h.Get(topology.HeaderReceivedAt) == "" {
			t.Errorf("line %d lost the gateway's headers: %v", i, h)
		}
		for k := range h {
			// Anything else would be stored with the line and copied
			// into a later dead letter of it (an expected-stream header
			// would make INGEST_DLQ refuse that).
			if strings.HasPrefix(k, "Jetline-Dlq-") || strings.HasPrefix(k, "Nats-") && k != jetstream.MsgIDHeader {
				t.Errorf("line %d carries header %s", i, k)
			}
		}
	}

	// Replayed entries are gone, the skipped one and the other source's
	// stay.
	left := b.dlqSeqs(t)
	if fmt.Sprint(left) != "[2 3]" {
		t.Errorf("dead letters left = %v, want [2 3]", left)
	}

	// A line larger than the byte window still goes.
	res, err = Replay(ctx, b.js, ReplayOptions{WindowBytes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed != 1 || res.SkippedTotal() != 1 {
		t.Errorf("replay with a 3-byte window = %+v, want 1 replayed, 1 skipped", res)
	}
}

func TestReplayFilters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		filter   func(b *bundle) Filter
		replayed []uint64 // dead-letter seqs
	}{
		{"all", func(*bundle) Filter { return Filter{} }, []uint64{1, 2, 3, 4, 5}},
		{"reason", func(*bundle) Filter { return Filter{Reason: "pg_22003"} }, []uint64{2, 5}},
		{"source", func(*bundle) Filter { return Filter{Source: "tweets"} }, []uint64{2, 3}},
		{"seq range", func(*bundle) Filter { return Filter{FromSeq: 2, ToSeq: 4} }, []uint64{2, 3, 4}},
		{"seq range and reason", func(*bundle) Filter { return Filter{FromSeq: 2, Reason: "invalid_json"} }, []uint64{3, 4}},
		{"since", func(b *bundle) Filter { return Filter{Since: b.at[4]} }, []uint64{4, 5}},
		{"until", func(b *bundle) Filter { return Filter{Until: b.at[2]} }, []uint64{1, 2}},
		{"since and until", func(b *bundle) Filter { return Filter{Since: b.at[2], Until: b.at[3]} }, []uint64{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 0)
			b.deadLetter(t,
				entry("default", "invalid_json", 101, "1"),
				entry("tweets", "pg_22003", 102, "2"),
				entry("tweets", "invalid_json", 103, "3"),
				entry("default", "invalid_json", 104, "4"),
				entry("default", "pg_22003", 105, "5"),
			)
			b.at = map[uint64]time.Time{}
			for seq := uint64(1); seq <= 5; seq++ {
				b.at[seq] = storedAt(t, b, seq)
			}
			res, err := Replay(context.Background(), b.js, ReplayOptions{Filter: tt.filter(b)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Replayed != uint64(len(tt.replayed)) || res.Selected != uint64(len(tt.replayed)) {
				t.Errorf("result = %+v, want %d selected and replayed", res, len(tt.replayed))
			}
			var got []uint64
			for _, m := range b.ingested(t) {
				n, _ := strconv.ParseUint(string(m.Data), 10, 64)
				got = append(got, n)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.replayed) {
				t.Errorf("replayed %v, want %v", got, tt.replayed)
			}
			if left := b.dlqSeqs(t); len(left)+len(got) != 5 {
				t.Errorf("dead letters left %v after replaying %v", left, got)
			}
		})
	}
}

func TestReplayDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	b.deadLetter(t, entry("default", "invalid_json", 1, "{"), entry("default", "invalid_json", 2, "{"), tooLong("default", 1<<20))
	before := state(t, b.dlq)
	res, err := Replay(context.Background(), b.js, ReplayOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Replayed != 2 || res.SkippedTotal() != 1 {
		t.Errorf("dry run = %+v, want 2 to replay and 1 to skip", res)
	}
	if after := state(t, b.dlq); after.Msgs != before.Msgs || after.LastSeq != before.LastSeq {
		t.Errorf("dry run changed the dead letters: %+v → %+v", before, after)
	}
	if n := state(t, b.ingest).Msgs; n != 0 {
		t.Errorf("dry run published %d lines", n)
	}
	var out bytes.Buffer
	WriteReplayResult(&out, res)
	if !strings.Contains(out.String(), "would replay 2 of 3 selected") {
		t.Errorf("dry-run summary: %s", out.String())
	}
}

// TestReplayInterruptedThenRerun cancels a paced replay half-way, checks
// nothing is lost, then finishes it, including entries whose republish
// was acknowledged but which were never removed (a crash between the two).
func TestReplayInterruptedThenRerun(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	const n = 400
	entries := make([]deadletter.Entry, n)
	for i := range entries {
		entries[i] = entry("default", "max_deliveries", uint64(1000+i), fmt.Sprintf(`{"i":%d}`, i))
	}
	b.deadLetter(t, entries...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Interrupt once some, not all, lines are back in the ingest stream.
		for {
			info, err := b.ingest.Info(ctx)
			if err != nil || info.State.Msgs >= n/4 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	res, err := Replay(ctx, b.js, ReplayOptions{Rate: 500})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Replayed == 0 || res.Replayed >= n || res.Failed != 0 {
		t.Fatalf("interrupted replay = %+v, want some but not all replayed", res)
	}
	ingested, left := state(t, b.ingest).Msgs, state(t, b.dlq).Msgs
	if ingested != res.Replayed || ingested+left != n {
		t.Fatalf("after the interruption: %d replayed, %d in ingest, %d dead letters left; want replayed = ingest and ingest + left = %d", res.Replayed, ingested, left, n)
	}

	// Simulate a replay that died after its publishes were acknowledged
	// but before it removed the entries: republish the next 10 by hand.
	seqs := b.dlqSeqs(t)
	for _, seq := range seqs[:10] {
		m, err := b.dlq.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := deadletter.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.PublishMsg(context.Background(), replayMsg(e)); err != nil {
			t.Fatal(err)
		}
	}

	res2, err := Replay(context.Background(), b.js, ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Interrupted || res2.Replayed != left || res2.Duplicates != 10 {
		t.Errorf("rerun = %+v, want %d replayed of which 10 duplicates", res2, left)
	}
	if left := state(t, b.dlq).Msgs; left != 0 {
		t.Errorf("%d dead letters left after the rerun, want none", left)
	}
	// Every line is in the ingest stream exactly once.
	seen := map[string]int{}
	for _, m := range b.ingested(t) {
		seen[m.Header.Get(topology.HeaderLineID)]++
	}
	if len(seen) != n {
		t.Errorf("ingest holds %d distinct lines, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("line %s is in the ingest stream %d times", id, c)
		}
	}
}

// TestReplayDeletesOnlyAfterAck replays into an ingest stream that fills
// up: the lines it refuses stay in the dead letters.
func TestReplayDeletesOnlyAfterAck(t *testing.T) {
	t.Parallel()
	b := setup(t, 4<<10)
	const n = 20
	entries := make([]deadletter.Entry, n)
	for i := range entries {
		entries[i] = entry("default", "max_deliveries", uint64(i+1), fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 900)))
	}
	b.deadLetter(t, entries...)

	res, err := Replay(context.Background(), b.js, ReplayOptions{Window: 1})
	if err == nil || !strings.Contains(err.Error(), "stays in INGEST_DLQ") {
		t.Fatalf("replay into a full stream: err = %v, want the refusal", err)
	}
	if res.Failed == 0 || res.Replayed == 0 || res.Replayed >= n {
		t.Errorf("result = %+v, want some replayed and a failure", res)
	}
	ingested, left := state(t, b.ingest).Msgs, state(t, b.dlq).Msgs
	if ingested != res.Replayed || left != n-res.Replayed {
		t.Errorf("%d in ingest, %d dead letters left, %d replayed: an entry was removed without its line being stored", ingested, left, res.Replayed)
	}
}

func TestReplayWithoutIngest(t *testing.T) {
	t.Parallel()
	js := testenv.JetStream(t)
	if _, err := js.CreateStream(context.Background(), deadletter.Config{MaxAge: time.Hour, MaxBytes: 1 << 20}.Stream(1)); err != nil {
		t.Fatal(err)
	}
	_, err := Replay(context.Background(), js, ReplayOptions{})
	if err == nil || !strings.Contains(err.Error(), "stream INGEST does not exist") {
		t.Errorf("replay without the ingest stream: %v", err)
	}
}

func TestReplayMsgKeepsLineID(t *testing.T) {
	t.Parallel()
	// A replayed line that failed again carries the identity of its first
	// life (the worker copies it into the new entry), so it keys the same
	// row however often it is replayed.
	e := entry("default", "invalid_json", 500, "{")
	e.Seq = 9
	e.Header.Set(topology.HeaderLineID, "gw1.3.17")
	m := replayMsg(e)
	if got := m.Header.Get(topology.HeaderLineID); got != "gw1.3.17" {
		t.Errorf("line id = %q, want gw1.3.17", got)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != "replay.9" {
		t.Errorf("msg id = %q, want replay.9", got)
	}
	// An entry without one (from before workers wrote it) is identified
	// by its replay message id: no line id is made up for it.
	e.Header.Del(topology.HeaderLineID)
	m = replayMsg(e)
	if got := m.Header.Values(topology.HeaderLineID); len(got) != 0 {
		t.Errorf("line id of an entry that had none = %q, want none", got)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != "replay.9" {
		t.Errorf("msg id = %q, want replay.9", got)
	}
}

// dlqSeqs returns the sequences of the entries left in the dead letters.
func (b *bundle) dlqSeqs(t *testing.T) []uint64 {
	t.Helper()
	var seqs []uint64
	err := scan(context.Background(), b.dlq, Filter{}, true, func(l letter) error {
		seqs = append(seqs, l.Entry.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}
