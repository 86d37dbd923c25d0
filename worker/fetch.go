package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// prefetch holds the frames the consumer has delivered and no batch has
// taken yet, bounded by bytes. It is where demand meets supply, as in
// GenStage: JetStream delivers frames through [jetstream.Consumer]'s
// Messages (which keeps pull requests outstanding up to its own byte
// budget), a goroutine moves each into the queue and blocks while it is
// full, and each batch loop takes what is waiting: at least one frame, as
// many as fit its limits, and never waits for more once one is there. A
// trickling feed is so stored frame by frame as it arrives, and a flood
// fills batches.
//
// What a worker holds of the frames at most is so fixed by
// WORKER_BATCH_BYTES (B), WORKER_CONCURRENCY (C) and the server's
// max_payload (P): C batches in hand of B each (a frame larger than B is
// taken alone), the queue's B × C plus the frame that may overfill it and
// the one on its way into it, and the pull budget, max(B × C, P), which
// nats.go's channel and the server's pull requests hold between them:
// with the defaults (4 MiB, 2) and a P of 8 MiB, 24 MiB and two frames.
// Nothing else keeps a frame alive once it is acknowledged: a batch drops
// its references when it is done (see batch.reset).
//
// Why Messages and not Consume, which pulls the same way but calls a
// function: nats.go queues the messages of a callback subscription in a
// list linked through each message (nats.Msg.next, never cleared once the
// message is handed over), so a frame kept, in a batch or the queue, keeps
// every frame delivered after it alive until the subscription's queue next
// runs empty, which in a flood, with the queue blocking the callback, it
// need not do for as long as the frame is kept: a frame held while 399
// more were taken and acknowledged kept all of them
// (TestHeldFrameKeepsNoOthers). With batches that also left frames in
// their buffers, two workers of `go run ./deploy/bench -lines 150000` grew
// to 121 and 164 MB of live heap (246 and 287 MiB peak RSS) while
// JetStream counted 30 MB of frames unacknowledged by each. Messages
// delivers through a channel, whose slots hold nothing once received; its
// 1,000,000 slots (the count nats.go asks for under a byte budget) cost
// 8 MB of pointers, once. It costs no speed: the worker's path (the
// benchmarks' "worker") drains 176.9–181.5 MiB/s of 128 KiB frames with
// 20 ms of work per batch where the same path on Consume drained
// 176.7–182.1, and a lone frame is there in 1.5–1.8 ms on average (max
// 3.4–4.7 ms) against 1.3–1.6 (max 2.1–4.1).
//
// Why a pull that stays open and not a loop of Fetch, measured on this
// 2-core machine with 4 MiB batches (`go test -run '^$' -bench
// 'BenchmarkFetchFrames' -benchtime 1000x ./worker/` and `-bench
// BenchmarkFetchLatency -benchtime 20x`), each twice: with a backlog and
// nothing to do the two are even (0.91–1.36×, both CPU-bound); with 20 ms
// of work per batch Consume is 1.29–1.38× faster with one loop and
// 1.08–1.43× with two, because the next frames arrive while a batch is
// stored; and a lone frame on an idle consumer is there in 1.1 ms (max
// 3.4 ms) against 457 ms (max 999 ms) for a Fetch with a 1 s max wait,
// which a batch that cannot fill waits out. nats.go's docs call a Fetch
// loop the slower way too.
//
// push is called from one goroutine (the one [Worker.consume] starts);
// take from any number.
type prefetch struct {
	maxBytes int

	mu     sync.Mutex
	queue  []jetstream.Msg
	bytes  int
	closed bool
	items  chan struct{} // signalled when frames are waiting
	room   chan struct{} // signalled when frames were taken
}

func newPrefetch(maxBytes int) *prefetch {
	return &prefetch{maxBytes: maxBytes, items: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// push queues m, blocking while the queue holds maxBytes or more (an
// empty queue takes any frame). Once the queue is closed it hands m back
// at once instead, for another worker to take.
func (p *prefetch) push(m jetstream.Msg) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = m.NakWithDelay(0)
			return
		}
		if p.bytes < p.maxBytes || len(p.queue) == 0 {
			p.queue = append(p.queue, m)
			p.bytes += len(m.Data())
			p.mu.Unlock()
			signal(p.items)
			return
		}
		p.mu.Unlock()
		<-p.room
	}
}

// take appends to dst the frames waiting, oldest first, up to maxFrames
// frames and maxBytes of payload (the first frame is taken whatever its
// size), waiting until at least one is there or ctx is done.
func (p *prefetch) take(ctx context.Context, dst []jetstream.Msg, maxFrames, maxBytes int) []jetstream.Msg {
	for {
		p.mu.Lock()
		if len(p.queue) > 0 {
			n, bytes := 0, 0
			for _, m := range p.queue {
				size := len(m.Data())
				if n == maxFrames || (n > 0 && bytes+size > maxBytes) {
					break
				}
				n++
				bytes += size
			}
			dst = append(dst, p.queue[:n]...)
			clear(p.queue[:n])
			p.queue = p.queue[n:]
			p.bytes -= bytes
			left := len(p.queue)
			p.mu.Unlock()
			signal(p.room)
			if left > 0 {
				signal(p.items) // for the next loop
			}
			return dst
		}
		p.mu.Unlock()
		select {
		case <-p.items:
		case <-ctx.Done():
			return dst
		}
	}
}

// close stops the queue and returns the frames still in it, for the
// caller to hand back. Later pushes hand their frame back.
func (p *prefetch) close() []jetstream.Msg {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	left := p.queue
	p.queue, p.bytes = nil, 0
	signal(p.room)
	return left
}

// signal wakes one waiter on c, if there is none waiting already.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// consume starts moving the consumer's frames into q: JetStream keeps pull
// requests outstanding for up to budget bytes beyond what q holds, and one
// goroutine moves each frame delivered into q, waiting while q is full.
// closed is called if the NATS connection is closed for good. The returned
// stop ends consuming: the frames nats.go has buffered still go to q (which
// hands them back once closed), for up to [drainTimeout], and stop returns
// once the goroutine has.
func (w *Worker) consume(q *prefetch, budget int, closed func()) (stop func(), err error) {
	it, err := w.cons.Messages(jetstream.PullMaxBytes(budget))
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := it.Next()
			switch {
			case err == nil:
				q.push(m)
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				// jetstream reports a closed connection with its own
				// error, not nats.go's.
				if errors.Is(err, jetstream.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionClosed) {
					closed()
				}
				return
			default:
				w.logger.Warn("consuming frames failed; retrying", "err", err)
			}
		}
	}()
	return func() {
		it.Drain()
		select {
		case <-done:
		case <-time.After(drainTimeout):
			it.Stop()
			<-done
		}
	}, nil
}
