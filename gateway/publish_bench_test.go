package gateway

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/jetline/jetline/shared/testenv"
	"github.com/jetline/jetline/shared/topology"
)

// publishFrameSizes are the payload sizes the publish benchmarks measure:
// 200 B is today's message per line, the others frames of many lines.
var publishFrameSizes = []int{200, 4 << 10, 64 << 10, 128 << 10, 256 << 10}

// benchAckTimeout bounds the wait for one acknowledgement; nothing on an
// idle local server comes near it, so reaching it is a failure.
const benchAckTimeout = 30 * time.Second

// BenchmarkPublishFrames publishes frames of one connection into an ingest
// stream configured as the gateway's (file storage, work queue, DiscardNew)
// on an embedded server with js.PublishMsgAsync, as the publisher does,
// keeping at most window PubAcks outstanding. One operation is one message;
// the clock stops once every message is acknowledged. Run with, e.g.,
//
//	go test -run '^$' -bench 'BenchmarkPublishFrames$' -benchtime 2000x ./gateway/
func BenchmarkPublishFrames(b *testing.B) {
	for _, size := range publishFrameSizes {
		for _, window := range []int{16, 64, 256} {
			b.Run(fmt.Sprintf("size=%s/window=%d", sizeName(size), window), func(b *testing.B) {
				benchPublishAsync(b, size, window)
			})
		}
	}
}

// benchPublishAsync is one case of [BenchmarkPublishFrames].
func benchPublishAsync(b *testing.B, size, window int) {
	bb := setupPublishBench(b, size, false, jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncTimeout(benchAckTimeout))
	// The oldest outstanding acknowledgement is waited for when the window
	// is full, as the session waits for room.
	ring := make([]jetstream.PubAckFuture, window)
	head, outstanding := 0, 0
	wait := func() {
		f := ring[head]
		ring[head] = nil
		head = (head + 1) % window
		outstanding--
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatalf("publish: %v", err)
		}
	}
	bb.startClock(b)
	for i := range b.N {
		if outstanding == window {
			wait()
		}
		f, err := bb.js.PublishMsgAsync(bb.msg(i))
		if err != nil {
			b.Fatalf("publish frame %d: %v", i, err)
		}
		ring[(head+outstanding)%window] = f
		outstanding++
	}
	for outstanding > 0 {
		wait()
	}
	bb.stopClock(b)
	bb.report(b)
}

// BenchmarkPublishFramesFast is [BenchmarkPublishFrames] with the
// fast-ingest batch publisher of orbit.go's jetstreamext, one batch for the
// whole connection, on a stream that allows batch publishing. flow is how
// many messages the server acknowledges at once (it may lower it), acks how
// many such acknowledgements may be outstanding before Add blocks.
func BenchmarkPublishFramesFast(b *testing.B) {
	for _, size := range publishFrameSizes {
		for _, fc := range []struct{ flow, acks uint16 }{{100, 2}, {16, 2}, {4, 4}} {
			b.Run(fmt.Sprintf("size=%s/flow=%d/acks=%d", sizeName(size), fc.flow, fc.acks), func(b *testing.B) {
				benchPublishFast(b, size, jetstreamext.FastPublishFlowControl{
					Flow: fc.flow, MaxOutstandingAcks: fc.acks, AckTimeout: benchAckTimeout,
				})
			})
		}
	}
}

// benchPublishFast is one case of [BenchmarkPublishFramesFast].
func benchPublishFast(b *testing.B, size int, fc jetstreamext.FastPublishFlowControl) {
	bb := setupPublishBench(b, size, true)
	// Errors of single messages arrive only here, asynchronously; the
	// batch itself ends with the first of them (gap mode "fail").
	var mu sync.Mutex
	var asyncErrs []error
	fp, err := jetstreamext.NewFastPublisher(bb.js, fc, jetstreamext.WithFastPublisherErrorHandler(func(err error) {
		mu.Lock()
		asyncErrs = append(asyncErrs, err)
		mu.Unlock()
	}))
	if err != nil {
		b.Fatal(err)
	}
	bb.startClock(b)
	for i := range b.N {
		if _, err := fp.AddMsg(bb.msg(i)); err != nil {
			b.Fatalf("add frame %d: %v", i, err)
		}
	}
	ack, err := fp.Close(context.Background())
	bb.stopClock(b)
	if err != nil {
		b.Fatalf("close batch: %v", err)
	}
	mu.Lock()
	if len(asyncErrs) > 0 {
		b.Fatalf("batch reported %d errors, first: %v", len(asyncErrs), asyncErrs[0])
	}
	mu.Unlock()
	if ack.Sequence != uint64(b.N) {
		b.Fatalf("batch acknowledged up to stream sequence %d, want %d", ack.Sequence, b.N)
	}
	bb.report(b)
}

// publishBench is what a publish benchmark needs: a JetStream context on
// its own embedded server, the ingest stream and the frame to send.
type publishBench struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	payload []byte
	cpu     time.Duration // process CPU time between startClock and stopClock
}

// startClock resets the benchmark timer and starts counting CPU time.
func (bb *publishBench) startClock(b *testing.B) {
	b.ResetTimer()
	bb.cpu = -cpuTime()
}

// stopClock stops the benchmark timer and the CPU count.
func (bb *publishBench) stopClock(b *testing.B) {
	b.StopTimer()
	bb.cpu += cpuTime()
}

func setupPublishBench(b *testing.B, size int, batched bool, opts ...jetstream.JetStreamOpt) *publishBench {
	b.Helper()
	nc, err := nats.Connect(testenv.NATS(b).ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		b.Fatal(err)
	}
	sc := topology.StreamConfig{MaxBytes: 4 << 30, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}.Stream()
	sc.AllowBatchPublish = batched
	stream, err := js.CreateStream(context.Background(), sc)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	return &publishBench{js: js, stream: stream, subject: topology.Subject(topology.DefaultSource), payload: ndjson(size)}
}

// msg returns the i-th frame with the headers a frame carries: its
// de-duplication id and first line number among them.
func (bb *publishBench) msg(i int) *nats.Msg {
	n := strconv.Itoa(i + 1)
	return &nats.Msg{Subject: bb.subject, Data: bb.payload, Header: nats.Header{
		topology.HeaderMsgID:   []string{"bench.1." + n},
		topology.HeaderGateway: []string{"bench"},
		topology.HeaderConn:    []string{"1"},
		topology.HeaderLine:    []string{n},
	}}
}

// report checks that the stream holds every message once and adds the
// rates in the units the frames decision is written in.
func (bb *publishBench) report(b *testing.B) {
	b.Helper()
	info, err := bb.stream.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if info.State.Msgs != uint64(b.N) {
		b.Fatalf("stream holds %d messages after %d publishes", info.State.Msgs, b.N)
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "msgs/s")
	b.ReportMetric(float64(b.N)*float64(len(bb.payload))/secs/(1<<20), "MiB/s")
	// On a shared machine wall time includes waiting for a core; CPU time
	// (this process's, which hosts the server too) does not.
	if bb.cpu > 0 {
		b.ReportMetric(float64(b.N)*float64(len(bb.payload))/bb.cpu.Seconds()/(1<<20), "MiB/cpu-s")
	}
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ndjson returns size bytes of newline-terminated JSON lines of about 200
// bytes each, as a frame carries them.
func ndjson(size int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < size; i++ {
		fmt.Fprintf(&buf, `{"id":%d,"user":"someone","text":"%s"}`+"\n", i, bytes.Repeat([]byte("x"), 150))
	}
	out := buf.Bytes()[:size]
	out[size-1] = '\n'
	return out
}

func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
