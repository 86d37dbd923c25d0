package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Receipt timing.
const (
	// receiptWriteTimeout bounds writing the receipt outside shutdown.
	receiptWriteTimeout = 5 * time.Second
	// lingerTimeout is how long, after a receipt sent before the sender
	// finished, the gateway keeps reading (and discarding) so that closing
	// with unread data does not reset the connection before the sender has
	// read its receipt. net/http does the same before closing.
	lingerTimeout = 500 * time.Millisecond
)

// errStopped is returned by reads after the gateway began shutting down.
var errStopped = errors.New("gateway shutting down")

// sessionConfig is what one connection's session needs.
type sessionConfig struct {
	maxLine     int
	readBuffer  int
	idleTimeout time.Duration
	// maxDecompressed bounds the decompressed size of a compressed
	// connection.
	maxDecompressed int64
	publisher       publisherConfig
	// abort is closed when the shutdown deadline leaves no more time to
	// wait for acknowledgements.
	abort <-chan struct{}
	// shutdownWrite bounds writing the receipt and lingering during
	// shutdown.
	shutdownWrite time.Duration
}

// session is one connection's life: read, frame, publish, wait for
// acknowledgements, write the receipt, close. It runs in one goroutine
// (plus its publisher's ack loop) and owns the connection.
type session struct {
	cfg      sessionConfig
	conn     net.Conn
	id       uint64
	source   string
	subject  string
	instance string
	js       jetstream.JetStream
	logger   *slog.Logger

	stopped atomic.Bool // reads fail from now on (shutdown)

	// Read side state, owned by the session goroutine.
	readAt   time.Time // when the latest read returned data
	fresh    bool      // readAt changed since stamp was formatted
	stamp    []string  // Jetline-Received-At value for lines of the latest read
	received int64     // bytes read from the connection
	readErr  error     // the connection's read error other than EOF, if any
}

// serve runs the session to its end and closes the connection. ctx is the
// gateway's: when it is done, the session stops reading, flushes what it
// has, and sends a "shutdown" receipt.
func (s *session) serve(ctx context.Context) {
	start := time.Now()
	r := s.run(ctx)
	timeout, linger := receiptWriteTimeout, lingerTimeout
	if ctx.Err() != nil {
		timeout, linger = s.cfg.shutdownWrite, min(linger, s.cfg.shutdownWrite)
	}
	werr := s.sendReceipt(r, timeout, linger)

	attrs := []any{"status", r.Status, "lines", r.Lines, "bytes", r.Bytes, "compression", r.Compression,
		"bytes_decompressed", r.BytesDecompressed, "blank", r.Blank, "too_long", r.TooLong,
		"duration", time.Since(start).Round(time.Millisecond)}
	if r.Status != StatusOK {
		attrs = append(attrs, "resume_line", r.ResumeLine, "err", r.Error)
	}
	if werr != nil {
		attrs = append(attrs, "receipt_err", werr)
	}
	s.logger.Info("connection closed", attrs...)
}

// run reads, frames and publishes until the input ends or the session must
// stop, waits for the acknowledgements it can, and returns the receipt.
func (s *session) run(ctx context.Context) Receipt {
	stop := context.AfterFunc(ctx, s.stopReading)
	defer stop()

	pub := newPublisher(s.js, s.cfg.publisher, s.subject, s.instance, strconv.FormatUint(s.id, 10), s.logger)
	go pub.run(s.cfg.abort)

	// Sniff the compression through a buffer, so the bytes looked at are
	// read again by the decoder or, for plain input, the framer.
	br := bufio.NewReaderSize(s, sniffBuffer)
	compression := sniff(br)
	var input io.Reader = br
	if compression != CompressionNone {
		dec := newDecompressor(compression, br, s.cfg.maxDecompressed)
		defer dec.Close()
		input = dec
		s.logger.Debug("compressed input", "compression", compression)
	}

	fr := newFramer(input, s.cfg.readBuffer, s.cfg.maxLine)
	fr.onTooLong = func(line, length int64) {
		s.logger.Warn("line too long; skipped", "line", line, "length", length, "max_line_bytes", s.cfg.maxLine)
	}
	var readErr error
	var held int64 // a record framed but not published
	for {
		rec, err := fr.Next()
		if err != nil {
			readErr = err
			break
		}
		if s.fresh {
			s.stamp = []string{s.readAt.UTC().Format(time.RFC3339Nano)}
			s.fresh = false
		}
		if err := pub.publish(ctx, rec, fr.Line(), s.stamp); err != nil {
			readErr, held = err, fr.Line()
			break
		}
	}
	stop()
	pub.close()
	acked, pending := pub.outcome()

	r := Receipt{Lines: acked, Bytes: s.received, Compression: compression, BytesDecompressed: fr.bytes,
		Blank: fr.blank, TooLong: fr.tooLong, Gateway: s.instance, Conn: s.id}
	r.ResumeLine = fr.Line() + 1
	if held > 0 {
		r.ResumeLine = held
	}
	if pending > 0 {
		r.ResumeLine = pending
	}
	// A decoder may wrap the connection's own error beyond recognition;
	// that error, not the decoder's account of it, says what happened.
	if s.readErr != nil && !errors.Is(readErr, io.EOF) {
		readErr = s.readErr
	}
	var derr *DecompressError
	switch {
	case pub.failed != nil:
		r.Status, r.Error = StatusError, fmt.Sprintf("storing line %d failed: %v", r.ResumeLine, pub.failed)
	case errors.Is(readErr, io.EOF) && pending == 0:
		r.Status, r.ResumeLine = StatusOK, 0
	case ctx.Err() != nil:
		r.Status, r.Error = StatusShutdown, "gateway shutting down"
		if pub.lastErr != nil && pending > 0 {
			r.Error += fmt.Sprintf("; line %d not stored: %v", pending, pub.lastErr)
		}
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		r.Status, r.Error = StatusIdleTimeout, fmt.Sprintf("nothing received for %s", s.cfg.idleTimeout)
	case errors.As(readErr, &derr):
		r.Status, r.Error = StatusError, derr.Error()
	default:
		r.Status, r.Error = StatusError, fmt.Sprintf("reading from connection: %v", readErr)
	}
	return r
}

// Read reads from the connection for the framer, extending the idle
// deadline before each read and noting when data arrived.
func (s *session) Read(p []byte) (int, error) {
	if s.stopped.Load() {
		return 0, errStopped
	}
	if err := s.conn.SetReadDeadline(time.Now().Add(s.cfg.idleTimeout)); err != nil {
		return 0, err
	}
	// stopReading may have set its deadline between the check above and
	// ours; check again so that ours does not hide it.
	if s.stopped.Load() {
		return 0, errStopped
	}
	n, err := s.conn.Read(p)
	if n > 0 {
		s.readAt, s.fresh = time.Now(), true
		s.received += int64(n)
	}
	if err != nil && s.stopped.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		err = errStopped
	}
	if err != nil && err != io.EOF {
		s.readErr = err
	}
	return n, err
}

// stopReading makes a blocked or future Read return at once. Safe to call
// from any goroutine.
func (s *session) stopReading() {
	s.stopped.Store(true)
	_ = s.conn.SetReadDeadline(time.Now())
}

// sendReceipt writes r and closes the connection. If the sender may still
// be sending (any status but ok), it first half-closes and discards input
// for up to linger, so the close does not reset the connection and destroy
// the receipt in flight.
func (s *session) sendReceipt(r Receipt, timeout, linger time.Duration) error {
	defer s.conn.Close()
	_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := s.conn.Write(r.line()); err != nil {
		return err
	}
	if r.Status == StatusOK {
		return nil
	}
	if hc, ok := s.conn.(interface{ CloseWrite() error }); ok {
		if err := hc.CloseWrite(); err != nil {
			return nil
		}
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(linger))
	_, _ = io.Copy(io.Discard, s.conn)
	return nil
}
