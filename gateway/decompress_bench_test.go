package gateway

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/jetline/jetline/shared/devkit/tweetgen"
)

// BenchmarkDecompress decodes tweet-shaped NDJSON (every value differs, so
// xz -6 makes it ~11 times smaller, not 100) compressed as a user would,
// through the decompressor with each decoder, from memory. It reports
// MiB/s of decompressed output. JETLINE_BENCH_LINES sets the corpus size
// (default 10,000 lines, ~60 MB); compressing it takes a while.
//
//	go test -run '^$' -bench Decompress ./gateway/
func BenchmarkDecompress(b *testing.B) {
	lines := 10_000
	if s := os.Getenv("JETLINE_BENCH_LINES"); s != "" {
		var err error
		if lines, err = strconv.Atoi(s); err != nil {
			b.Fatalf("JETLINE_BENCH_LINES: %v", err)
		}
	}
	raw := tweetgen.New(1, 1).Lines(lines)
	streams := []struct {
		format, name, program string
		args                  []string
	}{
		{CompressionXz, "xz-6", "xz", []string{"-6"}},
		{CompressionXz, "xz-T2", "xz", []string{"-6", "-T2"}}, // blocks of 24 MiB, sizes in their headers
		{CompressionBzip2, "bzip2-9", "bzip2", []string{"-9"}},
	}
	for _, s := range streams {
		if _, err := exec.LookPath(s.program); err != nil {
			b.Logf("%s: %s is not installed", s.name, s.program)
			continue
		}
		cmd := exec.Command(s.program, append([]string{"-c"}, s.args...)...)
		cmd.Stdin = bytes.NewReader(raw)
		data, err := cmd.Output()
		if err != nil {
			b.Fatalf("%s %v: %v", s.program, s.args, err)
		}
		b.Logf("%s: %d lines, %d bytes, compressed %.1f times", s.name, lines, len(raw), float64(len(raw))/float64(len(data)))
		decoders := []struct {
			name     string
			programs *decodePrograms
		}{
			{"go", nil},
		}
		if systemDecoders.byFormat[s.format] != nil {
			decoders = append(decoders, struct {
				name     string
				programs *decodePrograms
			}{"program", systemDecoders})
		}
		for _, dec := range decoders {
			b.Run(fmt.Sprintf("%s/%s", s.name, dec.name), func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					d := newDecompressor(s.format, bytes.NewReader(data), 1<<40)
					d.programs = dec.programs
					n, err := io.Copy(io.Discard, d)
					program := usesProgram(d)
					d.Close()
					if err != nil || n != int64(len(raw)) || program != (dec.programs != nil) {
						b.Fatalf("decoded %d bytes, %v, by the program: %v; want %d by the %s", n, err, program, len(raw), dec.name)
					}
				}
				b.ReportMetric(float64(len(raw))*float64(b.N)/b.Elapsed().Seconds()/(1<<20), "MiB/s")
			})
		}
	}
}
