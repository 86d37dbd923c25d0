package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"
)

// decodeProgram is a system program that decodes one format from its
// standard input to its standard output, such as `xz -dc`.
type decodeProgram struct {
	// name is looked up in PATH once, on first use.
	name string
	args []string
	// truncated are what the program's standard error says, in the C
	// locale, when its input ended inside a stream.
	truncated []string

	path func() (string, error)
}

func newDecodeProgram(name string, args []string, truncated ...string) *decodeProgram {
	return &decodeProgram{name: name, args: args, truncated: truncated,
		path: sync.OnceValues(func() (string, error) { return exec.LookPath(name) })}
}

// decodePrograms chooses, per connection, between a format's system
// program and the Go decoder: the program when it is installed and fewer
// than the bound of programs run, else the Go decoder. Safe for
// concurrent use.
type decodePrograms struct {
	byFormat map[string]*decodeProgram
	slots    chan struct{} // one per running program
}

// systemDecoders is the gateway's choice of programs, bounded to one per
// core (at least two): more would not decode faster in total, and past
// the bound the Go decoder costs no process and no copying through pipes.
//
// Why the xz program: decoding 100,000 tweet-shaped lines (594 MB, every
// value different; xz -6 makes them 54 MB, 11 times smaller) on a shared
// 2-core machine, load 2.3–3.5, in MiB/s of decompressed output, from a
// file (±10 % run to run):
//
//	                                          xz -6          xz -6 -T2
//	                                          (one block)    (25 blocks with sizes)
//	xz -dc >/dev/null                         141            149
//	xz -dc -T0 >/dev/null                     151            164
//	xz -dc -T0 | cat >/dev/null               108–114        170–218
//	github.com/ulikunitz/xz                    63             62
//	github.com/therootcompany/xz               71             77
//	two ulikunitz decoders at once, in total   –             122
//	decompressor, xz -dc -T0 (chosen)         133–138        191–212
//	decompressor, ulikunitz (the fallback)     65             55–62
//
// Decoding blocks in parallel in Go could at best match two decoders at
// once, 122 MiB/s on both cores, less than xz in one; the faster pure-Go
// decoder gains a fifth over ulikunitz, not the factor of two the program
// does. bzip2 stays with compress/bzip2: bzip2 -dc was 24 MiB/s against
// its 22, not worth a process (lbzip2 -n1 did 1.7 times bzip2, but is not
// installed as a rule and says "bad block header magic" of a stream cut
// short, as of a corrupt one). BenchmarkDecompress measures the
// decompressor rows again.
var systemDecoders = &decodePrograms{
	byFormat: map[string]*decodeProgram{
		// -T0: as many threads as cores on input whose block headers
		// carry sizes (xz -T); xz 5.4 decodes anything else in one
		// thread, as it always did. -Q: an unsupported integrity check
		// is a warning, and the data is still what was sent.
		CompressionXz: newDecodeProgram("xz", []string{"--decompress", "--stdout", "--format=xz", "--threads=0", "--no-warn", "--quiet"},
			"Unexpected end of input"),
	},
	slots: make(chan struct{}, defaultDecodePrograms()),
}

// defaultDecodePrograms is the bound on programs running at once when
// GATEWAY_DECODE_PROGRAMS is 0: one per core, at least two.
func defaultDecodePrograms() int { return max(2, runtime.NumCPU()) }

// bound returns how many programs may run at once; 0 for nil.
func (ps *decodePrograms) bound() int {
	if ps == nil {
		return 0
	}
	return cap(ps.slots)
}

// withSlots returns ps's programs bounded to n running at once (0: the
// default bound; less than 0: none, nil).
func (ps *decodePrograms) withSlots(n int) *decodePrograms {
	switch {
	case n < 0:
		return nil
	case n == 0:
		n = defaultDecodePrograms()
	}
	return &decodePrograms{byFormat: ps.byFormat, slots: make(chan struct{}, n)}
}

// start starts format's program decoding src and returns it, or returns
// nil when the Go decoder is to be used: no program for the format, none
// installed, the bound reached, or the program failed to start. interrupt,
// when not nil, makes a blocked read of src return (see
// [programDecoder.Close]).
func (ps *decodePrograms) start(format string, src io.Reader, interrupt func()) *programDecoder {
	if ps == nil {
		return nil
	}
	prog := ps.byFormat[format]
	if prog == nil {
		return nil
	}
	path, err := prog.path()
	if err != nil {
		return nil
	}
	select {
	case ps.slots <- struct{}{}:
	default:
		return nil
	}
	d, err := startProgram(prog, path, src, interrupt)
	if err != nil {
		<-ps.slots
		return nil
	}
	d.release = func() { <-ps.slots }
	return d
}

// Buffer sizes of a running program: what is read from the connection
// and handed to its standard input in one piece, and what is read from
// its standard output in one piece (its pipe holds up to [programPipe]).
const (
	programInBuffer  = 32 << 10
	programOutBuffer = 256 << 10
)

// gatherWait is how long the decoder's reader goes on gathering output
// into one piece after the first bytes of it arrive, while the piece has
// room: see [programDecoder.gather].
const gatherWait = 2 * time.Millisecond

// programDecoder is a decoding program run on one connection's stream, as
// in `ncat -l | xz -dc`: one goroutine of its own feeds the program what
// the connection sends, as fast as the program takes it, and another reads
// what the program writes. It is an io.Reader of the decoded bytes for the
// [decompressor], which enforces the size limit on them. Read returns
// decoded bytes as soon as there are some and waits for the program
// otherwise, so a sender that pauses has what it sent decoded and
// published, and the program never waits for input the connection has
// delivered.
//
// The feeder reads the connection (src) on its own goroutine, so src must
// be safe to read while the caller of Read does its own work; the
// session's reader is (see [session.Read]).
//
// When the connection's input ends, the feeder closes the program's
// standard input and Read returns what it still decodes. Then Read
// returns io.EOF if the program exited with status 0 after reading all of
// it; the connection's own error if reading it failed (an idle timeout, a
// shutdown); else a [*programError] with the program's message.
//
// Close kills the program if it still runs, makes the feeder's read of
// the connection return through interrupt, waits for the program and both
// goroutines, and frees its slot. A programDecoder is not safe for
// concurrent use, and Read must not be called after Close.
type programDecoder struct {
	prog      *decodeProgram
	cmd       *exec.Cmd
	src       io.Reader
	interrupt func()
	stdin     *os.File
	stdout    *os.File
	stderr    *limitedBuffer
	release   func()

	out     chan chunk    // from the reader
	outFree chan []byte   // the reader's buffers back
	fed     chan struct{} // closed when the feeder is done; inErr is then set
	quit    chan struct{}
	wg      sync.WaitGroup

	inErr   error  // src's error, io.EOF at its end; nil if feeding stopped otherwise
	cur     []byte // decoded bytes not yet returned
	curBuf  []byte // cur's buffer, to give back to the reader
	outErr  error  // the reader's error; io.EOF when the program closed its output
	err     error  // what Read returns from now on
	waited  bool   // cmd.Wait returned
	waitErr error
	closed  bool
}

// chunk is one piece of the program's standard output.
type chunk struct {
	b   []byte
	err error
}

func startProgram(prog *decodeProgram, path string, src io.Reader, interrupt func()) (*programDecoder, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	growPipe(outR)
	d := &programDecoder{
		prog: prog, src: src, interrupt: interrupt, stdin: inW, stdout: outR, stderr: &limitedBuffer{max: 4 << 10},
		out: make(chan chunk), outFree: make(chan []byte, 2), fed: make(chan struct{}), quit: make(chan struct{}),
	}
	d.cmd = exec.Command(path, prog.args...)
	d.cmd.Args[0] = prog.name // its messages start with it
	// The C locale, for messages as the classification expects them, and
	// nothing else of the gateway's environment: XZ_OPT or XZ_DEFAULTS
	// there must not change how streams are decoded.
	d.cmd.Env = []string{"LC_ALL=C"}
	d.cmd.Stdin, d.cmd.Stdout, d.cmd.Stderr = inR, outW, d.stderr
	err = d.cmd.Start()
	// The child has its own copies of these ends; ours must go, or the
	// pipes would never report the other side's end.
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	for range 2 {
		d.outFree <- make([]byte, programOutBuffer)
	}
	d.wg.Add(2)
	go d.feed()
	go d.read()
	return d, nil
}

// feed writes what the connection sends into the program's standard
// input until the input ends, then closes it. Should the program stop
// reading (it exited), the write fails and feeding ends; the program's
// exit says why.
//
// Why a goroutine of its own, measured over a loopback connection on a
// 2-core machine: decoding an archive of one block (plain `xz`, without
// -T, so xz decodes it on one thread) through a Read that read the
// connection itself whenever no output was waiting ran at 11–12 MiB/s,
// against 90 MiB/s for `xz -dc | cat`. xz holds little input, so once its
// output was read it waited for more while Read, after a short read of
// the connection, waited up to 50 ms for output before reading again.
func (d *programDecoder) feed() {
	defer d.wg.Done()
	defer d.stdin.Close()
	defer close(d.fed)
	b := make([]byte, programInBuffer)
	for {
		n, err := d.src.Read(b)
		if n > 0 {
			if _, werr := d.stdin.Write(b[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			d.inErr = err
			return
		}
		select {
		case <-d.quit:
			return
		default:
		}
	}
}

// read passes on what the program writes, up to and including the end
// of its output or an error.
func (d *programDecoder) read() {
	defer d.wg.Done()
	for {
		var b []byte
		select {
		case b = <-d.outFree:
		case <-d.quit:
			return
		}
		n, err := d.gather(b)
		select {
		case d.out <- chunk{b[:n], err}:
		case <-d.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// gather reads the program's output into b: what its pipe holds, then
// what it writes within [gatherWait] of that, until b is full. xz writes
// 8 KiB at a time, and a gateway that keeps up with it would otherwise
// read each piece alone, and the framer closes a frame where the bytes
// read end. Measured with `make bench BENCH_ARGS='-mode typed -corpus
// archive -compress xz'` with xz run with --threads=1, as it decodes an
// archive of one block, on a 2-core machine: 5.3 lines per frame without
// gathering, 19.2 with it. A sender's lines wait at most gatherWait
// longer for it.
func (d *programDecoder) gather(b []byte) (int, error) {
	n, err := d.stdout.Read(b)
	if err != nil || n == len(b) || d.stdout.SetReadDeadline(time.Now().Add(gatherWait)) != nil {
		return n, err
	}
	for err == nil && n < len(b) {
		var k int
		k, err = d.stdout.Read(b[n:])
		n += k
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	if derr := d.stdout.SetReadDeadline(time.Time{}); err == nil {
		err = derr
	}
	return n, err
}

// Read returns what the program has written: it waits for the first
// bytes, then fills p with what else is already there, so that a frame is
// not cut where one of the reader's pieces happens to end.
func (d *programDecoder) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(d.cur) == 0 {
			var c chunk
			switch {
			case d.outErr != nil && n > 0:
				return n, nil
			case d.outErr != nil:
				return 0, d.finish()
			case n == 0:
				c = <-d.out
			default:
				select {
				case c = <-d.out:
				default:
					return n, nil
				}
			}
			d.take(c)
			continue
		}
		k := copy(p[n:], d.cur)
		n += k
		d.cur = d.cur[k:]
		if len(d.cur) == 0 {
			d.outFree <- d.curBuf
			d.cur, d.curBuf = nil, nil
		}
	}
	return n, nil
}

// take makes c the output to return next.
func (d *programDecoder) take(c chunk) {
	if len(c.b) > 0 {
		d.cur, d.curBuf = c.b, c.b[:cap(c.b)]
	} else {
		d.outFree <- c.b[:cap(c.b)]
	}
	d.outErr = c.err
}

// finish returns what ends the output, once the program has closed it.
func (d *programDecoder) finish() error {
	if d.err != nil {
		return d.err
	}
	d.wait()
	// A program that exited at the end of its input did so after the
	// feeder closed it, and so after fed was closed.
	var inErr error
	fedAll := false
	select {
	case <-d.fed:
		inErr, fedAll = d.inErr, errors.Is(d.inErr, io.EOF)
	default:
	}
	var exit *exec.ExitError
	switch {
	case !errors.Is(d.outErr, io.EOF):
		d.err = fmt.Errorf("reading %s's output: %w", d.prog.name, d.outErr)
	case inErr != nil && !fedAll:
		d.err = inErr
	case d.waitErr == nil && fedAll:
		d.err = io.EOF
	case d.waitErr == nil:
		// It ended without reading all its input, which xz does not
		// do when it succeeds.
		d.err = &programError{name: d.prog.name, msg: "exited before the end of its input"}
	case errors.As(d.waitErr, &exit) && exit.Exited():
		msg := d.stderr.message(d.prog.name)
		if msg == "" {
			msg = exit.String()
		}
		e := &programError{name: d.prog.name, msg: msg}
		for _, s := range d.prog.truncated {
			e.truncated = e.truncated || strings.Contains(msg, s)
		}
		d.err = e
	default:
		d.err = &programError{name: d.prog.name, msg: d.waitErr.Error(), failed: true}
	}
	return d.err
}

func (d *programDecoder) wait() {
	if !d.waited {
		d.waitErr = d.cmd.Wait()
		d.waited = true
	}
}

// Close kills the program if it still runs, stops the feeder and waits for
// it, the program and the reader. Safe to call more than once.
func (d *programDecoder) Close() {
	if d.closed {
		return
	}
	d.closed = true
	close(d.quit)
	if !d.waited {
		_ = d.cmd.Process.Kill()
	}
	// The feeder may wait in a read of the connection, or in a write
	// to the program the kill ends; the reader in a read of its output.
	if d.interrupt != nil {
		d.interrupt()
	}
	_ = d.stdout.Close()
	d.wg.Wait()
	d.wait()
	if d.release != nil {
		d.release()
	}
}

// programError is a decoding program's failure: its message when it
// exited with a status other than 0.
type programError struct {
	name      string
	msg       string
	truncated bool // the message says the input ended inside a stream
	failed    bool // the program did not exit but was killed by a signal
}

func (e *programError) Error() string { return e.name + ": " + e.msg }

// Is makes a truncated stream's error [io.ErrUnexpectedEOF], as the Go
// decoders report one.
func (e *programError) Is(target error) bool { return e.truncated && target == io.ErrUnexpectedEOF }

// limitedBuffer keeps the first max bytes written to it and discards the
// rest. Safe for one writer and, after it is done, readers.
type limitedBuffer struct {
	max int
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// message returns the first line that a program named name wrote,
// without the "xz: (stdin): " it starts with.
func (b *limitedBuffer) message(name string) string {
	for line := range strings.Lines(b.buf.String()) {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, name+": ")
		line = strings.TrimPrefix(line, "(stdin): ")
		line = strings.TrimSuffix(line, ";")
		if line != "" {
			return line
		}
	}
	return ""
}
