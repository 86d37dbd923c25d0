//go:build unix

package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// decodePath is one way a format is decoded: by its system program or by
// the Go decoder.
type decodePath struct {
	name    string
	program bool
}

// programs returns the programs a decompressor of the path is given, each
// time a set of its own.
func (p decodePath) programs() *decodePrograms {
	if !p.program {
		return nil
	}
	return programsOf(1)
}

// decodePaths returns the ways the gateway may decode format: the Go
// decoder, and the program if it has one and it is installed.
func decodePaths(t *testing.T, format string) []decodePath {
	t.Helper()
	paths := []decodePath{{"go", false}}
	prog := systemDecoders.byFormat[format]
	if prog == nil {
		return paths
	}
	if _, err := prog.path(); err != nil {
		t.Logf("%s is not installed; only the Go decoder is tested (%v)", prog.name, err)
		return paths
	}
	return append(paths, decodePath{"program", true})
}

// programsOf returns the system's programs with a bound of n.
func programsOf(n int) *decodePrograms {
	return &decodePrograms{byFormat: systemDecoders.byFormat, slots: make(chan struct{}, n)}
}

// openDecompressor returns a decompressor of what src holds that may
// use programs.
func openDecompressor(t *testing.T, src io.Reader, limit int64, programs *decodePrograms) *decompressor {
	t.Helper()
	br := bufio.NewReaderSize(src, sniffBuffer)
	format := sniff(br)
	if format == CompressionNone {
		t.Fatal("sniffed no compression")
	}
	d := newDecompressor(format, br, limit)
	d.programs = programs
	// As the session does: Close makes a program's feeder stop reading.
	if c, ok := src.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.interrupt = func() { _ = c.SetReadDeadline(time.Now()) }
	}
	t.Cleanup(d.Close)
	return d
}

func usesProgram(d *decompressor) bool {
	_, ok := d.dec.(*programDecoder)
	return ok
}

// testLines returns n lines that differ, so that they compress ~10×.
func testLines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"id":%d,"user":"u%d","hash":"%x","text":"%s"}`+"\n", i, i*7919%10007, i*2654435761, strings.Repeat("ab", i%50))
	}
	return b.Bytes()
}

func xzWith(t *testing.T, raw []byte, blockSize int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{BlockSize: blockSize}.NewWriter(&buf)
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

// xzProgram compresses raw with the xz program and args, as a user would.
func xzProgram(t *testing.T, raw []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("xz", append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

func TestDecompressXzPaths(t *testing.T) {
	t.Parallel()
	raw := testLines(20000)
	streams := []struct {
		name string
		data []byte
	}{
		{"one block", xzWith(t, raw, 1<<30)},
		{"64 KiB blocks", xzWith(t, raw, 64<<10)},
		{"concatenated streams", append(xzWith(t, raw[:len(raw)/3], 1<<30), xzWith(t, raw[len(raw)/3:], 1<<30)...)},
	}
	if _, err := exec.LookPath("xz"); err == nil {
		streams = append(streams, struct {
			name string
			data []byte
		}{"xz -T2 --block-size=256KiB", xzProgram(t, raw, "-T2", "--block-size=256KiB")})
	}
	for _, path := range decodePaths(t, CompressionXz) {
		for _, s := range streams {
			t.Run(path.name+"/"+s.name, func(t *testing.T) {
				t.Parallel()
				d := openDecompressor(t, bytes.NewReader(s.data), 1<<30, path.programs())
				got, err := io.ReadAll(d)
				if err != nil {
					t.Fatal(err)
				}
				if usesProgram(d) != path.program {
					t.Fatalf("decoded by the program: %v, want %v", usesProgram(d), path.program)
				}
				if !bytes.Equal(got, raw) {
					t.Fatalf("decoded %d bytes that differ from the %d sent", len(got), len(raw))
				}
			})
		}
	}
}

// Corrupt and truncated streams, and streams over the limit, end with the
// same receipts whichever way they are decoded.
func TestDecompressDamagedPaths(t *testing.T) {
	t.Parallel()
	raw := testLines(20000)
	xzData := xzWith(t, raw, 1<<30)
	bzRaw := fixtureNDJSON()
	bzData, err := os.ReadFile("testdata/lines.ndjson.bz2")
	if err != nil {
		t.Fatal(err)
	}
	type damaged struct {
		name    string
		data    []byte
		limit   int64
		wantErr string // the receipt's error starts with it; "" for EOF
	}
	cases := func(format string, data, raw []byte, inHeader int) []damaged {
		corrupt := bytes.Clone(data)
		for i := len(corrupt) / 2; i < len(corrupt)/2+16; i++ {
			corrupt[i] ^= 0x5a
		}
		return []damaged{
			{"whole", data, int64(len(raw)), ""},
			{"concatenated", append(bytes.Clone(data), data...), 2 * int64(len(raw)), ""},
			{"corrupt", corrupt, 1 << 30, format + ": corrupt stream after "},
			{"truncated", data[:len(data)*2/3], 1 << 30, format + ": truncated stream after "},
			{"truncated in the header", data[:inHeader], 1 << 30, format + ": truncated stream after 0 "},
			{"over the limit", data, int64(len(raw)) - 1, format + ": stream decompresses to more than "},
		}
	}
	formats := []struct {
		format string
		raw    []byte
		cases  []damaged
	}{
		{CompressionXz, raw, cases(CompressionXz, xzData, raw, 9)},
		{CompressionBzip2, bzRaw, cases(CompressionBzip2, bzData, bzRaw, 12)},
	}
	for _, f := range formats {
		for _, path := range decodePaths(t, f.format) {
			for _, c := range f.cases {
				t.Run(f.format+"/"+path.name+"/"+c.name, func(t *testing.T) {
					t.Parallel()
					d := openDecompressor(t, bytes.NewReader(c.data), c.limit, path.programs())
					got, err := io.ReadAll(d)
					if usesProgram(d) != path.program {
						t.Fatalf("decoded by the program: %v, want %v", usesProgram(d), path.program)
					}
					want := f.raw
					if c.name == "concatenated" {
						want = append(bytes.Clone(f.raw), f.raw...)
					}
					if !bytes.HasPrefix(want, got) && c.name != "corrupt" {
						t.Errorf("the %d bytes decoded are not the start of what was sent", len(got))
					}
					if c.wantErr == "" {
						if err != nil || len(got) != len(want) {
							t.Fatalf("decoded %d bytes of %d, error %v; want all and no error", len(got), len(want), err)
						}
						return
					}
					var derr *DecompressError
					if !errors.As(err, &derr) || !strings.HasPrefix(derr.Error(), c.wantErr) {
						t.Fatalf("error %v, want a *DecompressError starting %q", err, c.wantErr)
					}
					if derr.Decompressed != int64(len(got)) {
						t.Errorf("error counts %d decompressed bytes, %d were read", derr.Decompressed, len(got))
					}
					t.Logf("%s", derr)
				})
			}
		}
	}
}

// fixtureNDJSON returns what testdata/lines.ndjson.bz2 holds.
func fixtureNDJSON() []byte {
	var b bytes.Buffer
	for i := range 3000 {
		n := i + 1
		fmt.Fprintf(&b, `{"id":%d,"user":"u%d","text":"%s"}`+"\n", n, n%97, strings.Repeat("ab", n%40))
	}
	return b.Bytes()
}

// Past the bound on programs, connections are decoded in Go.
func TestDecompressProgramBound(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed")
	}
	raw := testLines(5000)
	data := xzWith(t, raw, 1<<30)
	programs := programsOf(1)
	first := openDecompressor(t, bytes.NewReader(data), 1<<30, programs)
	second := openDecompressor(t, bytes.NewReader(data), 1<<30, programs)
	for i, d := range []*decompressor{first, second} {
		got, err := io.ReadAll(d)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("decompressor %d: %d bytes, %v", i, len(got), err)
		}
	}
	if !usesProgram(first) || usesProgram(second) {
		t.Fatalf("first runs the program: %v, second: %v; want only the first", usesProgram(first), usesProgram(second))
	}
	first.Close()
	third := openDecompressor(t, bytes.NewReader(data), 1<<30, programs)
	if _, err := io.ReadAll(third); err != nil || !usesProgram(third) {
		t.Fatalf("after the first closed, the third runs the program: %v (%v), want true", usesProgram(third), err)
	}
}

// A sender that pauses gets what it sent decoded without sending more,
// but for the last 8 KiB: xz reads its input in pieces of 8 KiB and waits
// for a whole one (or the end) before it decodes it. The rest follows the
// end of the input.
func TestDecompressProgramSenderPauses(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed")
	}
	// Fewer bytes than Read reads from the connection at once, so that
	// one read takes all, and the next would wait for the sender.
	raw := testLines(2000)
	data := xzWith(t, raw, 1<<30)
	if len(data) >= programInBuffer || len(data) < 16<<10 {
		t.Fatalf("the stream has %d bytes, want 16 KiB to %d", len(data), programInBuffer)
	}
	client, server := tcpPair(t)
	go func() { _, _ = client.Write(data) }() // and no EOF yet
	d := openDecompressor(t, server, 1<<30, programsOf(1))
	got := make([]byte, len(raw))
	half := len(raw) / 2
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := io.ReadFull(d, got[:half]); err != nil || !usesProgram(d) {
		t.Fatalf("read %v, program %v", err, usesProgram(d))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the first half of the lines took %s while the sender waited; want them at once", took)
	}
	_ = client.CloseWrite()
	if _, err := io.ReadFull(d, got[half:]); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("after the end of the input: %v, or the lines differ", err)
	}
	if n, err := d.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("at the end: %d, %v; want EOF", n, err)
	}
}

// The program is fed what the connection delivers whether or not its
// output is being read, as in `ncat -l | xz -dc`: a decoder that read
// the connection only inside Read, when no output waited, left xz without
// input once its output was taken, and on an archive of one block
// decoded at a seventh of xz's speed.
func TestDecompressProgramFeedsAhead(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed")
	}
	// Decoded, no more than the reader's two buffers hold, so xz can
	// write all of it with nothing read; compressed (hex compresses only
	// about twice), many reads of the connection.
	var lines bytes.Buffer
	for i := 0; lines.Len() < 400<<10; i++ {
		fmt.Fprintf(&lines, "{\"id\":%d,\"hex\":\"%x\"}\n", i, sha512.Sum512([]byte(strconv.Itoa(i))))
	}
	raw := lines.Bytes()
	data := xzWith(t, raw, 1<<30)
	if len(raw) > 2*programOutBuffer || len(data) < 4*programInBuffer {
		t.Fatalf("%d bytes decoded, %d compressed: want at most %d and at least %d", len(raw), len(data), 2*programOutBuffer, 4*programInBuffer)
	}
	client, server := tcpPair(t)
	src := &countingConn{TCPConn: server}
	go func() {
		_, _ = client.Write(data)
		_ = client.CloseWrite()
	}()
	d := openDecompressor(t, src, 1<<30, programsOf(1))
	if _, err := io.ReadFull(d, make([]byte, 100)); err != nil || !usesProgram(d) {
		t.Fatalf("first read %v, program %v", err, usesProgram(d))
	}
	// The bytes Read has not asked for yet are all read from the
	// connection and handed to xz.
	testenv.Eventually(t, 10*time.Second, "the whole stream read from the connection", func() error {
		if n := src.n.Load(); n < int64(len(data)) {
			return fmt.Errorf("%d of %d bytes read", n, len(data))
		}
		return nil
	})
	rest, err := io.ReadAll(d)
	if err != nil || !bytes.Equal(rest, raw[100:]) {
		t.Fatalf("the rest: %v, or the lines differ", err)
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	*net.TCPConn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A connection that closes or fails mid-stream, or is dropped while its
// program still decodes, leaves no process and no goroutine behind.
// Not parallel: it counts every decoder goroutine of the test binary.
func TestDecompressProgramLeavesNothing(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed")
	}
	raw := testLines(20000)
	data := xzWith(t, raw, 1<<30)
	cases := []struct {
		name string
		end  func(client *net.TCPConn, d *decompressor) // after half the stream
	}{
		{"closed", func(c *net.TCPConn, d *decompressor) {
			_ = c.Close()
			_, err := io.ReadAll(d)
			if !strings.Contains(fmt.Sprint(err), "truncated stream") {
				t.Errorf("closed: error %v, want a truncated stream", err)
			}
		}},
		{"reset", func(c *net.TCPConn, d *decompressor) {
			_ = c.SetLinger(0)
			_ = c.Close()
			_, err := io.ReadAll(d)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("reset: error %v, want the connection's", err)
			}
		}},
		{"dropped", func(c *net.TCPConn, d *decompressor) {}},
	}
	for _, c := range cases {
		client, server := tcpPair(t)
		if _, err := client.Write(data[:len(data)/2]); err != nil {
			t.Fatal(err)
		}
		d := openDecompressor(t, server, 1<<30, programsOf(1))
		if _, err := io.ReadFull(d, make([]byte, 1000)); err != nil || !usesProgram(d) {
			t.Fatalf("%s: first read %v, program %v", c.name, err, usesProgram(d))
		}
		pid := d.dec.(*programDecoder).cmd.Process.Pid
		c.end(client, d)
		d.Close()
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: after Close, process %d answers kill(0) with %v, want ESRCH (gone and reaped)", c.name, pid, err)
		}
		// Close returns once both goroutines have called Done, which
		// they do on their way out: give them a moment to be gone.
		testenv.Eventually(t, 5*time.Second, c.name+": the decoder goroutines to end after Close", func() error {
			if n := decoderGoroutines(); n != 0 {
				return fmt.Errorf("%d still run", n)
			}
			return nil
		})
	}
}

// decoderGoroutines counts the goroutines running a programDecoder method.
func decoderGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("(*programDecoder).read")) + bytes.Count(buf, []byte("(*programDecoder).feed"))
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var s net.Conn
	select {
	case s = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("accept timed out")
	}
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestDecodeProgramsBound checks GATEWAY_DECODE_PROGRAMS's meaning: 0 is
// one program per core (at least two), -1 none (Go decoders only), and a
// connection with none decodes in Go.
func TestDecodeProgramsBound(t *testing.T) {
	t.Parallel()
	if got, want := systemDecoders.withSlots(0).bound(), max(2, runtime.NumCPU()); got != want {
		t.Errorf("bound of 0 = %d, want %d", got, want)
	}
	if got := systemDecoders.withSlots(3).bound(); got != 3 {
		t.Errorf("bound of 3 = %d", got)
	}
	none := systemDecoders.withSlots(-1)
	if none != nil || none.bound() != 0 {
		t.Fatalf("-1 gives %v, want no programs", none)
	}
	if pd := none.start(CompressionXz, strings.NewReader(""), nil); pd != nil {
		pd.Close()
		t.Fatal("a program started with none allowed")
	}
}
