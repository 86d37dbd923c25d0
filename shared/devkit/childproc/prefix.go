package childproc

import (
	"bytes"
	"io"
)

// maxPartialLine is how much of an unterminated line a [PrefixWriter] holds
// before writing it out as a line of its own.
const maxPartialLine = 64 << 10

// PrefixWriter writes every line given to it to out with prefix in front
// and a newline behind, each line as one Write, so lines of different
// children never mix within a line. A trailing carriage return is dropped,
// so CRLF output does not garble the terminal. It holds back an
// unterminated line until its newline arrives, or 64 KiB have piled up (so
// a child that prints a huge line without a newline cannot grow its
// parent's memory without bound), or Flush is called.
//
// A PrefixWriter is not safe for concurrent use; a [Start] output function
// is its one writer.
type PrefixWriter struct {
	prefix []byte
	out    io.Writer
	buf    []byte // unterminated line
	line   []byte // scratch: prefix + line + newline
}

// NewPrefixWriter returns a PrefixWriter writing to out with prefix, such
// as "gateway | ", in front of each line.
func NewPrefixWriter(prefix string, out io.Writer) *PrefixWriter {
	return &PrefixWriter{prefix: []byte(prefix), out: out}
}

// Write splits p into lines and writes each complete one. It always consumes
// all of p; an error is the first one out returned.
func (w *PrefixWriter) Write(p []byte) (int, error) {
	n := len(p)
	var firstErr error
	keep := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			for len(w.buf) >= maxPartialLine {
				keep(w.emit(w.buf[:maxPartialLine]))
				w.buf = append(w.buf[:0], w.buf[maxPartialLine:]...)
			}
			break
		}
		if len(w.buf) > 0 {
			w.buf = append(w.buf, p[:i]...)
			keep(w.emit(w.buf))
			w.buf = w.buf[:0]
		} else {
			keep(w.emit(p[:i]))
		}
		p = p[i+1:]
	}
	return n, firstErr
}

// Flush writes a held-back unterminated line, ending it with a newline.
func (w *PrefixWriter) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.emit(w.buf)
	w.buf = w.buf[:0]
	return err
}

// emit writes prefix, line and a newline in one Write, without a trailing
// carriage return.
func (w *PrefixWriter) emit(line []byte) error {
	line = bytes.TrimSuffix(line, []byte("\r"))
	w.line = append(append(append(w.line[:0], w.prefix...), line...), '\n')
	_, err := w.out.Write(w.line)
	return err
}
