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
// installed, the bound reached, or the program failed to start.
func (ps *decodePrograms) start(format string, src io.Reader) *programDecoder {
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
	d, err := startProgram(prog, path, src)
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

// quietWait is how long Read waits for output after a read from the
// connection that did not fill the buffer (the sender is slower than the
// decoder, or has paused), before it reads the connection again. See
// [programDecoder].
const quietWait = 50 * time.Millisecond

// programDecoder is a decoding program run on one connection's stream.
// It is an io.Reader of the decoded bytes for the [decompressor], which
// enforces the size limit on them.
//
// The connection (src) is read only on the goroutine that calls Read, and
// only inside Read: the session counts its reads and stamps their time in
// fields its own loop reads between Reads, so another goroutine reading
// it would race with that loop. Two goroutines of the decoder's own move
// the bytes: one writes what Read read from the connection into the
// program's standard input, the other reads its standard output. Read
// returns decoded bytes as soon as there are some, and reads the
// connection when there are none; since it cannot wait for both at once,
// after a short read from the connection it first waits up to
// [quietWait] for the program to decode what it was given, so that a
// sender that pauses gets its lines decoded and published, not held until
// it sends again. (xz itself reads its input in pieces of 8 KiB and waits
// for a whole one, so the last 8 KiB or less before a pause wait for more
// input, the end of it, or the idle timeout, which all decode them.)
//
// When the connection's input ends, the program's standard input is
// closed and Read returns what it still decodes. Then Read returns
// io.EOF if the program exited with status 0; the connection's own error
// if reading it failed (an idle timeout, a shutdown); else a
// [*programError] with the program's message.
//
// Close kills the program if it still runs, waits for it and both
// goroutines, and frees its slot. A programDecoder is not safe for
// concurrent use, and Read must not be called after Close.
type programDecoder struct {
	prog    *decodeProgram
	cmd     *exec.Cmd
	src     io.Reader
	stdin   *os.File
	stdout  *os.File
	stderr  *limitedBuffer
	release func()

	in      chan []byte // to the writer; closed when the input ends
	inFree  chan []byte // the writer's buffers back
	out     chan chunk  // from the reader
	outFree chan []byte // the reader's buffers back
	quit    chan struct{}
	wg      sync.WaitGroup
	timer   *time.Timer

	pending  []byte // read from src, not yet with the writer
	quiet    bool   // the last read from src did not fill its buffer
	inErr    error  // src's error; io.EOF at its end
	inClosed bool   // in is closed
	cur      []byte // decoded bytes not yet returned
	curBuf   []byte // cur's buffer, to give back to the reader
	outErr   error  // the reader's error; io.EOF when the program closed its output
	err      error  // what Read returns from now on
	waited   bool   // cmd.Wait returned
	waitErr  error
	closed   bool
}

// chunk is one read from the program's standard output.
type chunk struct {
	b   []byte
	err error
}

func startProgram(prog *decodeProgram, path string, src io.Reader) (*programDecoder, error) {
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
		prog: prog, src: src, stdin: inW, stdout: outR, stderr: &limitedBuffer{max: 4 << 10},
		in: make(chan []byte), inFree: make(chan []byte, 2), out: make(chan chunk), outFree: make(chan []byte, 2),
		quit: make(chan struct{}),
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
		d.inFree <- make([]byte, programInBuffer)
		d.outFree <- make([]byte, programOutBuffer)
	}
	d.wg.Add(2)
	go d.write()
	go d.read()
	return d, nil
}

// write feeds the program what Read hands over, and closes its standard
// input when in is closed. Should the program stop reading (it exited),
// the write fails and the writer ends; the program's exit says why.
func (d *programDecoder) write() {
	defer d.wg.Done()
	defer d.stdin.Close()
	for {
		select {
		case b, ok := <-d.in:
			if !ok {
				return
			}
			if _, err := d.stdin.Write(b); err != nil {
				return
			}
			select {
			case d.inFree <- b:
			case <-d.quit:
				return
			}
		case <-d.quit:
			return
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
		n, err := d.stdout.Read(b)
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

func (d *programDecoder) Read(p []byte) (int, error) {
	for {
		if len(d.cur) > 0 {
			n := copy(p, d.cur)
			d.cur = d.cur[n:]
			if len(d.cur) == 0 {
				d.outFree <- d.curBuf
				d.cur, d.curBuf = nil, nil
			}
			return n, nil
		}
		if d.outErr != nil {
			return 0, d.finish()
		}
		switch {
		case d.pending != nil:
			select {
			case d.in <- d.pending:
				d.pending = nil
				if d.inErr != nil {
					d.closeInput()
				}
			case c := <-d.out:
				d.take(c)
			}
		case d.inClosed:
			d.take(<-d.out)
		case d.poll():
		default:
			var b []byte
			select {
			case b = <-d.inFree:
			case c := <-d.out:
				d.take(c)
				continue
			}
			n, err := d.src.Read(b[:cap(b)])
			d.quiet = n < cap(b)
			if n > 0 {
				d.pending = b[:n]
			} else {
				d.inFree <- b
			}
			if err != nil {
				d.inErr = err
				if d.pending == nil {
					d.closeInput()
				}
			}
		}
	}
}

// poll takes output if there is some, waiting up to [quietWait] for it
// after a short read from the connection, and reports whether it took
// any.
func (d *programDecoder) poll() bool {
	select {
	case c := <-d.out:
		d.take(c)
		return true
	default:
	}
	if !d.quiet {
		return false
	}
	if d.timer == nil {
		d.timer = time.NewTimer(quietWait)
	} else {
		d.timer.Reset(quietWait)
	}
	select {
	case c := <-d.out:
		d.timer.Stop()
		d.take(c)
		return true
	case <-d.timer.C:
		d.quiet = false
		return false
	}
}

func (d *programDecoder) take(c chunk) {
	if len(c.b) > 0 {
		d.cur, d.curBuf = c.b, c.b[:cap(c.b)]
	} else {
		d.outFree <- c.b[:cap(c.b)]
	}
	if c.err != nil {
		d.outErr = c.err
	}
}

func (d *programDecoder) closeInput() {
	close(d.in)
	d.inClosed = true
}

// finish returns what ends the output, once the program has closed it.
func (d *programDecoder) finish() error {
	if d.err != nil {
		return d.err
	}
	d.wait()
	var exit *exec.ExitError
	switch {
	case !errors.Is(d.outErr, io.EOF):
		d.err = fmt.Errorf("reading %s's output: %w", d.prog.name, d.outErr)
	case d.inErr != nil && !errors.Is(d.inErr, io.EOF):
		d.err = d.inErr
	case d.waitErr == nil && d.inClosed:
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

// Close kills the program if it still runs and waits for it and the
// decoder's goroutines. Safe to call more than once.
func (d *programDecoder) Close() {
	if d.closed {
		return
	}
	d.closed = true
	close(d.quit)
	if !d.waited {
		_ = d.cmd.Process.Kill()
	}
	// Unblock the goroutines even if the program were to hold on.
	_ = d.stdout.Close()
	d.wg.Wait()
	_ = d.stdin.Close()
	d.wait()
	if d.timer != nil {
		d.timer.Stop()
	}
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
