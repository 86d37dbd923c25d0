package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// Batch bounds of the fetch benchmarks: a batch holds at most
// benchBatchBytes of frames (so fewer of larger frames), and the fetch
// byte limit leaves room for their subjects and headers.
const (
	benchBatchBytes    = 4 << 20
	benchBatchOverhead = 64 << 10
	// benchMaxWait is the worker's default WORKER_FETCH_MAX_WAIT.
	benchMaxWait = time.Second
)

// benchSource hands a loop its next batch of frames. next blocks until it
// has at least one frame, ctx is done, or (for a Fetch) the request
// expires with none; the batch is valid until the next call. One goroutine
// calls next; close ends the source.
type benchSource interface {
	next(ctx context.Context) ([]jetstream.Msg, error)
	close()
}

// benchFetch is the worker's loop today: one Fetch per batch, which
// completes when the batch is full (count or bytes) or FetchMaxWait has
// passed.
type benchFetch struct {
	cons     jetstream.Consumer
	maxMsgs  int
	maxBytes int
	batch    []jetstream.Msg
}

func (s *benchFetch) next(context.Context) ([]jetstream.Msg, error) {
	s.batch = s.batch[:0]
	mb, err := s.cons.Fetch(s.maxMsgs, jetstream.FetchMaxWait(benchMaxWait), jetstream.FetchMaxBytes(s.maxBytes))
	if err != nil {
		return nil, err
	}
	for m := range mb.Messages() {
		s.batch = append(s.batch, m)
	}
	return s.batch, mb.Error()
}

func (s *benchFetch) close() {}

// benchConsume keeps frames coming with Consume, whose prefetch (bounded
// by PullMaxBytes) overlaps the next pull with the processing of the
// current batch. A batch starts with the first frame waiting and takes
// what else is waiting, without blocking, up to the batch bounds.
type benchConsume struct {
	cc       jetstream.ConsumeContext
	ch       chan jetstream.Msg
	stop     chan struct{}
	stopped  atomic.Bool
	held     jetstream.Msg // taken from ch but beyond the previous batch's bounds
	maxMsgs  int
	maxBytes int
	batch    []jetstream.Msg
}

func newBenchConsume(cons jetstream.Consumer, maxMsgs, maxBytes int, onErr func(error)) (*benchConsume, error) {
	s := &benchConsume{ch: make(chan jetstream.Msg, maxMsgs), stop: make(chan struct{}), maxMsgs: maxMsgs, maxBytes: maxBytes}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case s.ch <- m:
		case <-s.stop:
		}
	},
		jetstream.PullMaxBytes(2*maxBytes),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !s.stopped.Load() {
				onErr(err)
			}
		}))
	if err != nil {
		return nil, err
	}
	s.cc = cc
	return s, nil
}

func (s *benchConsume) next(ctx context.Context) ([]jetstream.Msg, error) {
	s.batch = s.batch[:0]
	size := 0
	if s.held == nil {
		select {
		case s.held = <-s.ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	m := s.held
	for {
		s.batch = append(s.batch, m)
		size += benchMsgBytes(m)
		s.held = nil
		if len(s.batch) == s.maxMsgs {
			return s.batch, nil
		}
		select {
		case m = <-s.ch:
		default:
			return s.batch, nil
		}
		if size+benchMsgBytes(m) > s.maxBytes {
			s.held = m
			return s.batch, nil
		}
	}
}

func (s *benchConsume) close() {
	s.stopped.Store(true)
	close(s.stop)
	s.cc.Stop()
}

// benchWorker gets batches as the worker does: [Worker.consume] keeps
// frames coming into a prefetch queue of one batch, with the pull budget
// benchConsume has, and each batch takes what is waiting.
type benchWorker struct {
	q        *prefetch
	stop     func()
	maxMsgs  int
	maxBytes int
	batch    []jetstream.Msg
}

func newBenchWorker(b *testing.B, cons jetstream.Consumer, maxMsgs, maxBytes int) *benchWorker {
	s := &benchWorker{q: newPrefetch(maxBytes), maxMsgs: maxMsgs, maxBytes: maxBytes}
	w := &Worker{cons: cons, logger: testenv.Logger(b)}
	stop, err := w.consume(s.q, 2*maxBytes, func() {})
	if err != nil {
		b.Fatal(err)
	}
	s.stop = stop
	return s
}

func (s *benchWorker) next(ctx context.Context) ([]jetstream.Msg, error) {
	clear(s.batch)
	s.batch = s.q.take(ctx, s.batch[:0], s.maxMsgs, s.maxBytes)
	return s.batch, ctx.Err()
}

func (s *benchWorker) close() {
	for _, m := range s.q.close() {
		_ = m.NakWithDelay(0)
	}
	s.stop()
}

// benchMsgBytes approximates what a message counts against a byte limit.
func benchMsgBytes(m jetstream.Msg) int {
	n := len(m.Data()) + len(m.Subject()) + len(m.Reply())
	for k, vs := range m.Headers() {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// benchMethods are the ways of getting batches being compared: a Fetch
// per batch, Consume, and the worker's own, Messages.
var benchMethods = []struct {
	name string
	open func(b *testing.B, cons jetstream.Consumer, maxMsgs, maxBytes int) benchSource
}{
	{"fetch", func(_ *testing.B, cons jetstream.Consumer, maxMsgs, maxBytes int) benchSource {
		return &benchFetch{cons: cons, maxMsgs: maxMsgs, maxBytes: maxBytes}
	}},
	{"consume", func(b *testing.B, cons jetstream.Consumer, maxMsgs, maxBytes int) benchSource {
		s, err := newBenchConsume(cons, maxMsgs, maxBytes, func(err error) { b.Errorf("consume: %v", err) })
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
	{"worker", func(b *testing.B, cons jetstream.Consumer, maxMsgs, maxBytes int) benchSource {
		return newBenchWorker(b, cons, maxMsgs, maxBytes)
	}},
}

// BenchmarkFetchFrames drains a backlog of frames from the shared durable
// consumer of an ingest stream configured as the programs' (file storage,
// work queue) on an embedded server, with loops concurrent loops on their
// own connections, each as a worker does: get a batch, process it (count
// its lines, then wait work, standing in for the database), ack every
// frame. One operation is one frame; the clock runs from the first batch
// asked for until b.N frames are acked (frames/s counts the whole batches
// acked by then). Run with, e.g.,
//
//	go test -run '^$' -bench 'BenchmarkFetchFrames' -benchtime 1000x ./worker/
func BenchmarkFetchFrames(b *testing.B) {
	for _, size := range []int{64 << 10, 128 << 10, 256 << 10} {
		for _, loops := range []int{1, 2} {
			for _, work := range []time.Duration{0, 20 * time.Millisecond} {
				for _, method := range benchMethods {
					name := fmt.Sprintf("size=%dKiB/loops=%d/work=%s/%s", size>>10, loops, work, method.name)
					b.Run(name, func(b *testing.B) {
						benchDrain(b, size, loops, work, method.open)
					})
				}
			}
		}
	}
}

func benchDrain(b *testing.B, size, loops int, work time.Duration,
	open func(*testing.B, jetstream.Consumer, int, int) benchSource) {
	url := setupFetchBench(b)
	payload := testenv.NDJSON(size)
	_, js := testenv.Connect(b, url)
	// Frames beyond b.N keep every batch full to the end: the clock
	// measures a backlog, not a last Fetch waiting out FetchMaxWait for a
	// batch it cannot fill.
	maxMsgs := max(1, benchBatchBytes/size)
	msgs := make([]*nats.Msg, b.N+2*loops*maxMsgs)
	for i := range msgs {
		msgs[i] = benchFrame(payload, i)
	}
	testenv.Publish(b, js, msgs)

	var taken atomic.Int64
	var processed int64 // frames acked when the clock stops; set before done closes
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sources := make([]benchSource, loops)
	for i := range loops {
		_, js := testenv.Connect(b, url)
		cons, err := js.Consumer(ctx, topology.StreamName, topology.ConsumerName)
		if err != nil {
			b.Fatal(err)
		}
		sources[i] = open(b, cons, maxMsgs, maxMsgs*size+benchBatchOverhead)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.CPUTime()
	for _, src := range sources {
		wg.Go(func() {
			for ctx.Err() == nil {
				batch, err := src.next(ctx)
				if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrTimeout) {
					b.Errorf("next batch: %v", err)
					return
				}
				lines := 0
				for _, m := range batch {
					lines += bytes.Count(m.Data(), []byte{'\n'})
				}
				if lines == 0 && len(batch) > 0 {
					b.Errorf("batch of %d frames without lines", len(batch))
				}
				if len(batch) > 0 && work > 0 {
					time.Sleep(work)
				}
				for _, m := range batch {
					if err := m.Ack(); err != nil {
						b.Errorf("ack: %v", err)
					}
				}
				n := int64(len(batch))
				if total := taken.Add(n); total >= int64(b.N) && total-n < int64(b.N) {
					processed = total
					close(done)
				}
			}
		})
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d frames processed after 5 minutes", taken.Load(), b.N)
	}
	b.StopTimer()
	cpu := testenv.CPUTime() - cpu0
	cancel()
	for _, src := range sources {
		src.close()
	}
	wg.Wait()
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(processed)/secs, "frames/s")
	b.ReportMetric(float64(processed)*float64(size)/secs/(1<<20), "MiB/s")
	// On a shared machine wall time includes waiting for a core; CPU time
	// (this process's, which hosts the server too) does not.
	if cpu > 0 {
		b.ReportMetric(float64(processed)*float64(size)/cpu.Seconds()/(1<<20), "MiB/cpu-s")
	}
}

// BenchmarkFetchLatency measures how long a lone frame published to an
// idle consumer takes to reach a loop's batch. Each operation waits a
// random part of the Fetch wait first, so that the frame arrives at any
// point of an outstanding Fetch, as a trickle of frames does. It reports
// the mean, median and largest latency; ns/op includes the random wait.
//
//	go test -run '^$' -bench 'BenchmarkFetchLatency' -benchtime 20x ./worker/
func BenchmarkFetchLatency(b *testing.B) {
	for _, method := range benchMethods {
		b.Run(method.name, func(b *testing.B) {
			benchLatency(b, method.open)
		})
	}
}

func benchLatency(b *testing.B, open func(*testing.B, jetstream.Consumer, int, int) benchSource) {
	url := setupFetchBench(b)
	payload := testenv.NDJSON(64 << 10)
	_, js := testenv.Connect(b, url)
	_, cjs := testenv.Connect(b, url)
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := cjs.Consumer(ctx, topology.StreamName, topology.ConsumerName)
	if err != nil {
		b.Fatal(err)
	}
	src := open(b, cons, benchBatchBytes/len(payload), benchBatchBytes+benchBatchOverhead)
	got := make(chan time.Time, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			batch, err := src.next(ctx)
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrTimeout) {
				b.Errorf("next batch: %v", err)
				return
			}
			if len(batch) == 0 {
				continue
			}
			at := time.Now()
			for _, m := range batch {
				_ = m.Ack()
			}
			got <- at
		}
	})
	// Let the loop settle into waiting.
	time.Sleep(100 * time.Millisecond)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		time.Sleep(rand.N(benchMaxWait))
		start := time.Now()
		if _, err := js.PublishMsg(ctx, benchFrame(payload, i)); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-got:
			lat = append(lat, at.Sub(start))
		case <-time.After(10 * benchMaxWait):
			b.Fatalf("frame %d not in a batch after %s", i, 10*benchMaxWait)
		}
	}
	b.StopTimer()
	cancel()
	src.close()
	wg.Wait()
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(sum)/float64(len(lat)), "mean-ms")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
}

// setupFetchBench starts an embedded server with the ingest stream and
// the shared consumer and returns its URL.
func setupFetchBench(b *testing.B) string {
	b.Helper()
	url := testenv.NATS(b).ClientURL()
	_, js := testenv.Connect(b, url)
	ctx := context.Background()
	if _, err := topology.EnsureStream(ctx, js, topology.StreamConfig{
		MaxBytes: 4 << 30, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1,
	}); err != nil {
		b.Fatal(err)
	}
	if _, err := topology.EnsureConsumer(ctx, js, topology.ConsumerConfig{
		AckWait: 30 * time.Second, MaxAckPending: 10000, MaxDeliver: -1,
	}); err != nil {
		b.Fatal(err)
	}
	return url
}

// benchFrame is the i-th frame of a connection, carrying payload.
func benchFrame(payload []byte, i int) *nats.Msg {
	n := strconv.Itoa(i + 1)
	return &nats.Msg{Subject: topology.Subject(topology.DefaultSource), Data: payload, Header: nats.Header{
		topology.HeaderMsgID:   []string{"bench.1." + n},
		topology.HeaderGateway: []string{"bench"},
		topology.HeaderConn:    []string{"1"},
		topology.HeaderLine:    []string{n},
	}}
}
