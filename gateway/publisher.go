package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/jetline/jetline/shared/contract/topology"
)

// JetStream error codes the publisher tells apart. nats.go names only some
// of them; the values are nats-server's (jetstream_errors_generated.go).
const (
	// jsErrStoreFailed is JSStreamStoreFailedF: the stream refused to store
	// a message. With DiscardNew its description is "maximum bytes
	// exceeded" (or messages) when the stream is full.
	jsErrStoreFailed jetstream.ErrorCode = 10077
	// jsErrInsufficientResources is JSInsufficientResourcesErr: the server
	// is out of JetStream storage or memory.
	jsErrInsufficientResources jetstream.ErrorCode = 10023
)

// Retry timing for publishes that failed or timed out.
const (
	retryMin = 50 * time.Millisecond
	retryMax = time.Second
	// retryLogEvery limits retry warnings to one per this period per
	// connection, so a full stream does not flood the log.
	retryLogEvery = 5 * time.Second
)

// errAborted is returned by waits cut short by the shutdown deadline.
var errAborted = errors.New("gave up waiting for acknowledgements at the shutdown deadline")

// failure classifies a failed publish.
type failure int

const (
	// failTransient is worth retrying: a timeout, a lost connection, a
	// leader election.
	failTransient failure = iota
	// failFull is backpressure: the stream is full (DiscardNew) or the
	// client's async publish limit is reached. Retried quietly; the sender
	// waits until workers make room.
	failFull
	// failPermanent cannot succeed by retrying: the line is too large for
	// the stream or the NATS connection is closed.
	failPermanent
)

func classify(err error) failure {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrStoreFailed:
			if strings.Contains(apiErr.Description, "too large") {
				return failPermanent
			}
			return failFull
		case jsErrInsufficientResources:
			return failFull
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return failPermanent
		}
		return failTransient
	}
	switch {
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs), errors.Is(err, nats.ErrReconnectBufExceeded):
		return failFull
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrHeadersNotSupported), errors.Is(err, nats.ErrInvalidConnection):
		return failPermanent
	}
	return failTransient
}

// entry is one frame on its way to JetStream (or the dead letter of an
// oversize line). Entries are recycled through entryPool once their
// publish is resolved, payload buffer and headers included, so the steady
// state allocates little per frame.
type entry struct {
	msg  nats.Msg
	data []byte
	vals []string // backing for the per-frame header values

	line  int64 // the first line's number
	lines int64 // how many lines the frame holds
	size  int64
	// receivedAt is the Jetline-Received-At value (shared; not modified).
	receivedAt []string
	// deadLetter marks the dead-letter entry of an oversize line: it is
	// counted apart and not pooled (its message is built whole).
	deadLetter bool
	sent       time.Time // first published, for the latency metric

	paf   jetstream.PubAckFuture // nil if the publish call itself failed
	err   error                  // known failure of the latest attempt
	acked bool
}

// maxPooledPayload is the largest payload buffer kept for reuse; a rare
// long line should not pin its buffer in the pool.
const maxPooledPayload = 1 << 20

var entryPool = sync.Pool{New: func() any {
	e := &entry{vals: make([]string, 3)}
	e.msg.Header = make(nats.Header, 6)
	e.msg.Header[topology.HeaderMsgID] = e.vals[0:1:1]
	e.msg.Header[topology.HeaderLine] = e.vals[1:2:2]
	e.msg.Header[topology.HeaderLines] = e.vals[2:3:3]
	return e
}}

func putEntry(e *entry) {
	e.paf, e.err, e.acked, e.receivedAt = nil, nil, false, nil
	if cap(e.data) > maxPooledPayload {
		e.data = nil
	}
	e.msg.Data = nil
	entryPool.Put(e)
}

// window is a connection's in-flight window: the frames published and not
// yet acknowledged, oldest first, bounded by their lines and their payload
// bytes. The session reserves room before publishing (blocking while the
// window is full) and pushes; the ack loop takes entries from the front. One
// goroutine reserves and pushes, one takes; the mutex makes the two safe
// together.
//
// A reader blocked on a full window is woken only once the window has
// drained to three quarters, so that it then publishes a batch instead of
// trading one wake-up per line with the ack loop.
type window struct {
	maxLines int64
	maxBytes int64
	// total is the gateway-wide byte budget shared by every window, so that
	// many connections together stay within a bound too. Each line holds
	// its size from reserve until pop, or until the session ends.
	total    *semaphore.Weighted
	lowLines int64
	lowBytes int64

	mu           sync.Mutex
	queue        []*entry
	lines        int64 // reserved, including queued
	bytes        int64
	closed       bool
	failed       error // set when the ack loop stops for good
	roomWaiting  bool
	itemsWaiting bool
	room         chan struct{}
	items        chan struct{}
	wait         waitClock // times waits for room; see metrics.go
}

func newWindow(maxLines int, maxBytes int64, total *semaphore.Weighted) *window {
	return &window{
		maxLines: int64(maxLines), maxBytes: maxBytes, total: total,
		lowLines: int64(maxLines) * 3 / 4, lowBytes: maxBytes * 3 / 4,
		room: make(chan struct{}, 1), items: make(chan struct{}, 1),
	}
}

// reserve blocks until the window has room for a frame of lines lines and
// n bytes, ctx is done or the window has failed. A frame larger than the
// whole budget gets in alone.
func (w *window) reserve(ctx context.Context, lines, n int64) error {
	defer w.wait.stop()
	for {
		w.mu.Lock()
		if w.failed != nil {
			err := w.failed
			w.mu.Unlock()
			return err
		}
		if w.lines == 0 || (w.lines+lines <= w.maxLines && w.bytes+n <= w.maxBytes) {
			w.lines += lines
			w.bytes += n
			w.mu.Unlock()
			return w.reserveTotal(ctx, lines, n)
		}
		w.roomWaiting = true
		w.mu.Unlock()
		w.wait.start()
		select {
		case <-w.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reserveTotal takes n bytes of the gateway-wide budget, undoing the
// window's own reservation if it cannot.
func (w *window) reserveTotal(ctx context.Context, lines, n int64) error {
	if w.total == nil || w.total.TryAcquire(n) {
		return nil
	}
	w.wait.start()
	if err := w.total.Acquire(ctx, n); err != nil {
		w.mu.Lock()
		w.lines -= lines
		w.bytes -= n
		w.mu.Unlock()
		return err
	}
	return nil
}

// fail makes reserve return err from now on, waking a waiting reserve.
func (w *window) fail(err error) {
	w.mu.Lock()
	w.failed = err
	w.wakeRoomLocked()
	w.mu.Unlock()
}

func (w *window) push(e *entry) {
	w.mu.Lock()
	w.queue = append(w.queue, e)
	if w.itemsWaiting {
		w.itemsWaiting = false
		select {
		case w.items <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}

// close tells the ack loop no more entries will come.
func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	select {
	case w.items <- struct{}{}:
	default:
	}
	w.mu.Unlock()
}

// front returns the oldest entry, waiting for one. It returns false once the
// window is closed and empty, or when abort is closed.
func (w *window) front(abort <-chan struct{}) (*entry, bool) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			e := w.queue[0]
			w.mu.Unlock()
			return e, true
		}
		if w.closed {
			w.mu.Unlock()
			return nil, false
		}
		w.itemsWaiting = true
		w.mu.Unlock()
		select {
		case <-w.items:
		case <-abort:
			return nil, false
		}
	}
}

// pop removes the oldest entry and frees its room.
func (w *window) pop() *entry {
	w.mu.Lock()
	e := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	w.lines -= e.lines
	w.bytes -= e.size
	if w.total != nil {
		w.total.Release(e.size)
	}
	if w.lines == 0 || (w.lines <= w.lowLines && w.bytes <= w.lowBytes) {
		w.wakeRoomLocked()
	}
	w.mu.Unlock()
	return e
}

func (w *window) wakeRoomLocked() {
	if w.roomWaiting {
		w.roomWaiting = false
		select {
		case w.room <- struct{}{}:
		default:
		}
	}
}

// releaseTotal gives the gateway-wide budget held by the entries still
// queued back, once the session is over and will not wait for them.
func (w *window) releaseTotal() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.total != nil && w.bytes > 0 {
		w.total.Release(w.bytes)
		w.bytes = 0
	}
}

// snapshot returns the queued entries, oldest first.
func (w *window) snapshot() []*entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*entry(nil), w.queue...)
}

// publisherConfig is what a connection's publisher needs to know.
type publisherConfig struct {
	// inflightLines and inflightBytes bound the window.
	inflightLines int
	inflightBytes int64
	// total bounds the bytes in flight across all connections; nil means
	// no gateway-wide bound.
	total *semaphore.Weighted
}

// publisher publishes one connection's frames asynchronously and processes
// their acknowledgements in order in its own goroutine ([publisher.run]),
// retrying failed publishes with the same message id. publish is called by
// the session goroutine only.
//
// Why PublishMsgAsync and not fast-ingest batch publishing (orbit.go's
// jetstreamext, a stream with allow_batched): measured with
// `go test -run '^$' -bench 'BenchmarkPublishFrames$' -benchtime 2000x
// ./gateway/` against the fast publisher on this 2-core machine, twice,
// each the median of three, the fast publisher won only at 200 B messages
// (91k against 72k msg/s), the per-line case frames remove; at 4 KiB it
// was 1.02–1.21× and at 64–256 KiB frames 0.80–1.51×, the winner changing
// between runs (both 250–440 MiB/s). It also gives no PubAck per message
// (one per flow of up to 500), reports a full stream only to an error
// handler while later adds still return nil, allows 1,000 open batches
// per stream (the gateway holds up to 50,000 connections) and drops a
// batch idle for 10 s. A window of 16 frames already saturates; the byte
// bound (GATEWAY_INFLIGHT_BYTES) is the one that matters.
type publisher struct {
	js     jetstream.JetStream
	logger *slog.Logger
	win    *window

	subject string
	ids     topology.LineIDs
	gateway []string // shared header values, never modified
	conn    []string
	upload  []string // a named upload's name; nil for an unnamed connection
	scratch []byte

	done chan struct{} // closed when run returns

	// Owned by run until done is closed, then read by the session.
	acked        int64 // lines acknowledged
	deadLettered int64 // dead letters acknowledged
	lastErr      error // the last publish failure, for the receipt
	failed       error // a permanent failure that stopped the publisher
	failedEntry  *entry
	lastLog      time.Time
	quiet        int // retries not logged since lastLog

	metrics *sourceMetrics // see metrics.go
}

// newPublisher returns the publisher of the lines identified by ids, read
// by gateway instance on its connection conn, to subject; upload names the
// named upload they belong to, "" if none.
func newPublisher(js jetstream.JetStream, cfg publisherConfig, subject string, ids topology.LineIDs, instance, conn, upload string, logger *slog.Logger) *publisher {
	var up []string
	if upload != "" {
		up = []string{upload}
	}
	return &publisher{
		js:      js,
		logger:  logger,
		win:     newWindow(cfg.inflightLines, cfg.inflightBytes, cfg.total),
		subject: subject,
		ids:     ids,
		gateway: []string{instance},
		conn:    []string{conn},
		upload:  up,
		done:    make(chan struct{}),
	}
}

// publish sends the frame e, which it takes over (see [frameBuilder]). It
// blocks while the window is full. It fails only if ctx is done or the
// publisher has failed permanently (see [publisher.run]), and then gives e
// back; a failed publish is otherwise left to run to retry.
func (p *publisher) publish(ctx context.Context, e *entry) error {
	e.size = int64(len(e.data))
	if err := p.win.reserve(ctx, e.lines, e.size); err != nil {
		putEntry(e)
		return err
	}
	e.sent = time.Now()
	e.msg.Subject = p.subject
	e.msg.Data = e.data
	// One allocation for the message id and the first line's number,
	// which is its tail (before a named upload's "+<lines>").
	h := e.msg.Header
	if p.upload == nil {
		p.scratch = p.ids.Append(p.scratch[:0], e.line)
		delete(h, topology.HeaderUpload)
	} else {
		p.scratch = p.ids.AppendUploadFrame(p.scratch[:0], e.line, e.lines)
		h[topology.HeaderUpload] = p.upload
	}
	id := string(p.scratch)
	line, _, _ := strings.Cut(id[len(p.ids):], "+")
	e.vals[0], e.vals[1] = id, line
	e.vals[2] = strconv.FormatInt(e.lines, 10)
	h[topology.HeaderGateway] = p.gateway
	h[topology.HeaderConn] = p.conn
	h[topology.HeaderReceivedAt] = e.receivedAt
	e.paf, e.err = p.js.PublishMsgAsync(&e.msg)
	p.win.push(e)
	return nil
}

// publishDeadLetter sends m, the dead-letter entry of the oversize line
// numbered line, in the window with the lines, so it is acknowledged,
// retried and reported in the receipt like them. m is not modified or
// reused; its data must not change. It blocks and fails as publish does.
func (p *publisher) publishDeadLetter(ctx context.Context, m *nats.Msg, line int64) error {
	size := int64(len(m.Data))
	if err := p.win.reserve(ctx, 1, size); err != nil {
		return err
	}
	e := &entry{line: line, lines: 1, size: size, deadLetter: true}
	e.msg.Subject, e.msg.Header, e.msg.Data = m.Subject, m.Header, m.Data
	e.paf, e.err = p.js.PublishMsgAsync(&e.msg)
	p.win.push(e)
	return nil
}

// close tells run that no more lines will come; run returns once every
// queued line is acknowledged. A nil publisher (none started) has nothing
// to close.
func (p *publisher) close() {
	if p != nil {
		p.win.close()
	}
}

// run processes acknowledgements in publish order until the window is closed
// and drained, a publish fails permanently, or abort is closed. Failed and
// timed-out publishes are retried with backoff while the rest wait.
func (p *publisher) run(abort <-chan struct{}) {
	defer close(p.done)
	var delay time.Duration
	retrying := false
	for {
		e, ok := p.win.front(abort)
		if !ok {
			return
		}
		err := p.await(e, abort)
		if err == nil {
			p.win.pop()
			if e.deadLetter {
				p.deadLettered++
				p.metrics.deadLetterAcked()
			} else {
				p.acked += e.lines
				p.metrics.acked(e.lines, e.sent)
				putEntry(e)
			}
			delay = 0
			if retrying {
				// The head got through; the lines behind it that failed
				// meanwhile are sent again at once, not one by one.
				retrying = false
				p.resendFailed()
			}
			continue
		}
		if errors.Is(err, errAborted) {
			return
		}
		p.lastErr = err
		kind := classify(err)
		if kind == failPermanent {
			p.logger.Error("publish failed and cannot succeed by retrying; closing the connection", "line", e.line, "dead_letter", e.deadLetter, "err", err)
			p.failed, p.failedEntry = err, e
			p.win.fail(err)
			return
		}
		p.logRetry(kind, e, err)
		delay = min(max(2*delay, retryMin), retryMax)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-abort:
			t.Stop()
			return
		}
		retrying = true
		p.resend(e)
	}
}

// await waits for the result of e's latest publish attempt.
func (p *publisher) await(e *entry, abort <-chan struct{}) error {
	switch {
	case e.acked:
		return nil
	case e.err != nil:
		return e.err
	}
	select {
	case <-e.paf.Ok():
		e.acked = true
		return nil
	case err := <-e.paf.Err():
		e.err = err
		return err
	case <-abort:
		return errAborted
	}
}

// poll records e's result if it has arrived, without waiting.
func (p *publisher) poll(e *entry) {
	if e.acked || e.err != nil {
		return
	}
	select {
	case <-e.paf.Ok():
		e.acked = true
	case err := <-e.paf.Err():
		e.err = err
	default:
	}
}

// resend publishes e again with the same headers, so the message id lets
// JetStream drop it if an earlier attempt was stored after all.
func (p *publisher) resend(e *entry) {
	p.metrics.retry()
	e.acked = false
	e.paf, e.err = p.js.PublishMsgAsync(&e.msg)
}

func (p *publisher) resendFailed() {
	for _, e := range p.win.snapshot() {
		p.poll(e)
		if e.err != nil {
			p.resend(e)
		}
	}
}

func (p *publisher) logRetry(kind failure, e *entry, err error) {
	now := time.Now()
	if now.Sub(p.lastLog) < retryLogEvery {
		p.quiet++
		return
	}
	msg := "publish failed; retrying"
	if kind == failFull {
		msg = "stream full; holding the sender until workers make room"
	}
	p.logger.Warn(msg, "line", e.line, "subject", e.msg.Subject, "err", err, "retries_not_logged", p.quiet)
	p.lastLog, p.quiet = now, 0
}

// outcome is what a connection's publisher achieved, for the receipt.
type outcome struct {
	acked        int64 // lines stored
	deadLettered int64 // dead letters stored
	// firstPending is the first line of the oldest frame (or the oversize
	// line) not known to be stored, 0 if all are.
	firstPending int64
	// failed is the permanent failure that stopped the publisher, of the
	// line failedLine, or of its dead letter if failedDeadLetter.
	failed           error
	failedLine       int64
	failedDeadLetter bool
	lastErr          error // the last publish failure
}

// outcome waits for run to return and summarises the publisher. A nil
// publisher (none started) stored nothing and has nothing pending.
func (p *publisher) outcome() outcome {
	if p == nil {
		return outcome{}
	}
	<-p.done
	o := outcome{acked: p.acked, deadLettered: p.deadLettered, failed: p.failed, lastErr: p.lastErr}
	if e := p.failedEntry; e != nil {
		o.failedLine, o.failedDeadLetter = e.line, e.deadLetter
	}
	// Lines behind a stuck one may have been stored; count them so the
	// receipt matches the stream. Everything before firstPending is stored.
	for _, e := range p.win.snapshot() {
		if e.paf != nil {
			p.poll(e)
		}
		switch {
		case !e.acked:
			if o.firstPending == 0 {
				o.firstPending = e.line
			}
		case e.deadLetter:
			o.deadLettered++
		default:
			o.acked += e.lines
		}
	}
	p.win.releaseTotal()
	return o
}
