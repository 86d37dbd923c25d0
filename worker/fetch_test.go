package worker

import (
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// TestHeldFrameKeepsNoOthers checks that a frame a batch holds (a loop
// stuck in a long transaction) keeps no other frame alive: the frames
// consumed after it, taken and acknowledged, are garbage once
// acknowledged. nats.go links the messages it queues for a callback
// subscription (Consume) each to the next and never unlinks them, so
// through Consume the held frame kept the frames delivered after it for as
// long as the subscription's queue did not run empty: 66 to all 399 of
// them here (fails so with Worker.consume on Consume).
func TestHeldFrameKeepsNoOthers(t *testing.T) {
	t.Parallel()
	const (
		frames     = 500
		frameBytes = 64 << 10
		batchBytes = 1 << 20
	)
	nb := setupNATS(t, time.Minute)
	payload := testenv.NDJSON(frameBytes)
	msgs := make([]*nats.Msg, frames)
	for i := range msgs {
		msgs[i] = benchFrame(payload, i)
	}
	testenv.Publish(t, nb.js, msgs)

	// One loop's share of what Run sets up.
	w := &Worker{cons: nb.cons, logger: testenv.Logger(t)}
	q := newPrefetch(batchBytes)
	stop, err := w.consume(q, 2*batchBytes, func() { t.Error("connection closed") })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	// Every frame one at a time and slower than the server delivers them,
	// as a loop with work to do, so that nats.go's queue for the consumer
	// never runs empty; the 100th is held, the others acknowledged.
	var held jetstream.Msg
	var after []weak.Pointer[byte]
	var batch []jetstream.Msg
	for n := 1; n < frames; n++ {
		clear(batch)
		batch = q.take(t.Context(), batch[:0], 1, batchBytes)
		time.Sleep(time.Millisecond)
		m := batch[0]
		switch {
		case n == 100:
			held = m
			continue
		case held != nil:
			after = append(after, weak.Make(&m.Data()[0]))
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	clear(batch)
	runtime.GC()
	runtime.GC()
	alive := 0
	for _, p := range after {
		if p.Value() != nil {
			alive++
		}
	}
	// nats.go may still hold the last few frames it handed over.
	if alive > 4 {
		t.Errorf("%d of the %d frames taken and acknowledged after the held one are still alive, want them garbage", alive, len(after))
	}
	runtime.KeepAlive(held)
}
