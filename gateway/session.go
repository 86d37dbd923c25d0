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
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
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
	// decoders are the programs that may decode compressed input; nil
	// decodes it in Go.
	decoders  *decodePrograms
	frame     frameLimits
	publisher publisherConfig
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
	uploads  *uploadNames
	logger   *slog.Logger
	metrics  *sourceMetrics // see metrics.go

	stopped atomic.Bool // reads fail from now on (shutdown)
	// pub is the connection's publisher, started on its first line; nil
	// until then, so a connection that sends nothing holds none.
	pub atomic.Pointer[publisher]

	// Read side state. Read updates it on the goroutine that reads the
	// connection, which for a decoding program is the program's feeder
	// (decompress_program.go), not the session's; readMu guards it.
	readMu   sync.Mutex
	readAt   time.Time // when the latest read returned data
	fresh    bool      // readAt changed since receivedAt was formatted
	received int64     // bytes read from the connection
	readErr  error     // the connection's read error other than EOF, if any
	// receivedAt is the Jetline-Received-At value of the latest read,
	// formatted by stamp.
	receivedAt []string
	// toldTooLong is set once an oversize line was logged.
	toldTooLong bool
	// upload is the named upload the connection sends, from its header
	// line; the zero upload for an unnamed connection.
	upload upload
	// lost is set when the hold on the upload's name was lost.
	lost atomic.Bool
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
	s.logClosed(r, time.Since(start), werr)
}

// logClosed logs the end of the connection. It is apart from serve so that
// its many values do not widen serve's stack frame, which every idle
// connection keeps while it waits.
func (s *session) logClosed(r Receipt, took time.Duration, werr error) {
	attrs := []any{"status", r.Status, "lines", r.Lines, "bytes", r.Bytes, "compression", r.Compression,
		"bytes_decompressed", r.BytesDecompressed, "blank", r.Blank, "too_long", r.TooLong, "dead_lettered", r.DeadLettered,
		"duration", took.Round(time.Millisecond)}
	if r.Status != StatusOK {
		attrs = append(attrs, "resume_line", r.ResumeLine, "err", r.Error)
	}
	if werr != nil {
		attrs = append(attrs, "receipt_err", werr)
	}
	s.logger.Info("connection closed", attrs...)
}

// run reads, frames and publishes until the input ends or the session must
// stop, waits for the acknowledgements it can, and returns the receipt:
// accept (acceptor.go) → decompress (decompress.go) → frame lines
// (framer.go) → build frames (frame.go) → publish (publisher.go) →
// receipt (receipt.go).
//
// Until the sender's first bytes arrive, a connection holds only the sniff
// buffer: the framer takes its buffers from a pool while data flows, and
// the publisher starts with the first line.
func (s *session) run(ctx context.Context) Receipt {
	stop := context.AfterFunc(ctx, s.stopReading)
	defer stop()

	// Sniff the compression through a buffer, so the bytes looked at are
	// read again by the decoder or, for plain input, the framer.
	br := bufio.NewReaderSize(s, sniffBuffer)
	compression := sniff(br)
	var input io.Reader = br
	if compression != CompressionNone {
		dec := newDecompressor(compression, br, s.cfg.maxDecompressed)
		dec.programs, dec.interrupt = s.cfg.decoders, s.stopReading
		defer dec.Close()
		input = dec
		s.logger.Debug("compressed input", "compression", compression)
	}

	// Of an oversize line, keep no more than a line may have, so that its
	// dead letter fits the window and the server's payload limit as lines
	// do.
	fr := newFramer(input, s.cfg.readBuffer, s.cfg.maxLine, min(deadletter.TooLongKeep, s.cfg.maxLine))
	defer fr.close()
	// What every receipt says of the connection, as read so far.
	receipt := func() Receipt {
		s.readMu.Lock()
		defer s.readMu.Unlock()
		return Receipt{Bytes: s.received, Compression: compression, BytesDecompressed: fr.bytes,
			Blank: fr.blank, TooLong: fr.tooLong, Gateway: s.instance, Conn: s.id,
			Upload: s.upload.name, FirstLine: s.upload.first}
	}
	lease, refused := s.openUpload(ctx, fr)
	if refused != "" {
		r := receipt()
		r.Status, r.Error, r.ResumeLine = StatusError, refused, max(s.upload.first, 1)
		return r
	}
	if lease != nil {
		// Given back before the receipt is written, so that a sender
		// who resends at once is not refused.
		defer lease.release()
	}
	fb := frameBuilder{limits: s.cfg.frame}
	held, readErr := fb.pump(ctx, fr, s)
	stop()
	pub := s.pub.Load()
	pub.close()
	out := pub.outcome()

	r := receipt()
	r.Lines, r.DeadLettered = out.acked, out.deadLettered
	r.ResumeLine = fr.Line() + 1
	if held > 0 {
		r.ResumeLine = held
	}
	if out.firstPending > 0 {
		r.ResumeLine = out.firstPending
	}
	// A decoder may wrap the connection's own error beyond recognition;
	// that error, not the decoder's account of it, says what happened.
	s.readMu.Lock()
	if s.readErr != nil && !errors.Is(readErr, io.EOF) {
		readErr = s.readErr
	}
	s.readMu.Unlock()
	var derr *DecompressError
	switch {
	case out.failed != nil && out.failedDeadLetter:
		r.Status, r.Error = StatusError, fmt.Sprintf("storing the dead letter of line %d (too long) failed: %v", out.failedLine, out.failed)
	case out.failed != nil:
		r.Status, r.Error = StatusError, fmt.Sprintf("storing line %d failed: %v", out.failedLine, out.failed)
	case s.lost.Load() && !errors.Is(readErr, io.EOF):
		r.Status, r.Error = StatusError, "lost the hold on the upload's name (it could not be renewed for GATEWAY_UPLOAD_LEASE; another connection may send under it now): send again from resume_line once no other connection sends it"
	case errors.Is(readErr, io.EOF) && out.firstPending == 0:
		r.Status, r.ResumeLine = StatusOK, 0
	case ctx.Err() != nil:
		r.Status, r.Error = StatusShutdown, "gateway shutting down"
		if out.lastErr != nil && out.firstPending > 0 {
			r.Error += fmt.Sprintf("; line %d not stored: %v", out.firstPending, out.lastErr)
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

// openUpload reads the connection's first line. A header line ("#jetline
// upload=NAME [first_line=N]", see [isUploadHeader]) names the upload: it
// is neither counted nor published, the upload's name is held (see
// [uploadNames]) and the lines after it are numbered from first_line. Any
// other first line is given back to the framer as data. refused says why
// the connection must end at once: the header is not valid or the name is
// held by another connection.
func (s *session) openUpload(ctx context.Context, fr *framer) (lease *uploadLease, refused string) {
	u, named, err := readUploadHeader(fr)
	if err != nil {
		s.logger.Warn("upload header refused", "err", err)
		return nil, err.Error()
	}
	if !named {
		return nil, ""
	}
	s.upload = u
	s.logger = s.logger.With("upload", u.name)
	lease, err = s.uploads.hold(ctx, s.source, u, s.id, s.stopLost)
	if err != nil {
		s.logger.Warn("upload refused", "first_line", u.first, "err", err)
		return nil, err.Error()
	}
	s.logger.Info("named upload", "first_line", u.first)
	return lease, ""
}

// stopLost ends the connection when the hold on its upload's name is
// lost. Called from the lease's goroutine.
func (s *session) stopLost() {
	s.lost.Store(true)
	s.stopReading()
}

// publishFrame hands the frame e to the connection's publisher; see
// [frameSink].
func (s *session) publishFrame(ctx context.Context, e *entry) error {
	s.metrics.framed(e.lines)
	return s.publisher().publish(ctx, e)
}

// stamp returns the Jetline-Received-At value of the latest read; see
// [frameSink].
func (s *session) stamp() []string {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.fresh {
		s.receivedAt = []string{s.readAt.UTC().Format(time.RFC3339Nano)}
		s.fresh = false
	}
	return s.receivedAt
}

// publisher returns the connection's publisher, starting it on first use.
func (s *session) publisher() *publisher {
	if p := s.pub.Load(); p != nil {
		return p
	}
	conn := strconv.FormatUint(s.id, 10)
	ids := topology.ConnLineIDs(s.instance, conn)
	if s.upload.name != "" {
		ids = topology.UploadLineIDs(s.source, s.upload.name)
	}
	p := newPublisher(s.js, s.cfg.publisher, s.subject, ids, s.instance, conn, s.upload.name, s.logger)
	p.instrument(s.metrics)
	go p.run(s.cfg.abort)
	s.pub.Store(p)
	return p
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
	if err != nil && s.stopped.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		err = errStopped
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if n > 0 {
		s.readAt, s.fresh = time.Now(), true
		s.received += int64(n)
		s.metrics.read(n)
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
