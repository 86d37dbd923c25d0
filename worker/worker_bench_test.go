package worker

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// benchLines is how many ~6 KB lines each worker benchmark moves.
const benchLines = 20000

// BenchmarkPublish measures the raw JetStream rate the worker is compared
// with: async publishes of ~6 KB tweet lines into the file-backed ingest
// stream of an embedded server, as the gateway does.
func BenchmarkPublish(b *testing.B) {
	lines := make([][]byte, 1000)
	var size int
	for i := range lines {
		lines[i] = tweetLine(i)
		size += len(lines[i])
	}
	for b.Loop() {
		nb := setupNATS(b, 30*time.Second)
		start := time.Now()
		for i := range benchLines {
			m := nats.NewMsg(topology.Subject("tweets"))
			m.Data = lines[i%len(lines)]
			m.Header.Set(topology.HeaderReceivedAt, time.Now().Format(time.RFC3339Nano))
			if _, err := nb.js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-nb.js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("publishes not acknowledged")
		}
		secs := time.Since(start).Seconds()
		b.ReportMetric(benchLines/secs, "lines/s")
		b.ReportMetric(float64(benchLines)*float64(size)/float64(len(lines))/secs/(1<<20), "MiB/s")
	}
}

// BenchmarkWorker measures how fast a worker drains a stream of ~6 KB
// tweet lines into Postgres, by concurrency.
func BenchmarkWorker(b *testing.B) {
	for _, conc := range []int{1, 2, 3, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			// Each iteration drains a fresh stream; run with -benchtime=1x.
			for range b.N {
				b.StopTimer()
				nb := setupNATS(b, 30*time.Second)
				sb := setupStore(b)
				lines := make([][]byte, benchLines)
				var size int
				for i := range lines {
					lines[i] = tweetLine(i)
					size += len(lines[i])
				}
				// With message ids as the gateway sets them, so rows are
				// keyed by identities of the usual length.
				msgs := make([]*nats.Msg, len(lines))
				for i, line := range lines {
					msgs[i] = nats.NewMsg(topology.Subject("tweets"))
					msgs[i].Data = line
					msgs[i].Header.Set(topology.HeaderMsgID, "gw-0a1b2c3d.1."+strconv.Itoa(i+1))
					msgs[i].Header.Set(topology.HeaderReceivedAt, receivedAt(i).Format(time.RFC3339Nano))
				}
				testenv.Publish(b, nb.js, msgs)
				opts := testOptions()
				opts.BatchSize = 500
				opts.Concurrency = conc
				opts.ProgressInterval = time.Hour
				b.StartTimer()
				start := time.Now()
				w, stop := startWorker(b, nb.cons, sb.store, opts)
				testenv.Eventually(b, 5*time.Minute, "stream drained", func() error {
					if got := w.Stats().Lines; got != benchLines {
						return fmt.Errorf("%v, want %v", got, benchLines)
					}
					return nil
				})
				secs := time.Since(start).Seconds()
				b.StopTimer()
				if err := stop(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(benchLines/secs, "lines/s")
				b.ReportMetric(float64(size)/secs/(1<<20), "MiB/s")
			}
		})
	}
}
