package gateway

import (
	"bytes"
	"io"
	"sync"
)

// maxEmptyReads is how many reads in a row may return no data and no error
// before the framer gives up with [io.ErrNoProgress], as bufio does.
const maxEmptyReads = 100

// waitRead is the size of the read a framer with nothing buffered waits in.
// Idle connections spend their life in that read, so it is small; a line
// that arrives alone and fits is still read in one go.
const waitRead = 512

// Framer buffers are pooled, so that only connections with data to frame
// hold one. readBuffers holds buffers of the read buffer size, longBuffers
// those grown for long lines, kept apart so an ordinary connection never
// takes (and pins) a buffer sized for the longest line. Both hold *[]byte;
// sync.Pool lets unused buffers go at the next collections.
var readBuffers, longBuffers sync.Pool

// framer splits a byte stream into records, one per line.
//
// A line ends with "\n" or "\r\n"; the ending is not part of the line. A
// final line without a newline at EOF is a line too (a trailing "\r" is
// dropped there as well, as bufio.ScanLines does). Empty lines are skipped
// and counted as blank. A line longer than maxLine is counted as too long
// and returned as its first keep bytes with its full length; the rest of
// it is discarded up to its newline, however long it is, and framing
// carries on. Every physical line, blank and oversize ones included, gets
// the next 1-based line number.
//
// The framer keeps a shadow buffer over the reader: a partial line waits in
// it for its newline over as many reads as it takes, and records are
// returned as slices of it, valid until the next call to Next. The buffer
// starts at the read buffer size and grows only while a single line needs
// it, up to maxLine+2 bytes (the longest record plus "\r\n"). Bytes past
// that belong to an oversize line and are discarded as they arrive, except
// the first keep. When every byte read has been framed, the buffer goes
// back to a pool and the framer waits for more in a read of [waitRead]
// bytes, so an idle connection holds no buffer. [framer.close] gives the
// buffer back for good.
//
// A framer is not safe for concurrent use.
type framer struct {
	r          io.Reader
	readBuffer int
	maxLine    int
	keep       int
	buf        []byte  // nil while waiting with nothing buffered
	bufp       *[]byte // buf's pool entry
	start, end int     // buf[start:end] is read but not yet framed
	err        error
	wait       [waitRead]byte

	skipping bool   // inside an oversize line, discarding to its newline
	skipped  int64  // bytes of the oversize line discarded so far
	last     byte   // the last byte discarded
	kept     []byte // the oversize line's first keep bytes

	// again makes Next return rec, tooLong once more (see unread).
	again     bool
	againRec  []byte
	againLong int64

	line    int64 // physical lines completed
	blank   int64
	tooLong int64
	bytes   int64
}

// newFramer returns a framer reading r in reads of up to readBuffer bytes
// that keeps the first keep bytes of lines over maxLine.
func newFramer(r io.Reader, readBuffer, maxLine, keep int) *framer {
	return &framer{r: r, readBuffer: max(readBuffer, 1), maxLine: max(maxLine, 1), keep: max(keep, 0)}
}

// Next returns the next line that is not blank. For a record, tooLong is 0.
// For a line over maxLine, rec is its first keep bytes and tooLong its full
// length without the line ending. rec is valid until the next call. At the
// end of the input Next returns the reader's error: [io.EOF] after a clean
// end, anything else after a failed read, in which case a partial line left
// in the buffer is not returned and not counted.
func (f *framer) Next() (rec []byte, tooLong int64, err error) {
	if f.again {
		f.again = false
		return f.againRec, f.againLong, nil
	}
	for {
		if f.start < f.end {
			data := f.buf[f.start:f.end]
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				f.start += i + 1
				f.line++
				if f.skipping {
					if i > 0 {
						f.last = data[i-1]
					}
					f.keepSome(data[:i])
					rec, tooLong := f.skippedLine(f.skipped + int64(i))
					return rec, tooLong, nil
				}
				if rec, tooLong, ok := f.record(data[:i]); ok {
					return rec, tooLong, nil
				}
				continue
			}
			// No newline yet. A line that already has maxLine+2 bytes
			// cannot fit even with "\r\n" to come: start discarding it.
			switch {
			case f.skipping:
			case len(data) >= f.maxLine+2:
				f.skipping, f.skipped, f.kept = true, 0, f.kept[:0]
			default:
				data = nil
			}
			if data != nil {
				f.keepSome(data)
				f.skipped += int64(len(data))
				f.last = data[len(data)-1]
				f.start, f.end = 0, 0
			}
		}
		if f.err != nil {
			return f.finish()
		}
		f.fill()
	}
}

// record classifies one complete line p (without its "\n"): a record, an
// oversize line (its first keep bytes and length), or blank (not ok).
func (f *framer) record(p []byte) (rec []byte, tooLong int64, ok bool) {
	if n := len(p); n > 0 && p[n-1] == '\r' {
		p = p[:n-1]
	}
	switch {
	case len(p) == 0:
		f.blank++
		return nil, 0, false
	case len(p) > f.maxLine:
		f.tooLong++
		return p[:min(len(p), f.keep)], int64(len(p)), true
	}
	return p, 0, true
}

// keepSome adds what is missing of the first keep bytes of the line being
// skipped from p, its next bytes.
func (f *framer) keepSome(p []byte) {
	if room := f.keep - len(f.kept); room > 0 && len(p) > 0 {
		if f.kept == nil {
			f.kept = make([]byte, 0, f.keep)
		}
		f.kept = append(f.kept, p[:min(room, len(p))]...)
	}
}

// skippedLine ends the oversize line being skipped, of length bytes before
// its "\n", and returns what is kept of it and its length without "\r".
func (f *framer) skippedLine(length int64) ([]byte, int64) {
	f.skipping = false
	f.tooLong++
	if f.last == '\r' {
		length--
	}
	return f.kept[:min(int64(len(f.kept)), length)], length
}

// finish handles the end of the input: at EOF the bytes after the last
// newline form one more line.
func (f *framer) finish() ([]byte, int64, error) {
	if f.err != io.EOF {
		return nil, 0, f.err
	}
	switch {
	case f.skipping:
		f.line++
		rec, tooLong := f.skippedLine(f.skipped)
		return rec, tooLong, nil
	case f.start < f.end:
		data := f.buf[f.start:f.end]
		f.start = f.end
		f.line++
		if rec, tooLong, ok := f.record(data); ok {
			return rec, tooLong, nil
		}
	}
	return nil, 0, io.EOF
}

// fill reads once more into the buffer, after moving the partial line to
// its front and, if that line fills the buffer, growing it. With nothing
// buffered it gives the buffer back and waits in a small read first.
func (f *framer) fill() {
	if f.start == f.end {
		f.start, f.end = 0, 0
		if !f.skipping {
			f.waitForData()
			return
		}
	}
	if f.buf == nil {
		f.take(&readBuffers, f.readBuffer)
	}
	if f.start > 0 {
		f.end = copy(f.buf, f.buf[f.start:f.end])
		f.start = 0
	}
	if f.end == len(f.buf) {
		// Next starts skipping at maxLine+2 bytes, so a full buffer here
		// is smaller than that.
		old, oldp := f.buf, f.bufp
		f.take(&longBuffers, min(2*len(f.buf), f.maxLine+2))
		copy(f.buf, old[:f.end])
		f.put(old, oldp)
	}
	f.read(f.buf[f.end:])
}

// waitForData reads into the small wait buffer with the framer's buffer
// given back, and moves what arrives into a buffer taken again.
func (f *framer) waitForData() {
	f.release()
	n := f.read(f.wait[:min(waitRead, f.readBuffer)])
	if n > 0 {
		f.take(&readBuffers, f.readBuffer)
		f.end = copy(f.buf, f.wait[:n])
	}
}

// read reads into p until it gets data or an error, counting the bytes.
func (f *framer) read(p []byte) int {
	for range maxEmptyReads {
		n, err := f.r.Read(p)
		if n < 0 || n > len(p) {
			panic("gateway: reader returned an invalid count")
		}
		f.end += n
		f.bytes += int64(n)
		if err != nil {
			f.err = err
			return n
		}
		if n > 0 {
			return n
		}
	}
	f.err = io.ErrNoProgress
	return 0
}

// take sets the buffer to one of at least size bytes from pool. A buffer
// from longBuffers is used whole, up to maxLine+2 bytes.
func (f *framer) take(pool *sync.Pool, size int) {
	bp, _ := pool.Get().(*[]byte)
	if bp == nil || cap(*bp) < size {
		if bp != nil {
			pool.Put(bp) // fits another framer's settings
		}
		b := make([]byte, size)
		bp = &b
	}
	n := size
	if pool == &longBuffers {
		n = min(cap(*bp), f.maxLine+2)
	}
	f.buf, f.bufp = (*bp)[:n], bp
}

// put gives buf, whose pool entry is bp, back to the pool it belongs in.
func (f *framer) put(buf []byte, bp *[]byte) {
	if bp == nil {
		return
	}
	*bp = buf[:cap(buf)]
	if len(buf) > f.readBuffer {
		longBuffers.Put(bp)
	} else {
		readBuffers.Put(bp)
	}
}

// release gives the buffer back; the framer must hold nothing unframed.
func (f *framer) release() {
	f.put(f.buf, f.bufp)
	f.buf, f.bufp = nil, nil
}

// close gives the framer's buffers back once it is no longer used. Records
// returned by Next are invalid from then on.
func (f *framer) close() {
	f.release()
	f.kept = nil
}

// unread makes the next call to Next return rec and tooLong, the line Next
// has just returned, again, with the same number: the session looks at a
// connection's first line for a header and gives it back when it is data.
// The buffer is untouched until then, so rec stays valid.
func (f *framer) unread(rec []byte, tooLong int64) {
	f.again, f.againRec, f.againLong = true, rec, tooLong
}

// renumber makes the next line line number next: a named upload's lines
// count from its first_line, after its header line.
func (f *framer) renumber(next int64) { f.line = next - 1 }

// ready reports whether Next would return without reading: the bytes
// already read hold another line that is not blank, or the input has
// ended. A frame is closed when it is not, so that a line that arrived
// alone is published at once instead of waiting for the next read.
func (f *framer) ready() bool {
	if f.err != nil || f.again {
		return true
	}
	data := f.buf[f.start:f.end]
	if f.skipping {
		return bytes.IndexByte(data, '\n') >= 0
	}
	for {
		i := bytes.IndexByte(data, '\n')
		switch {
		case i < 0:
			return false
		case i == 0, i == 1 && data[0] == '\r':
			data = data[i+1:] // a blank line: Next skips it
		default:
			return true
		}
	}
}

// Line returns the number of physical lines framed so far; right after Next
// returns a line, that line's number.
func (f *framer) Line() int64 { return f.line }
