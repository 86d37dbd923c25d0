package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jetline/jetline/shared/devkit/tweetgen"
)

// Corpus generation is split into chunks of chunkLines lines, each from a
// generator of its own, so that it runs on every core and still depends
// only on the seed and the number of lines. firstTweetID is the status (or
// record) id of the first line.
const (
	chunkLines   = 4096
	firstTweetID = 1_000_000_000
)

// corpusKind is one shape of generated lines (-corpus).
type corpusKind struct {
	name, about string
	lines       int // the default of -lines
	// estLineBytes is a little over the average line, to size the buffer
	// once. keepEvery, when not 0, gives the kind a pipeline of its own
	// (see [corpusKind.spec]); 0 uses [DefaultSpec].
	estLineBytes, keepEvery int
	// gen returns n lines, each followed by '\n', with ids from firstID.
	gen func(seed uint64, firstID int64, n int) []byte
}

// corpusKinds are the shapes -corpus chooses from.
var corpusKinds = map[string]corpusKind{
	"tweets": {name: "tweets", about: "Twitter-API statuses of about 6 KB (shared/devkit/tweetgen)", lines: 400_000, estLineBytes: 6300,
		gen: func(seed uint64, firstID int64, n int) []byte { return tweetgen.New(seed, firstID).Lines(n) }},
	// The tweets as a live feed, for deploy/pipelines/tweets-full.yaml:
	// each of the 20,000 users writes about 20 of 400,000 lines, and a
	// delete notice comes before or after its tweet.
	"feed": {name: "feed", about: "the tweets as a live feed: authors and mentions from 20,000 users, 1 % delete notices (shared/devkit/tweetgen)", lines: 400_000, estLineBytes: 6300,
		gen: func(seed uint64, firstID int64, n int) []byte {
			return tweetgen.NewFeed(seed, firstID, tweetgen.FeedOptions{Users: 20_000, DeleteEvery: 100}).Lines(n)
		}},
	// xz -6 compresses 4 KB records about 8.5×: each line has its own
	// ids, counts and text, as an archive's do.
	"archive": {name: "archive", about: "archive records of about 4 KB, every one with its own values (xz: about 8×), 0.15 % kept", lines: 100_000, estLineBytes: 4200,
		keepEvery: 667, gen: recordGen(4096)},
	"small": {name: "small", about: "records of about 200 B, 1 % kept", lines: 2_000_000, estLineBytes: 260,
		keepEvery: 100, gen: recordGen(200)},
}

// recordWords are the words of a record's text. 36 words drawn uniformly
// make xz (-6) compress 4 KB records 8–9×; 16 make it 11×, 64 make it 6×.
var recordWords = strings.Fields("archive stream network morning evening weather football concert station machine " +
	"language history election festival holiday journey birthday weekend kitchen library picture traffic airport " +
	"summer winter coffee garden market silence thunder mountain river ocean village bridge harbour")

// recordEscapes are the non-ASCII characters of a record's text, written
// as \uXXXX escapes as archives write them.
var recordEscapes = []string{`\ud83d\ude00`, `\ud83d\udd25`, `\u2764`, `\u65e5\u672c`, `\u00e9`}

// recordGen returns a generator of records of about size bytes: an id, a
// creation time, a user with its own id and counts, a score, and text of
// random words filling the rest.
func recordGen(size int) func(seed uint64, firstID int64, n int) []byte {
	return func(seed uint64, firstID int64, n int) []byte {
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		b := make([]byte, 0, n*(size+64))
		for id := firstID; id < firstID+int64(n); id++ {
			start := len(b)
			uid := r.Int64N(1 << 40)
			b = fmt.Appendf(b, `{"id":%d,"created_at":"`, id)
			b = time.Unix(1514764800+id%31_000_000, 0).UTC().AppendFormat(b, time.RubyDate)
			b = fmt.Appendf(b, `","user":{"id":%d,"screen_name":"u%s","followers_count":%d},"score":%.6f,"text":"`,
				uid, strconv.FormatInt(uid, 36), r.IntN(2_000_000), r.Float64())
			for i := 0; len(b)-start < size-2; i++ {
				if i > 0 {
					b = append(b, ' ')
				}
				if r.IntN(12) == 0 {
					b = append(b, recordEscapes[r.IntN(len(recordEscapes))]...)
				}
				b = append(b, recordWords[r.IntN(len(recordWords))]...)
			}
			b = append(b, "\"}\n"...)
		}
		return b
	}
}

// spec returns the pipeline of a kind with keepEvery: source and table
// named after the kind, keyed by id, keeping the lines whose id is a
// multiple of keepEvery, with the gateway's read time for the latency.
func (k corpusKind) spec() string {
	return fmt.Sprintf(`source: %[1]s
table: %[1]s
key: id
filter: id %% %[2]d == 0
columns:
  - {name: id, path: id, type: bigint, required: true}
  - {name: created_at, path: created_at, type: timestamptz, layout: ruby, required: true}
  - {name: author, path: user.screen_name, type: text}
  - {name: text, path: text, type: text}
  - {name: received_at, meta: received_at, type: timestamptz}
`, k.name, k.keepEvery)
}

// corpus is the lines of a run, generated once and sent by every
// measurement, each followed by '\n'. It is read-only once built.
type corpus struct {
	kind corpusKind
	data []byte
	ends []int // ends[i] is the offset just past line i's newline
}

// newCorpus generates n lines of kind k from seed, chunk by chunk, a
// chunk on each core at once. Generators run at most two chunks per core
// ahead of assembly, which bounds the memory held besides the corpus.
func newCorpus(k corpusKind, seed uint64, n int) *corpus {
	chunks := make([]chan []byte, (n+chunkLines-1)/chunkLines)
	for j := range chunks {
		chunks[j] = make(chan []byte, 1)
	}
	ahead := make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	go func() {
		for j := range chunks {
			ahead <- struct{}{}
			go func() {
				chunks[j] <- k.gen(seed*0x9e3779b97f4a7c15+uint64(j), firstTweetID+int64(j)*chunkLines, min(chunkLines, n-j*chunkLines))
			}()
		}
	}()
	c := &corpus{kind: k, data: make([]byte, 0, n*k.estLineBytes), ends: make([]int, 0, n)}
	for j := range chunks {
		chunk := <-chunks[j]
		<-ahead
		for i, b := range chunk {
			if b == '\n' {
				c.ends = append(c.ends, len(c.data)+i+1)
			}
		}
		c.data = append(c.data, chunk...)
	}
	return c
}

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
type span struct{ First, N int }

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

// Bytes returns the lines of s with their newlines.
func (c *corpus) Bytes(s span) []byte {
	if s.N == 0 {
		return nil
	}
	return c.data[c.start(s.First):c.ends[s.First+s.N-1]]
}

// xzArgs compress a dump: xz's default preset (-6, as archives are
// made), on two threads, which cuts the input into blocks of 24 MiB.
// `xz -dc` (5.4) still decodes them on one thread.
var xzArgs = []string{"-T2", "-c"}

// dump is the corpus compressed into one file, sent over one connection
// the way archives are: `ncat host port < dump.xz`.
type dump struct {
	Format  string `json:"format"`
	Command string `json:"command"`
	Path    string `json:"path"`
	Bytes   int64  `json:"bytes"`
	Cached  bool   `json:"cached"` // an earlier run had made the same file
	// Sender is what sends the file; Ncat is ncat's path, empty when it
	// is missing and the bench sends the file itself.
	Sender string `json:"sender"`
	Ncat   string `json:"-"`
	// Floor is `xz -dc` of the file into /dev/null, with xz's CPU time:
	// the rate no reader of the dump can beat on one core.
	Floor rate `json:"floor"`
}

// newDump compresses c with xz into the bench's cache directory, or finds
// the file an earlier run made of the same lines, and finds ncat.
// Compressing 400 MB takes a few minutes on two cores; the file is named
// by a hash of the lines, so it is made once.
func newDump(ctx context.Context, c *corpus, pr *progress) (*dump, error) {
	xz, err := exec.LookPath("xz")
	if err != nil {
		return nil, fmt.Errorf("-compress xz needs xz (apt-get install xz-utils): %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, fmt.Errorf("find a cache directory for the dump: %w", err)
	}
	h := sha256.New()
	h.Write(c.data)
	h.Write([]byte(strings.Join(xzArgs, " ")))
	d := &dump{Format: "xz", Command: "xz " + strings.Join(xzArgs[:len(xzArgs)-1], " "),
		Path: filepath.Join(cache, "jetline-bench", hex.EncodeToString(h.Sum(nil)[:8])+".xz")}
	if info, err := os.Stat(d.Path); err == nil {
		d.Bytes, d.Cached = info.Size(), true
	} else {
		pr.step("compressing %s with `%s` into %s (once: later runs of the same lines reuse it)", mib(int64(len(c.data))), d.Command, d.Path)
		cmd := exec.CommandContext(ctx, xz, xzArgs...)
		cmd.Stdin, cmd.Stderr = bytes.NewReader(c.data), os.Stderr
		out, err := cmd.Output()
		tmp := d.Path + ".tmp"
		if err == nil {
			err = os.MkdirAll(filepath.Dir(d.Path), 0o755)
		}
		if err == nil {
			err = os.WriteFile(tmp, out, 0o644)
		}
		if err == nil {
			err = os.Rename(tmp, d.Path)
		}
		if err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("compress the corpus with %s into %s: %w", d.Command, d.Path, err)
		}
		d.Bytes = int64(len(out))
	}
	if d.Ncat, err = exec.LookPath("ncat"); err == nil {
		d.Sender = "ncat (" + d.Ncat + ")"
	} else {
		d.Sender = "the bench's own io.Copy (ncat not found; apt-get install ncat)"
		pr.step("warning: ncat not found: the bench sends the dump itself")
	}
	return d, nil
}

// measureFloor times `xz -dc` of the dump into /dev/null, with the file
// in the page cache as it is for the send.
func (d *dump) measureFloor(ctx context.Context, c *corpus) error {
	if _, err := os.ReadFile(d.Path); err != nil {
		return fmt.Errorf("read the dump: %w", err)
	}
	cmd := exec.CommandContext(ctx, "xz", "-dc", d.Path)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xz -dc %s: %w", d.Path, err)
	}
	d.Floor = newRate(c.Len(), int64(len(c.data)), time.Since(start))
	d.Floor.CPUSeconds = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return nil
}
