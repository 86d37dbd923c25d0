package gateway

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// publishFrameSizes are the payload sizes the publish benchmarks measure:
// 200 B is today's message per line, the others frames of many lines.
var publishFrameSizes = []int{200, 4 << 10, 64 << 10, 128 << 10, 256 << 10}

// benchAckTimeout bounds the wait for one acknowledgement; nothing on an
// idle local server comes near it, so reaching it is a failure.
const benchAckTimeout = 30 * time.Second

// publishCase is one shape of publishing: a payload size and how many
// connections publish at once, each its own share of b.N.
type publishCase struct{ size, conns int }

// publishCases are the sizes with one connection, and two sizes with four
// connections publishing at once on one NATS connection, as the gateway's
// sessions do.
var publishCases = func() []publishCase {
	var cs []publishCase
	for _, size := range publishFrameSizes {
		cs = append(cs, publishCase{size, 1})
	}
	return append(cs, publishCase{64 << 10, 4}, publishCase{256 << 10, 4})
}()

func (c publishCase) String() string {
	return fmt.Sprintf("size=%s/conns=%d", sizeName(c.size), c.conns)
}

// BenchmarkPublishFrames publishes frames into an ingest stream configured
// as the gateway's (file storage, work queue, DiscardNew) on an embedded
// server with js.PublishMsgAsync, as the publisher does, each connection
// keeping at most window PubAcks outstanding. One operation is one
// message; the clock stops once every message is acknowledged. Run with,
// e.g.,
//
//	go test -run '^$' -bench 'BenchmarkPublishFrames$' -benchtime 2000x ./gateway/
func BenchmarkPublishFrames(b *testing.B) {
	for _, c := range publishCases {
		for _, window := range []int{16, 64, 256} {
			b.Run(fmt.Sprintf("%s/window=%d", c, window), func(b *testing.B) {
				benchPublishAsync(b, c, window)
			})
		}
	}
}

// benchPublishAsync is one case of [BenchmarkPublishFrames].
func benchPublishAsync(b *testing.B, c publishCase, window int) {
	bb := setupPublishBench(b, c.size, jetstream.WithPublishAsyncMaxPending(c.conns*window),
		jetstream.WithPublishAsyncTimeout(benchAckTimeout))
	bb.startClock(b)
	var g errgroup.Group
	for conn := range c.conns {
		g.Go(func() error {
			// The oldest outstanding acknowledgement is waited for when
			// the window is full, as the session waits for room.
			ring := make([]jetstream.PubAckFuture, window)
			head, outstanding := 0, 0
			wait := func() error {
				f := ring[head]
				ring[head] = nil
				head = (head + 1) % window
				outstanding--
				select {
				case <-f.Ok():
					return nil
				case err := <-f.Err():
					return fmt.Errorf("publish: %w", err)
				}
			}
			for i := range share(b.N, c.conns, conn) {
				if outstanding == window {
					if err := wait(); err != nil {
						return err
					}
				}
				f, err := bb.js.PublishMsgAsync(bb.msg(conn, i))
				if err != nil {
					return fmt.Errorf("publish frame %d: %w", i, err)
				}
				ring[(head+outstanding)%window] = f
				outstanding++
			}
			for outstanding > 0 {
				if err := wait(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := g.Wait()
	bb.stopClock(b)
	if err != nil {
		b.Fatal(err)
	}
	bb.report(b)
}

// share is how many of n messages connection conn of conns publishes.
func share(n, conns, conn int) int {
	s := n / conns
	if conn < n%conns {
		s++
	}
	return s
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
	bb.cpu = -testenv.CPUTime()
}

// stopClock stops the benchmark timer and the CPU count.
func (bb *publishBench) stopClock(b *testing.B) {
	b.StopTimer()
	bb.cpu += testenv.CPUTime()
}

func setupPublishBench(b *testing.B, size int, opts ...jetstream.JetStreamOpt) *publishBench {
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
	stream, err := js.CreateStream(context.Background(), sc)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	return &publishBench{js: js, stream: stream, subject: topology.Subject(topology.DefaultSource), payload: testenv.NDJSON(size)}
}

// msg returns the i-th frame of connection conn with the headers a frame
// carries: its de-duplication id and first line number among them.
func (bb *publishBench) msg(conn, i int) *nats.Msg {
	c, n := strconv.Itoa(conn+1), strconv.Itoa(i+1)
	return &nats.Msg{Subject: bb.subject, Data: bb.payload, Header: nats.Header{
		topology.HeaderMsgID:   []string{"bench." + c + "." + n},
		topology.HeaderGateway: []string{"bench"},
		topology.HeaderConn:    []string{c},
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

func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
