package admin

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// bundle is what a test works with: a JetStream context on a private
// server holding the ingest and dead-letter streams.
type bundle struct {
	js     jetstream.JetStream
	ingest jetstream.Stream
	dlq    jetstream.Stream
	// at holds times a test wants to remember, by dead-letter seq.
	at map[uint64]time.Time
}

// setup starts a server with the ingest stream (limited to ingestBytes;
// 0 means 100 MiB) and an empty dead-letter stream.
func setup(t testing.TB, ingestBytes int64) *bundle {
	t.Helper()
	js := testenv.JetStream(t)
	if ingestBytes == 0 {
		ingestBytes = 100 << 20
	}
	ctx := context.Background()
	in, err := topology.EnsureStream(ctx, js, topology.StreamConfig{MaxBytes: ingestBytes, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := js.CreateStream(ctx, deadletter.Config{MaxAge: time.Hour, MaxBytes: 1 << 30}.Stream(1))
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{js: js, ingest: in, dlq: dl}
}

// entry returns a dead letter for the line data of source, which was at
// ingest sequence seq, with the headers the gateway sets.
func entry(source, reason string, seq uint64, data string) deadletter.Entry {
	id := fmt.Sprintf("gw1.7.%d", seq)
	return deadletter.Entry{
		Subject:    topology.Subject(source),
		Reason:     reason,
		Class:      deadletter.ClassPermanent,
		Error:      "line " + id + " failed: " + reason,
		StreamSeq:  seq,
		Deliveries: 1,
		By:         "worker-1",
		At:         time.Now(),
		Data:       []byte(data),
		Header: nats.Header{
			topology.HeaderMsgID:      {id},
			topology.HeaderLineID:     {id},
			topology.HeaderGateway:    {"gw1"},
			topology.HeaderConn:       {"7"},
			topology.HeaderLine:       {fmt.Sprint(seq)},
			topology.HeaderReceivedAt: {time.Now().UTC().Format(time.RFC3339Nano)},
		},
	}
}

// tooLong returns a gateway entry for a line of length bytes of which it
// kept the first 16.
func tooLong(source string, length int64) deadletter.Entry {
	e := entry(source, deadletter.ReasonTooLong, 0, `{"a":"0123456789`)
	e.StreamSeq, e.Deliveries, e.Length = 0, 0, length
	return e
}

// deadLetter writes entries to the dead-letter stream, as workers and the
// gateway do.
func (b *bundle) deadLetter(t testing.TB, entries ...deadletter.Entry) {
	t.Helper()
	msgs := make([]*nats.Msg, len(entries))
	for i := range entries {
		msgs[i] = entries[i].Msg("")
	}
	testenv.Publish(t, b.js, msgs)
}

// state returns how many messages s holds.
func state(t testing.TB, s jetstream.Stream) jetstream.StreamState {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// ingested returns every message in the ingest stream, oldest first.
func (b *bundle) ingested(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	st := state(t, b.ingest)
	var out []*jetstream.RawStreamMsg
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := b.ingest.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get ingest message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}
