package admin

import (
	"context"
	"fmt"
	"testing"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

// benchEntries is how many dead letters the benchmarks work on: a large
// dead-letter stream, after an outage.
const benchEntries = 50_000

// fill writes benchEntries dead letters of about 300 bytes, spread over
// 4 reasons and 5 sources.
func (b *bundle) fill(tb testing.TB) {
	tb.Helper()
	reasons := []string{"invalid_json", "pg_22003", "pg_22P05", deadletter.ReasonMaxDeliveries}
	entries := make([]deadletter.Entry, 0, benchEntries)
	for i := range benchEntries {
		source := fmt.Sprintf("src%d", i%5)
		entries = append(entries, entry(source, reasons[i%len(reasons)], uint64(i+1), fmt.Sprintf(`{"i":%d,"text":"%0200d"}`, i, i)))
	}
	for len(entries) > 0 {
		n := min(len(entries), 2000)
		b.deadLetter(tb, entries[:n]...)
		entries = entries[n:]
	}
}

// BenchmarkList lists benchEntries dead letters, by subject counts and by
// reading every entry's headers (a sequence range covering all).
func BenchmarkList(b *testing.B) {
	bb := setup(b, 0)
	bb.fill(b)
	for _, bench := range []struct {
		name string
		f    Filter
	}{{"subjects", Filter{}}, {"scan", Filter{FromSeq: 1}}} {
		b.Run(bench.name, func(b *testing.B) {
			for b.Loop() {
				sum, err := List(context.Background(), bb.js, bench.f)
				if err != nil {
					b.Fatal(err)
				}
				if sum.Entries != benchEntries {
					b.Fatalf("listed %d entries, want %d", sum.Entries, benchEntries)
				}
			}
		})
	}
}

// BenchmarkReplay replays benchEntries dead letters into the ingest
// stream.
func BenchmarkReplay(b *testing.B) {
	bb := setup(b, 1<<30)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := bb.ingest.Purge(context.Background()); err != nil {
			b.Fatal(err)
		}
		bb.fill(b)
		b.StartTimer()
		res, err := Replay(context.Background(), bb.js, ReplayOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Replayed != benchEntries {
			b.Fatalf("replayed %d, want %d", res.Replayed, benchEntries)
		}
	}
	b.ReportMetric(float64(b.N*benchEntries)/b.Elapsed().Seconds(), "lines/s")
}
