package worker

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// prefetch holds the frames the consumer has delivered and no batch has
// taken yet, bounded by bytes. It is where demand meets supply, as in
// GenStage: JetStream pushes frames into it through [jetstream.Consumer]'s
// Consume (which keeps pull requests outstanding up to its own byte
// budget), the consume callback blocks while it is full, and each batch
// loop takes what is waiting: at least one frame, as many as fit its
// limits, and never waits for more once one is there. A trickling feed is
// so stored frame by frame as it arrives, and a flood fills batches.
//
// Why Consume and not a loop of Fetch, measured on this 2-core machine
// with 4 MiB batches (`go test -run '^$' -bench 'BenchmarkFetchFrames'
// -benchtime 1000x ./worker/` and `-bench BenchmarkFetchLatency
// -benchtime 20x`), each twice: with a backlog and nothing to do the two
// are even (0.91–1.36×, both CPU-bound); with 20 ms of work per batch
// Consume is 1.29–1.38× faster with one loop and 1.08–1.43× with two,
// because the next frames arrive while a batch is stored; and a lone frame
// on an idle consumer is there in 1.1 ms (max 3.4 ms) against 457 ms
// (max 999 ms) for a Fetch with a 1 s max wait, which a batch that cannot
// fill waits out. nats.go's docs call a Fetch loop the slower way too.
//
// push is called from one goroutine (the consume callback); take from
// any number.
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
