package main

import (
	"runtime"
	"sync"

	"github.com/jetline/jetline/shared/tweetgen"
)

// Corpus generation is split into chunks of chunkLines lines, each from a
// generator of its own, so that it runs on every core and still depends
// only on the seed and the number of lines.
const (
	chunkLines = 4096
	// firstTweetID is the status id of the first line.
	firstTweetID = 1_000_000_000
	// estLineBytes is a little over tweetgen's average line, to size the
	// buffer once.
	estLineBytes = 6300
)

// corpus is the lines of a run, generated once and sent by every
// measurement: one buffer of lines, each followed by '\n'. It is read-only
// once built and safe for concurrent use.
type corpus struct {
	data []byte
	ends []int // ends[i] is the offset just past line i's newline
}

// newCorpus generates n tweet lines from seed.
func newCorpus(seed uint64, n int) *corpus {
	chunks := (n + chunkLines - 1) / chunkLines
	results := make([]chan []byte, chunks)
	for i := range results {
		results[i] = make(chan []byte, 1)
	}
	workers := runtime.GOMAXPROCS(0)
	// Generators may run at most this many chunks ahead of assembly, which
	// bounds the memory held besides the corpus itself.
	ahead := make(chan struct{}, 2*workers)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				lines := min(chunkLines, n-j*chunkLines)
				g := tweetgen.New(seed*0x9e3779b97f4a7c15+uint64(j), firstTweetID+int64(j)*chunkLines)
				results[j] <- g.Lines(lines)
			}
		})
	}
	go func() {
		for j := range chunks {
			ahead <- struct{}{}
			jobs <- j
		}
		close(jobs)
	}()

	c := &corpus{data: make([]byte, 0, n*estLineBytes), ends: make([]int, 0, n)}
	for j := range chunks {
		chunk := <-results[j]
		<-ahead
		base := len(c.data)
		c.data = append(c.data, chunk...)
		for i, b := range chunk {
			if b == '\n' {
				c.ends = append(c.ends, base+i+1)
			}
		}
	}
	wg.Wait()
	return c
}

// Len returns the number of lines.
func (c *corpus) Len() int { return len(c.ends) }

// start returns the offset of line i.
func (c *corpus) start(i int) int {
	if i == 0 {
		return 0
	}
	return c.ends[i-1]
}

// Line returns line i without its newline.
func (c *corpus) Line(i int) []byte { return c.data[c.start(i) : c.ends[i]-1] }

// PayloadBytes returns the bytes of all lines without their newlines: what
// JetStream stores as message data and Postgres receives.
func (c *corpus) PayloadBytes() int64 { return int64(len(c.data) - len(c.ends)) }

// span is a run of consecutive lines.
type span struct {
	First, N int
}

// Split divides the lines into k runs of nearly equal length, in order.
func (c *corpus) Split(k int) []span {
	n := c.Len()
	spans := make([]span, 0, k)
	first := 0
	for i := range k {
		size := n / k
		if i < n%k {
			size++
		}
		spans = append(spans, span{First: first, N: size})
		first += size
	}
	return spans
}

// Bytes returns the lines of s with their newlines, as a sender writes
// them.
func (c *corpus) Bytes(s span) []byte {
	if s.N == 0 {
		return nil
	}
	return c.data[c.start(s.First):c.ends[s.First+s.N-1]]
}

// SpanPayloadBytes returns the bytes of the lines of s without newlines.
func (c *corpus) SpanPayloadBytes(s span) int64 {
	return int64(len(c.Bytes(s)) - s.N)
}
