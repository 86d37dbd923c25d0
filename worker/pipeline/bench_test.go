package pipeline

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/devkit/tweetgen"
	"github.com/jetline/jetline/worker"
)

// BenchmarkTransform measures the tweets pipeline (9 columns) on tweetgen
// lines of about 6 KB, per core: run with -cpu 1. "tweets" is
// deploy/pipelines/tweets.yaml (original tweets in a known language: 27 %
// of tweetgen's output by construction, 31 % of these 2,000 lines);
// "en_ja" filters on lang in ["en", "ja"] instead (13 %).
func BenchmarkTransform(b *testing.B) {
	src, err := os.ReadFile("../../deploy/pipelines/tweets.yaml")
	if err != nil {
		b.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(tweetgen.New(1, 1_000_000).Lines(2000), []byte("\n")), []byte("\n"))
	for _, bc := range []struct{ name, spec string }{
		{"tweets", string(src)},
		{"en_ja", strings.Replace(string(src), `filter: retweeted_status == nil && lang != "und"`, `filter: retweeted_status == nil && lang in ["en", "ja"]`, 1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			spec, err := ParseSpec("tweets.yaml", []byte(bc.spec))
			if err != nil {
				b.Fatal(err)
			}
			p, err := New(spec)
			if err != nil {
				b.Fatal(err)
			}
			benchmarkTransform(b, p, lines)
		})
	}
}

func benchmarkTransform(b *testing.B, p *Pipeline, lines [][]byte) {
	var total int
	for _, l := range lines {
		total += len(l)
	}
	rows := worker.NewRows(p.Tables())
	kept := 0
	b.SetBytes(int64(total / len(lines)))
	b.ReportAllocs()
	cpu0 := testenv.CPUTime()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		line := worker.Line{Seq: uint64(i), Source: "tweets", Data: lines[i%len(lines)]}
		rows.Reset()
		if rows.Transform(p, &line, 0).Outcome == worker.Insert {
			kept++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(kept)/float64(b.N)*100, "%kept")
	// On a shared machine wall time includes waiting for a core; CPU time
	// (this process's, GC included) does not.
	if cpu := testenv.CPUTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(total/len(lines))*float64(b.N)/cpu.Seconds()/(1<<20), "MiB/cpu-s")
	}
}
