package deadletter

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

func setup(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js := testenv.JetStream(t)
	s, err := EnsureStream(t.Context(), js, Config{MaxAge: time.Hour, MaxBytes: 1 << 20}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return js, s
}

// publish publishes m and returns the stored message.
func publish(t *testing.T, js jetstream.JetStream, s jetstream.Stream, m *nats.Msg) (*jetstream.PubAck, *jetstream.RawStreamMsg) {
	t.Helper()
	ack, err := js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(t.Context(), ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	return ack, raw
}

func TestEntryRoundTrip(t *testing.T) {
	t.Parallel()
	js, s := setup(t)
	at := time.Date(2026, 11, 23, 1, 2, 3, 456789012, time.UTC)
	line := []byte(`{"id":1,"n":1e1000000}`)
	tests := []struct {
		name string
		in   Entry
		id   string
		// want is what Decode returns, Seq, Header and At aside.
		want Entry
	}{
		{
			name: "worker entry",
			in: Entry{
				Subject: "ingest.tweets", Reason: "pg_22003", Class: ClassPermanent,
				Error: "value overflows numeric format", StreamSeq: 42, Deliveries: 1, By: "w-1", At: at, Data: line,
				Header: nats.Header{
					topology.HeaderMsgID:      []string{"gw.3.17"},
					topology.HeaderGateway:    []string{"gw"},
					topology.HeaderReceivedAt: []string{"2026-11-23T01:00:00Z"},
				},
			},
			id: "dlq.42",
			want: Entry{
				Source: "tweets", Subject: "ingest.tweets", Reason: "pg_22003", Class: ClassPermanent,
				Error: "value overflows numeric format", StreamSeq: 42, Deliveries: 1, By: "w-1",
				Length: int64(len(line)), Data: line,
			},
		},
		{
			name: "max deliveries, multi-line error",
			in: Entry{
				Subject: "ingest.default", Reason: ReasonMaxDeliveries, Class: ClassTransient,
				Error: "copy into events:\n\tconnection refused", StreamSeq: 7, Deliveries: 10, By: "w-2", At: at, Data: []byte(`{}`),
			},
			id: "dlq.7",
			want: Entry{
				Source: "default", Subject: "ingest.default", Reason: ReasonMaxDeliveries, Class: ClassTransient,
				Error: "copy into events: connection refused", StreamSeq: 7, Deliveries: 10, By: "w-2",
				Length: 2, Data: []byte(`{}`),
			},
		},
		{
			name: "gateway entry, truncated line",
			in: Entry{
				Subject: "ingest.feed", Reason: ReasonTooLong, Class: ClassPermanent, Error: "line over 1048576 bytes",
				By: "gw-1", At: at, Length: 5 << 20, Data: bytes.Repeat([]byte("x"), 100),
			},
			want: Entry{
				Source: "feed", Subject: "ingest.feed", Reason: ReasonTooLong, Class: ClassPermanent, Error: "line over 1048576 bytes",
				By: "gw-1", Length: 5 << 20, Data: bytes.Repeat([]byte("x"), 100),
			},
		},
	}
	for _, tt := range tests {
		m := tt.in.Msg(tt.id)
		if want := Subject(tt.want.Source, tt.want.Reason); m.Subject != want {
			t.Errorf("%s: subject %q, want %q", tt.name, m.Subject, want)
		}
		ack, raw := publish(t, js, s, m)
		got, err := Decode(raw)
		if err != nil {
			t.Fatalf("%s: Decode: %v", tt.name, err)
		}
		if got.Seq != ack.Sequence || !got.At.Equal(at) {
			t.Errorf("%s: seq %d at %s, want %d at %s", tt.name, got.Seq, got.At, ack.Sequence, at)
		}
		if got.Header.Get(jetstream.MsgIDHeader) != tt.id {
			t.Errorf("%s: message id %q, want %q (the line's own is replaced)", tt.name, got.Header.Get(jetstream.MsgIDHeader), tt.id)
		}
		for k := range tt.in.Header {
			if k != jetstream.MsgIDHeader && got.Header.Get(k) != tt.in.Header.Get(k) {
				t.Errorf("%s: header %s = %q, want the line's %q", tt.name, k, got.Header.Get(k), tt.in.Header.Get(k))
			}
		}
		if got.Truncated() != (tt.want.Length > int64(len(tt.want.Data))) {
			t.Errorf("%s: Truncated() = %v", tt.name, got.Truncated())
		}
		got.Seq, got.Header, got.At = 0, nil, time.Time{}
		if !entriesEqual(got, tt.want) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	// The entry's headers are its own copy: building the message did not
	// touch the line's.
	if h := tests[0].in.Header; h.Get(topology.HeaderMsgID) != "gw.3.17" || h.Get(HeaderReason) != "" {
		t.Errorf("Msg changed the entry's headers: %v", h)
	}
}

func entriesEqual(a, b Entry) bool {
	return a.Seq == b.Seq && a.Source == b.Source && a.Subject == b.Subject && a.Reason == b.Reason &&
		a.Class == b.Class && a.Error == b.Error && a.StreamSeq == b.StreamSeq && a.Deliveries == b.Deliveries &&
		a.By == b.By && a.Length == b.Length && bytes.Equal(a.Data, b.Data)
}

// TestPublishTwiceStoredOnce: a dead letter published again with the same
// id (after a lost PubAck) is stored once.
func TestPublishTwiceStoredOnce(t *testing.T) {
	t.Parallel()
	js, s := setup(t)
	e := Entry{Subject: "ingest.a", Reason: "invalid_json", Class: ClassPermanent, StreamSeq: 9, Data: []byte("{")}
	first, err := js.PublishMsg(t.Context(), e.Msg("dlq.9"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := js.PublishMsg(t.Context(), e.Msg("dlq.9"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("second publish: %+v, want a duplicate of %d", again, first.Sequence)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d entries, want 1", info.State.Msgs)
	}
}

func TestEnsureStream(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	// Again, as the second program to start does, with new limits.
	s, err := EnsureStream(t.Context(), js, Config{MaxAge: 2 * time.Hour, MaxBytes: 2 << 20}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Name != StreamName || cfg.MaxAge != 2*time.Hour || cfg.MaxBytes != 2<<20 || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.Discard != jetstream.DiscardOld || len(cfg.Subjects) != 1 || cfg.Subjects[0] != StreamSubjects {
		t.Fatalf("stream config %+v", cfg)
	}
	// The dead-letter stream must not overlap the ingest stream.
	if _, err := topology.EnsureStream(t.Context(), js, topology.StreamConfig{MaxBytes: 1 << 20, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}); err != nil {
		t.Fatalf("ingest stream beside the dead letters: %v", err)
	}
	if _, err := EnsureStream(t.Context(), js, Config{MaxAge: time.Hour, MaxBytes: 1 << 20}, 7); err == nil {
		t.Fatal("7 replicas on one server accepted")
	}
}

func TestDecodeForeign(t *testing.T) {
	t.Parallel()
	_, err := Decode(&jetstream.RawStreamMsg{Subject: "dlq.a.b", Sequence: 3, Header: nats.Header{"X": []string{"y"}}})
	if err == nil || !strings.Contains(err.Error(), HeaderReason) {
		t.Fatalf("Decode of a message without %s: %v", HeaderReason, err)
	}
	_, err = Decode(&jetstream.RawStreamMsg{Subject: "dlq.a.b", Sequence: 4, Header: nats.Header{
		HeaderReason: []string{"x"}, HeaderStreamSeq: []string{"many"}, HeaderAt: []string{"yesterday"},
	}})
	if err == nil || !strings.Contains(err.Error(), HeaderStreamSeq) || !strings.Contains(err.Error(), HeaderAt) {
		t.Fatalf("Decode of malformed headers: %v", err)
	}
}

func TestSubjectAndToken(t *testing.T) {
	t.Parallel()
	tests := []struct{ source, reason, want string }{
		{"tweets", "pg_22003", "dlq.tweets.pg_22003"},
		{"", "invalid_json", "dlq._.invalid_json"},
		{"a", "", "dlq.a.unknown"},
		{"a", "bad.reason >*", "dlq.a.bad_reason___"},
	}
	for _, tt := range tests {
		if got := Subject(tt.source, tt.reason); got != tt.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", tt.source, tt.reason, got, tt.want)
		}
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	if got := oneLine("a\n\tb  c\r\n"); got != "a b c" {
		t.Errorf("oneLine = %q", got)
	}
	long := strings.Repeat("é", MaxErrorBytes) // 2 bytes each
	got := oneLine(long)
	if len(got) > MaxErrorBytes+len("…") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("oneLine of %d bytes = %d bytes, not a cut at a rune boundary", len(long), len(got))
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{MaxAge: time.Hour, MaxBytes: 1}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	err := Config{}.Validate()
	if err == nil || !strings.Contains(err.Error(), "INGEST_DLQ_MAX_AGE") || !strings.Contains(err.Error(), "INGEST_DLQ_MAX_BYTES") {
		t.Errorf("zero config: %v", err)
	}
}

// A line's JetStream instructions (Nats-*) were for its own publish; copied
// onto its dead letter they would make the dead-letter stream refuse it.
func TestMsgDropsJetStreamHeaders(t *testing.T) {
	e := Entry{Subject: "ingest.tweets", Reason: "invalid_json", Data: []byte("x"), Header: nats.Header{
		"Nats-Msg-Id":                 {"gw.1.1"},
		"Nats-Expected-Stream":        {"INGEST"},
		"nats-expected-last-sequence": {"7"},
		"Jetline-Line":                {"1"},
	}}
	h := e.Msg("dlq.5").Header
	for k := range h {
		if k != "Nats-Msg-Id" && strings.HasPrefix(strings.ToLower(k), "nats-") {
			t.Errorf("dead letter kept header %s", k)
		}
	}
	if got := h.Get("Nats-Msg-Id"); got != "dlq.5" {
		t.Errorf("Nats-Msg-Id = %q, want dlq.5", got)
	}
	if got := h.Get("Jetline-Line"); got != "1" {
		t.Errorf("Jetline-Line = %q, want the line's own header kept", got)
	}
}
