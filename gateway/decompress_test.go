package gateway_test

import (
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// fixtureLines are the lines of testdata/lines.ndjson.bz2, which was made
// with `bzip2 -1` (100 kB blocks, so the stream has three) from them.
func fixtureLines() []string {
	lines := make([]string, 3000)
	for i := range lines {
		n := i + 1
		lines[i] = fmt.Sprintf(`{"id":%d,"user":"u%d","text":"%s"}`, n, n%97, strings.Repeat("ab", n%40))
	}
	return lines
}

func ndjson(lines []string) []byte {
	return []byte(strings.Join(lines, "\n") + "\n")
}

// compressed returns raw written through the encoder newWriter makes.
func compressed(t testing.TB, raw []byte, newWriter func(io.Writer) (io.WriteCloser, error)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := newWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t testing.TB, raw []byte) []byte {
	return compressed(t, raw, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriter(w), nil })
}

func zstded(t testing.TB, raw []byte) []byte {
	return compressed(t, raw, func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) })
}

func xzed(t testing.TB, raw []byte) []byte {
	return compressed(t, raw, func(w io.Writer) (io.WriteCloser, error) {
		return xz.WriterConfig{BlockSize: 64 << 10}.NewWriter(w)
	})
}

// bzipped returns the fixture; the standard library has no bzip2 encoder.
func bzipped(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/lines.ndjson.bz2")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(data)))
	if err != nil || !bytes.Equal(raw, ndjson(fixtureLines())) {
		t.Fatalf("testdata/lines.ndjson.bz2 does not hold fixtureLines (%v)", err)
	}
	return data
}

// skippableFrame is a zstd skippable frame, as pzstd writes first.
func skippableFrame(data []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 0x184D2A5B)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(data)))
	return append(out, data...)
}

// compressedCase is one stream to send and what it holds.
type compressedCase struct {
	name        string
	compression string
	data        []byte   // sent on the connection
	lines       []string // the decompressed lines
}

func compressedCases(t testing.TB) []compressedCase {
	lines := fixtureLines()
	raw := ndjson(lines)
	first, second := ndjson(lines[:1234]), ndjson(lines[1234:])
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return []compressedCase{
		{"gzip", gateway.CompressionGzip, gzipped(t, raw), lines},
		{"gzip multi-member", gateway.CompressionGzip, cat(gzipped(t, first), gzipped(t, second)), lines},
		{"zstd", gateway.CompressionZstd, zstded(t, raw), lines},
		{"zstd concatenated frames", gateway.CompressionZstd, cat(zstded(t, first), zstded(t, second)), lines},
		{"zstd after a skippable frame", gateway.CompressionZstd, cat(skippableFrame([]byte("pzstd")), zstded(t, raw)), lines},
		{"xz", gateway.CompressionXz, xzed(t, raw), lines},
		{"xz concatenated streams", gateway.CompressionXz, cat(xzed(t, first), xzed(t, second)), lines},
		{"bzip2", gateway.CompressionBzip2, bzipped(t), lines},
		{"bzip2 concatenated streams", gateway.CompressionBzip2, cat(bzipped(t), bzipped(t)), append(lines[:len(lines):len(lines)], lines...)},
	}
}

// sendAll sends each payload on its own connection, all at once, and
// returns the receipts in order.
func sendAll(t *testing.T, addr string, payloads [][]byte) []gateway.Receipt {
	t.Helper()
	receipts := make([]gateway.Receipt, len(payloads))
	var wg sync.WaitGroup
	for i, p := range payloads {
		wg.Go(func() { receipts[i] = send(t, addr, p) })
	}
	wg.Wait()
	return receipts
}

// linesByConn returns the stored lines of each connection, by line number.
func linesByConn(lines []storedLine) map[uint64]map[int64]string {
	out := map[uint64]map[int64]string{}
	for _, l := range lines {
		conn, _ := strconv.ParseUint(l.conn, 10, 64)
		if out[conn] == nil {
			out[conn] = map[int64]string{}
		}
		out[conn][l.line] = l.data
	}
	return out
}

func TestGatewayCompressedRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	cases := compressedCases(t)
	payloads := make([][]byte, len(cases))
	for i, c := range cases {
		payloads[i] = c.data
	}
	receipts := sendAll(t, b.addr(t, 0), payloads)
	stored := linesByConn(b.storedLines(t))
	for i, c := range cases {
		r := receipts[i]
		raw := ndjson(c.lines)
		want := gateway.Receipt{Status: gateway.StatusOK, Lines: int64(len(c.lines)), Bytes: int64(len(c.data)),
			Compression: c.compression, BytesDecompressed: int64(len(raw)), Gateway: "test-gw", Conn: r.Conn}
		if r != want {
			t.Errorf("%s: receipt = %+v, want %+v", c.name, r, want)
			continue
		}
		got := stored[r.Conn]
		if len(got) != len(c.lines) {
			t.Errorf("%s: stream holds %d lines of the connection, want %d", c.name, len(got), len(c.lines))
		}
		for n, line := range c.lines {
			if got[int64(n+1)] != line {
				t.Errorf("%s: line %d = %q, want %q", c.name, n+1, got[int64(n+1)], line)
				break
			}
		}
	}
}

// A corrupt or truncated stream ends with an error receipt that counts
// exactly the lines stored, and the gateway carries on.
func TestGatewayCompressedCorruptOrTruncated(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	type damaged struct {
		name, compression, wantErr string
		data                       []byte
	}
	var cases []damaged
	for _, c := range compressedCases(t) {
		if strings.Contains(c.name, " ") {
			continue // one stream per format is enough here
		}
		corrupt := bytes.Clone(c.data)
		for i := len(corrupt) / 2; i < len(corrupt)/2+16; i++ {
			corrupt[i] ^= 0x5a
		}
		cases = append(cases,
			damaged{c.name + " corrupt", c.compression, c.compression + ": corrupt stream after ", corrupt},
			damaged{c.name + " truncated", c.compression, c.compression + ": truncated stream after ", c.data[:len(c.data)*2/3]})
	}
	payloads := make([][]byte, len(cases))
	for i, c := range cases {
		payloads[i] = c.data
	}
	receipts := sendAll(t, b.addr(t, 0), payloads)
	stored := linesByConn(b.storedLines(t))
	for i, c := range cases {
		r := receipts[i]
		t.Logf("%s: %d lines stored, resume at %d, error %q", c.name, r.Lines, r.ResumeLine, r.Error)
		if r.Status != gateway.StatusError || r.Compression != c.compression || !strings.HasPrefix(r.Error, c.wantErr) {
			t.Errorf("%s: receipt = %+v, want status error, compression %s, error starting %q", c.name, r, c.compression, c.wantErr)
		}
		if got := int64(len(stored[r.Conn])); got != r.Lines {
			t.Errorf("%s: receipt says %d lines stored, the stream holds %d", c.name, r.Lines, got)
		}
		for n := int64(1); n < r.ResumeLine; n++ {
			if _, ok := stored[r.Conn][n]; !ok {
				t.Errorf("%s: line %d, before resume_line %d, is not stored", c.name, n, r.ResumeLine)
				break
			}
		}
	}
	// Still serving.
	if r := send(t, b.addr(t, 0), []byte("after\n")); r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("receipt after the damaged streams = %+v", r)
	}
}

func TestGatewayDecompressedLimit(t *testing.T) {
	t.Parallel()
	lines := fixtureLines()
	small := ndjson(lines[:100])
	limit := len(small)
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_DECOMPRESSED_BYTES": strconv.Itoa(limit)}})
	raw := ndjson(lines)
	// A zstd frame header asking for a 256 MiB window, then an empty
	// last block.
	bigWindow := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 18 << 3, 0x01, 0x00, 0x00}
	receipts := sendAll(t, b.addr(t, 0), [][]byte{zstded(t, raw), gzipped(t, small), raw, bigWindow})

	over := receipts[0]
	// Line 101 straddles the limit: 100 whole lines fit.
	if over.Status != gateway.StatusError || over.Lines != 100 || over.ResumeLine != 101 ||
		over.BytesDecompressed != int64(limit) || !strings.Contains(over.Error, "GATEWAY_MAX_DECOMPRESSED_BYTES") {
		t.Errorf("over the limit: receipt = %+v, want error with 100 lines, resume at 101", over)
	}
	if r := receipts[1]; r.Status != gateway.StatusOK || r.Lines != 100 {
		t.Errorf("exactly at the limit: receipt = %+v, want ok with 100 lines", r)
	}
	// Plain text is not limited.
	if r := receipts[2]; r.Status != gateway.StatusOK || r.Lines != int64(len(lines)) {
		t.Errorf("plain text: receipt = %+v, want ok with %d lines", r, len(lines))
	}
	if r := receipts[3]; r.Status != gateway.StatusError || !strings.Contains(r.Error, "window over 128 MiB") {
		t.Errorf("zstd window of 256 MiB: receipt = %+v, want an error about the window", r)
	}
	if got := linesByConn(b.storedLines(t))[over.Conn]; len(got) != 100 || got[100] != lines[99] {
		t.Errorf("over the limit: stream holds %d lines of the connection, want the first 100", len(got))
	}
}

// Input that starts like a magic number but is not one is plain text.
func TestGatewayPlainNearMagic(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	inputs := []string{
		"BZh9 is how a bzip2 stream starts\nsecond\n",
		"BZh91AY&SX\n",
		"\x1f\x8b not gzip\n",
		"(\xb5/ nearly zstd\n",
		"\xfd7zXZ!\n",
		"B",
		"BZh",
	}
	payloads := make([][]byte, len(inputs))
	for i, in := range inputs {
		payloads[i] = []byte(in)
	}
	receipts := sendAll(t, b.addr(t, 0), payloads)
	stored := linesByConn(b.storedLines(t))
	for i, in := range inputs {
		r := receipts[i]
		want := strings.Split(strings.TrimSuffix(in, "\n"), "\n")
		if r.Status != gateway.StatusOK || r.Compression != gateway.CompressionNone || r.Lines != int64(len(want)) ||
			r.Bytes != int64(len(in)) || r.BytesDecompressed != int64(len(in)) {
			t.Errorf("%q: receipt = %+v, want ok, plain, %d lines", in, r, len(want))
			continue
		}
		for n, line := range want {
			if got := stored[r.Conn][int64(n+1)]; got != line {
				t.Errorf("%q: line %d = %q, want %q", in, n+1, got, line)
			}
		}
	}
}

// The idle timeout acts on the connection underneath a decoder.
func TestGatewayCompressedIdleTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_IDLE_TIMEOUT": "300ms"}})
	lines := fixtureLines()
	c := dial(t, b.addr(t, 0))
	w, err := zstd.NewWriter(c, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(ndjson(lines[:1000])); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil { // a complete block, then silence
		t.Fatal(err)
	}
	r := readReceipt(t, c, 10*time.Second)
	if r.Status != gateway.StatusIdleTimeout || r.Compression != gateway.CompressionZstd || r.Lines != 1000 || r.ResumeLine != 1001 {
		t.Fatalf("receipt = %+v, want idle_timeout, zstd, 1000 lines, resume at 1001", r)
	}
}

// Shutdown stops a decoder's reads like plain ones.
func TestGatewayCompressedShutdownMidStream(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_SHUTDOWN_TIMEOUT": "5s"}})
	c := dial(t, b.addr(t, 0))
	var written atomic.Int64
	go func() {
		w := gzip.NewWriter(c)
		streamLines(writerConn{c, w}, 200, &written, 0)
	}()
	// Frames, not lines: reading every line of a growing stream at each
	// poll would let the sender fill it first.
	testenv.Eventually(t, 20*time.Second, "lines to be stored", func() error {
		if got := b.msgCount(t); got < 5 {
			return fmt.Errorf("%v, want at least %v", got, 5)
		}
		return nil
	})

	stopped := make(chan error, 1)
	go func() { stopped <- b.stop() }()
	r := readReceipt(t, c, 10*time.Second)
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Status != gateway.StatusShutdown || r.Compression != gateway.CompressionGzip || r.Error == "" {
		t.Fatalf("receipt = %+v, want status shutdown, gzip", r)
	}
	if n := int64(len(b.storedLines(t))); n != r.Lines || r.ResumeLine != r.Lines+1 {
		t.Fatalf("receipt = %+v; the stream holds %d lines", r, n)
	}
}

// writerConn is a connection whose writes go through a compressor that
// is flushed after each write, so the gateway sees whole lines at once.
type writerConn struct {
	*net.TCPConn
	w *gzip.Writer
}

func (c writerConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err == nil {
		err = c.w.Flush()
	}
	return n, err
}
