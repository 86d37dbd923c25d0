package worker

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// readLine reads m as the worker reads a message holding one line.
func readLine(m jetstream.Msg, seqIDs topology.SeqLineIDs) (Line, uint64, Result) {
	meta, res := readFrame(m, seqIDs)
	return meta.line(0, m.Data()), meta.delivered, res
}

// TestReadFrameLineIDs checks the identity of each line of a message: a
// gateway's frame gives its k-th line the identity of line first+k of its
// connection, exactly the id that line had as a message of its own; a
// message of several lines from another program numbers them after its
// stream sequence; a single line keeps its line id or message id.
func TestReadFrameLineIDs(t *testing.T) {
	t.Parallel()
	md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 77}, NumDelivered: 2}
	frameHeader := func(msgID, first, lines string) nats.Header {
		return nats.Header{topology.HeaderMsgID: {msgID}, topology.HeaderLine: {first}, topology.HeaderLines: {lines}}
	}
	tests := []struct {
		name string
		msg  *testMsg
		want []string
	}{
		{"gateway frame", &testMsg{data: []byte("a\nb\nc\n"), md: md, headers: frameHeader("gw-1.9.40", "40", "3")},
			[]string{"gw-1.9.40", "gw-1.9.41", "gw-1.9.42"}},
		{"named upload's frame", &testMsg{data: []byte("a\nb\n"), md: md, headers: frameHeader("default/rc-2018.7+2", "7", "2")},
			[]string{"default/rc-2018.7", "default/rc-2018.8"}},
		{"gateway frame of one line", &testMsg{data: []byte("a\n"), md: md, headers: frameHeader("gw-1.9.5", "5", "1")},
			[]string{"gw-1.9.5"}},
		{"several lines from another program", &testMsg{data: []byte("a\r\nb\n\nd"), md: md},
			[]string{"P.77.1", "P.77.2", "P.77.4"}},
		{"several lines with a message id that names no line", &testMsg{data: []byte("a\nb"), md: md,
			headers: nats.Header{topology.HeaderMsgID: {"their-id"}}},
			[]string{"P.77.1", "P.77.2"}},
		{"one line from another program", &testMsg{data: []byte("a\n"), md: md}, []string{"P.77"}},
		{"one line with a message id", &testMsg{data: []byte("a"), md: md, headers: nats.Header{topology.HeaderMsgID: {"their-id"}}},
			[]string{"their-id"}},
		{"replayed line", &testMsg{data: []byte("a\n"), md: md,
			headers: nats.Header{topology.HeaderMsgID: {"replay.3"}, topology.HeaderLineID: {"gw-1.9.41"}, topology.HeaderLine: {"41"}}},
			[]string{"gw-1.9.41"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			meta, res := readFrame(tt.msg, "P.")
			if res.Outcome != Insert || meta.delivered != 2 || meta.seq != 77 {
				t.Fatalf("readFrame = %+v, %+v", meta, res)
			}
			var got []string
			for k, data := range topology.Lines(tt.msg.data) {
				got = append(got, meta.line(k, data).ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ids = %v, want %v", got, tt.want)
			}
		})
	}
}

// testMsg is a delivered message as readFrame sees it; only the accessors
// readFrame uses are implemented.
type testMsg struct {
	jetstream.Msg
	subject string
	data    []byte
	headers nats.Header
	md      *jetstream.MsgMetadata
}

func (m *testMsg) Subject() string      { return m.subject }
func (m *testMsg) Data() []byte         { return m.data }
func (m *testMsg) Headers() nats.Header { return m.headers }
func (m *testMsg) Metadata() (*jetstream.MsgMetadata, error) {
	if m.md == nil {
		return nil, errors.New("not a jetstream message")
	}
	return m.md, nil
}

func TestRawLandingTransform(t *testing.T) {
	t.Parallel()
	stored := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	received := time.Date(2026, 3, 1, 11, 59, 59, 123456789, time.UTC)
	md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 4242}, NumDelivered: 3, Timestamp: stored}
	header := func(v string) nats.Header { return nats.Header{topology.HeaderReceivedAt: []string{v}} }
	tweet := tweetLine(9)
	tests := []struct {
		name       string
		msg        *testMsg
		wantResult Result
		wantSource string
		wantAt     time.Time
		wantID     string // empty means the fallback, idPrefix + "4242"
	}{
		{
			name:       "valid line",
			msg:        &testMsg{subject: "ingest.tweets", data: tweet, headers: header(received.Format(time.RFC3339Nano)), md: md},
			wantResult: Result{Outcome: Insert},
			wantSource: "tweets",
			wantAt:     received,
		},
		{
			name:       "received-at header missing",
			msg:        &testMsg{subject: "ingest.tweets", data: []byte(`{"a":1}`), md: md},
			wantResult: Result{Outcome: Insert},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name:       "received-at header malformed",
			msg:        &testMsg{subject: "ingest.tweets", data: []byte(`[1,2]`), headers: header("yesterday"), md: md},
			wantResult: Result{Outcome: Insert},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name:       "received-at with offset",
			msg:        &testMsg{subject: "ingest.x", data: []byte(`1`), headers: header("2026-03-01T13:59:59.123456789+02:00"), md: md},
			wantResult: Result{Outcome: Insert},
			wantSource: "x",
			wantAt:     received,
		},
		{
			name:       "source from subject",
			msg:        &testMsg{subject: "ingest.firehose-2_eu", data: []byte(`{}`), md: md},
			wantResult: Result{Outcome: Insert},
			wantSource: "firehose-2_eu",
			wantAt:     stored,
		},
		{
			name:       "invalid JSON",
			msg:        &testMsg{subject: "ingest.tweets", data: tweet[:len(tweet)-3], md: md},
			wantResult: Result{Outcome: Reject, Reason: ReasonInvalidJSON},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name:       "two documents on one line",
			msg:        &testMsg{subject: "ingest.tweets", data: []byte(`{"a":1}{"a":2}`), md: md},
			wantResult: Result{Outcome: Reject, Reason: ReasonInvalidJSON},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name:       "empty line",
			msg:        &testMsg{subject: "ingest.tweets", data: nil, md: md},
			wantResult: Result{Outcome: Reject, Reason: ReasonInvalidJSON},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name:       "invalid UTF-8",
			msg:        &testMsg{subject: "ingest.tweets", data: []byte("{\"a\":\"\xc3\x28\"}"), md: md},
			wantResult: Result{Outcome: Reject, Reason: ReasonInvalidJSON},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name:       "NUL escape jsonb cannot hold",
			msg:        &testMsg{subject: "ingest.tweets", data: []byte(`{"a":"\u0000"}`), md: md},
			wantResult: Result{Outcome: Reject, Reason: ReasonUnsupportedEscape},
			wantSource: "tweets",
			wantAt:     stored,
		},
		{
			name: "identified by the gateway's message id",
			msg: &testMsg{subject: "ingest.tweets", data: []byte(`{"a":1}`), md: md,
				headers: nats.Header{topology.HeaderMsgID: []string{"gw-1a2b.7.31"}}},
			wantResult: Result{Outcome: Insert},
			wantSource: "tweets",
			wantAt:     stored,
			wantID:     "gw-1a2b.7.31",
		},
		{
			name: "replayed line identified by its line id, not the replay's message id",
			msg: &testMsg{subject: "ingest.tweets", data: []byte(`{"a":1}`), md: md,
				headers: nats.Header{topology.HeaderMsgID: []string{"replay.12"}, topology.HeaderLineID: []string{"gw-1a2b.7.31"}}},
			wantResult: Result{Outcome: Insert},
			wantSource: "tweets",
			wantAt:     stored,
			wantID:     "gw-1a2b.7.31",
		},
		{
			name: "rejected line keeps its identity for the dead letter",
			msg: &testMsg{subject: "ingest.tweets", data: []byte(`{"a":`), md: md,
				headers: nats.Header{topology.HeaderMsgID: []string{"gw-1a2b.7.32"}}},
			wantResult: Result{Outcome: Reject, Reason: ReasonInvalidJSON},
			wantSource: "tweets",
			wantAt:     stored,
			wantID:     "gw-1a2b.7.32",
		},
		{
			name:       "no metadata",
			msg:        &testMsg{subject: "ingest.tweets", data: []byte(`{}`)},
			wantResult: Result{Outcome: Reject, Reason: ReasonNoMetadata},
			wantSource: "tweets",
		},
	}
	raw, err := NewRawLanding("events")
	if err != nil {
		t.Fatal(err)
	}
	// A line without an id is identified by the stream's creation time
	// and its sequence.
	const idPrefix = "1772366400000000000."
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			line, delivered, res := readLine(tt.msg, idPrefix)
			var row []any
			if res.Outcome == Insert {
				row, res = transformOne(raw, &line)
			}
			if res.Outcome != tt.wantResult.Outcome || res.Reason != tt.wantResult.Reason {
				t.Fatalf("result %+v, want %+v", res, tt.wantResult)
			}
			if res.Outcome == Reject && res.Detail == "" {
				t.Error("rejected without detail")
			}
			if line.Source != tt.wantSource {
				t.Errorf("source %q, want %q", line.Source, tt.wantSource)
			}
			if tt.msg.md == nil {
				return
			}
			wantID := cmp.Or(tt.wantID, idPrefix+"4242")
			if delivered != 3 || line.Seq != 4242 || line.ID != wantID {
				t.Errorf("delivered %d, seq %d, id %q; want 3, 4242, %q", delivered, line.Seq, line.ID, wantID)
			}
			if !line.ReceivedAt.Equal(tt.wantAt) {
				t.Errorf("received at %s, want %s", line.ReceivedAt, tt.wantAt)
			}
			if res.Outcome != Insert {
				return
			}
			at, _ := row[3].(time.Time)
			payload, _ := row[4].([]byte)
			if row[0] != wantID || row[1] != int64(4242) || row[2] != tt.wantSource || !at.Equal(tt.wantAt) || !bytes.Equal(payload, tt.msg.data) {
				t.Errorf("row (%v, %v, %v, %v, %.20q), want (%s, 4242, %s, %s, %.20q)", row[0], row[1], row[2], row[3], payload, wantID, tt.wantSource, tt.wantAt, tt.msg.data)
			}
		})
	}
}

func TestTableValidate(t *testing.T) {
	t.Parallel()
	cols := []Column{{Name: "id", Type: "bigint"}, {Name: "body", Type: "text"}}
	tests := []struct {
		name  string
		table Table
		want  string // substring of the error; empty for valid
	}{
		{"valid", Table{Name: "t", Columns: cols, Key: []string{"id"}}, ""},
		{"schema", Table{Schema: "raw", Name: "t", Columns: cols, Key: []string{"id", "body"}}, ""},
		{"no key", Table{Name: "t", Columns: cols}, "no key"},
		{"unknown key", Table{Name: "t", Columns: cols, Key: []string{"nope"}}, `key column "nope"`},
		{"no columns", Table{Name: "t", Key: []string{"id"}}, "no columns"},
		{"bad column", Table{Name: "t", Columns: []Column{{Name: "a b", Type: "int"}}, Key: []string{"a b"}}, "not a plain SQL identifier"},
		{"duplicate column", Table{Name: "t", Columns: []Column{{Name: "a", Type: "int"}, {Name: "a", Type: "int"}}, Key: []string{"a"}}, "twice"},
		{"type injection", Table{Name: "t", Columns: []Column{{Name: "a", Type: "int; DROP TABLE x"}}, Key: []string{"a"}}, "no usable type"},
		{"bad compression", Table{Name: "t", Columns: []Column{{Name: "a", Type: "text", Compression: "zstd"}}, Key: []string{"a"}}, "compression"},
		{"bad name", Table{Name: "1t", Columns: cols, Key: []string{"id"}}, "not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.table.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
