package pipeline

import (
	"bytes"
	"testing"

	"github.com/jetline/jetline/shared/tweetgen"
	"github.com/jetline/jetline/worker"
)

// BenchmarkTransform measures the tweets pipeline on tweetgen lines (about
// 6 KB each, 27 % kept) per core: run with -cpu 1.
func BenchmarkTransform(b *testing.B) {
	p, err := Load("../../deploy/pipelines/tweets.yaml")
	if err != nil {
		b.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(tweetgen.New(1, 1_000_000).Lines(2000), []byte("\n")), []byte("\n"))
	var total int
	for _, l := range lines {
		total += len(l)
	}
	row := make([]any, len(p.Table().Columns))
	kept := 0
	b.SetBytes(int64(total / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		line := worker.Line{Seq: uint64(i), Source: "tweets", Data: lines[i%len(lines)]}
		if p.Transform(&line, row).Outcome == worker.Insert {
			kept++
		}
	}
	b.ReportMetric(float64(kept)/float64(b.N)*100, "%kept")
}
