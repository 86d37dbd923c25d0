package gateway

import (
	"bytes"
	"io"
)

// maxEmptyReads is how many reads in a row may return no data and no error
// before the framer gives up with [io.ErrNoProgress], as bufio does.
const maxEmptyReads = 100

// framer splits a byte stream into records, one per line.
//
// A line ends with "\n" or "\r\n"; the ending is not part of the record. A
// final line without a newline at EOF is a record too (a trailing "\r" is
// dropped there as well, as bufio.ScanLines does). Empty lines are skipped
// and counted as blank. A line longer than maxLine is counted as too long,
// reported to onTooLong and skipped up to its newline, however long it is;
// framing then carries on. Every physical line, blank and oversize ones
// included, gets the next 1-based line number.
//
// The framer keeps a shadow buffer over the reader: a partial line waits in
// it for its newline over as many reads as it takes, and records are
// returned as slices of it, valid until the next call to Next. The buffer
// starts at the read buffer size and grows only while a single line needs
// it, up to maxLine+2 bytes (the longest record plus "\r\n"). Bytes past
// that belong to an oversize line and are discarded as they arrive.
//
// A framer is not safe for concurrent use.
type framer struct {
	r          io.Reader
	readBuffer int
	maxLine    int
	buf        []byte
	start, end int // buf[start:end] is read but not yet framed
	err        error

	skipping bool  // inside an oversize line, discarding to its newline
	skipped  int64 // bytes of the oversize line discarded so far

	line    int64 // physical lines completed
	blank   int64
	tooLong int64
	bytes   int64

	// onTooLong, if set, is called for each oversize line with its line
	// number and its length in bytes before the "\n".
	onTooLong func(line, length int64)
}

func newFramer(r io.Reader, readBuffer, maxLine int) *framer {
	return &framer{r: r, readBuffer: max(readBuffer, 1), maxLine: max(maxLine, 1)}
}

// Next returns the next record. The slice is valid until the next call. At
// the end of the input Next returns the reader's error: [io.EOF] after a
// clean end, anything else after a failed read, in which case a partial
// line left in the buffer is not returned and not counted.
func (f *framer) Next() ([]byte, error) {
	for {
		if f.start < f.end {
			data := f.buf[f.start:f.end]
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				f.start += i + 1
				f.line++
				if f.skipping {
					f.skipping = false
					f.oversize(f.skipped + int64(i))
					continue
				}
				if rec, ok := f.record(data[:i]); ok {
					return rec, nil
				}
				continue
			}
			// No newline yet. A line that already has maxLine+2 bytes
			// cannot fit even with "\r\n" to come: start discarding it.
			switch {
			case f.skipping:
				f.skipped += int64(len(data))
				f.start, f.end = 0, 0
			case len(data) >= f.maxLine+2:
				f.skipping = true
				f.skipped = int64(len(data))
				f.start, f.end = 0, 0
			}
		}
		if f.err != nil {
			return f.finish()
		}
		f.fill()
	}
}

// record classifies one complete line p (without its "\n") and reports
// whether it is a record.
func (f *framer) record(p []byte) ([]byte, bool) {
	raw := len(p)
	if raw > 0 && p[raw-1] == '\r' {
		p = p[:raw-1]
	}
	switch {
	case len(p) == 0:
		f.blank++
		return nil, false
	case len(p) > f.maxLine:
		f.oversize(int64(raw))
		return nil, false
	}
	return p, true
}

func (f *framer) oversize(length int64) {
	f.tooLong++
	if f.onTooLong != nil {
		f.onTooLong(f.line, length)
	}
}

// finish handles the end of the input: at EOF the bytes after the last
// newline form one more line.
func (f *framer) finish() ([]byte, error) {
	if f.err != io.EOF {
		return nil, f.err
	}
	switch {
	case f.skipping:
		f.skipping = false
		f.line++
		f.oversize(f.skipped)
	case f.start < f.end:
		data := f.buf[f.start:f.end]
		f.start = f.end
		f.line++
		if rec, ok := f.record(data); ok {
			return rec, nil
		}
	}
	return nil, io.EOF
}

// fill reads once more into the buffer, after moving the partial line to
// its front and, if that line fills the buffer, growing it.
func (f *framer) fill() {
	if f.buf == nil {
		f.buf = make([]byte, f.readBuffer)
	}
	if f.start > 0 {
		f.end = copy(f.buf, f.buf[f.start:f.end])
		f.start = 0
	}
	if f.end == len(f.buf) {
		// Next starts skipping at maxLine+2 bytes, so a full buffer here
		// is smaller than that.
		nb := make([]byte, min(2*len(f.buf), f.maxLine+2))
		copy(nb, f.buf[:f.end])
		f.buf = nb
	}
	for range maxEmptyReads {
		n, err := f.r.Read(f.buf[f.end:])
		if n < 0 || n > len(f.buf)-f.end {
			panic("gateway: reader returned an invalid count")
		}
		f.end += n
		f.bytes += int64(n)
		if err != nil {
			f.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	f.err = io.ErrNoProgress
}

// Line returns the number of physical lines framed so far; right after Next
// returns a record, that record's line number.
func (f *framer) Line() int64 { return f.line }
