package worker

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// DeadLetterPublisher publishes dead letters to the INGEST_DLQ stream.
// jetstream.JetStream satisfies it. PublishMsgAsync is called from several
// goroutines at once; the worker waits on the returned futures and never
// closes the publisher.
type DeadLetterPublisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// errDeadLetterTimeout is why a dead letter whose PubAck did not come
// within Options.DeadLetterTimeout is given up on for this delivery.
var errDeadLetterTimeout = errors.New("no acknowledgement from the dead-letter stream in time")

// pendingDeadLetter is a dead letter published for one line of a batch and
// not yet settled.
type pendingDeadLetter struct {
	// i is the line's index in the batch's items.
	i int
	// reason, class and detail are what the entry says.
	reason, class, detail string
	// future is the publish's PubAck; err is set instead when publishing
	// failed outright.
	future jetstream.PubAckFuture
	err    error
}

// deadLetter publishes the dead letter of line i of b: the line's bytes
// and its frame's headers, with the line's own number (topology.HeaderLine)
// and without the frame's line count, plus why it is given up on and the
// line's identity (topology.HeaderLineID), which a replay carries back so
// the line keys the row it would have had. Its frame is not acknowledged
// until the dead letter is settled. It does not wait; settleDeadLetters
// does. The message id is "dlq.<ingest seq>" ("dlq.<ingest seq>.<k>" for
// line k of a frame of several), so a dead letter published again after a
// lost PubAck (the frame was handed back and the line failed again) is
// stored once.
func (w *Worker) deadLetter(b *batch, i int, reason, class, detail string) {
	it := &b.items[i]
	f := &b.frames[it.frame]
	m, line := f.msg, &it.line
	// Entry.Msg copies the headers, so m's own are not changed.
	header := nats.Header{}
	maps.Copy(header, m.Headers())
	if line.ID != "" {
		header[topology.HeaderLineID] = []string{line.ID}
	}
	if first, err := strconv.ParseInt(header.Get(topology.HeaderLine), 10, 64); err == nil && header.Get(topology.HeaderLines) != "" {
		header[topology.HeaderLine] = []string{strconv.FormatInt(first+int64(it.k), 10)}
	}
	delete(header, topology.HeaderLines)
	e := deadletter.Entry{
		Subject:    m.Subject(),
		Reason:     reason,
		Class:      class,
		Error:      detail,
		StreamSeq:  line.Seq,
		Deliveries: f.delivered,
		By:         w.opts.Instance,
		At:         time.Now(),
		Data:       line.Data,
		Header:     header,
	}
	var id string
	if line.Seq > 0 {
		id = "dlq." + strconv.FormatUint(line.Seq, 10)
		if f.lines > 1 || it.k > 0 {
			id += "." + strconv.Itoa(it.k)
		}
	}
	msg := e.Msg(id)
	if over := msgSize(msg) - w.maxPayload(); over > 0 {
		// The line fitted with its own headers, but the dead-letter ones
		// push it over the server's limit (a NOT NULL violation quotes the
		// whole row): keep less of the error, or the entry could never be
		// written.
		e.Error = shorten(msg.Header.Get(deadletter.HeaderError), over)
		msg = e.Msg(id)
	}
	d := pendingDeadLetter{i: i, reason: reason, class: class, detail: detail}
	d.future, d.err = w.opts.DeadLetters.PublishMsgAsync(msg)
	b.dead = append(b.dead, d)
	f.dead++
}

// maxPayload returns the largest message the NATS server takes, when the
// publisher tells (jetstream.JetStream does), and a very large number
// otherwise.
func (w *Worker) maxPayload() int {
	if p, ok := w.opts.DeadLetters.(interface{ Conn() *nats.Conn }); ok {
		if n := p.Conn().MaxPayload(); n > 0 {
			return int(n)
		}
	}
	return math.MaxInt
}

// msgSize is how many bytes of m count against the server's payload limit:
// its data and its encoded headers.
func msgSize(m *nats.Msg) int {
	n := len(m.Data) + len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// shorten cuts at least by bytes off msg, at a rune boundary, marking the
// cut with "…"; it returns "" when nothing would be left.
func shorten(msg string, by int) string {
	keep := len(msg) - by - len("…")
	if keep <= 0 {
		return ""
	}
	for keep > 0 && !utf8.RuneStart(msg[keep]) {
		keep--
	}
	return msg[:keep] + "…"
}

// settleDeadLetters waits, at most Options.DeadLetterTimeout in all, for
// the PubAcks of the batch's dead letters, then settles the frames that
// held those lines. A frame whose dead letters are all stored is
// terminated, with the reason, when every line of it was dead-lettered,
// and acknowledged otherwise. A frame with a dead letter that failed or
// timed out is negatively acknowledged with backoff, never acknowledged,
// so it comes back and its lines are stored or dead-lettered again
// (stored once, by their keys and message ids). Frames without dead
// letters are acknowledged before this runs, so a slow dead-letter stream
// delays only the next batch.
func (w *Worker) settleDeadLetters(ctx context.Context, logger *slog.Logger, b *batch) {
	if len(b.dead) == 0 {
		return
	}
	timer := time.NewTimer(w.opts.DeadLetterTimeout)
	defer timer.Stop()
	expired := false
	var failed, termFailed int
	var failErr, termErr error
	for k := range b.dead {
		d := &b.dead[k]
		if d.err == nil {
			d.err = awaitPubAck(ctx, timer.C, d.future, &expired)
		}
		it := &b.items[d.i]
		f := &b.frames[it.frame]
		if d.err != nil {
			failed++
			failErr = d.err
			f.handBack(backoff(w.opts.RetryBackoff, w.opts.RetryMaxBackoff, int(f.delivered)))
			continue
		}
		it.deadLettered = true
	}
	for k := range b.dead {
		d := &b.dead[k]
		it := &b.items[d.i]
		f := &b.frames[it.frame]
		if f.handedBack {
			continue
		}
		w.countDeadLetter(d, uint64(len(it.line.Data)))
		if w.stats.rejectLogBudget.Add(-1) >= 0 {
			logger.Warn("line dead-lettered", "seq", it.line.Seq, "line_id", it.line.ID, "source", it.line.Source, "reason", d.reason,
				"class", d.class, "detail", d.detail, "delivery", f.delivered, "bytes", len(it.line.Data))
		} else {
			w.stats.unlogged.Add(1)
		}
		if f.dead--; f.dead > 0 {
			continue
		}
		// The frame's last dead letter: settle it.
		var err error
		if b.allDeadLettered(f) {
			err = f.msg.TermWithReason(d.reason)
		} else {
			err = f.msg.Ack()
		}
		if err != nil {
			// The frame is redelivered after AckWait; its rows are skipped
			// as duplicates and its dead letters dropped as duplicates
			// within the stream's duplicate window.
			termFailed++
			termErr = err
		}
		w.countSettled(logger, b, f)
	}
	if failed > 0 {
		logger.Warn("writing dead letters failed; their frames handed back for redelivery",
			"err", failErr, "lines", failed, "stream", deadletter.StreamName)
		w.stats.deadLetterFailures.Add(uint64(failed))
		w.stats.retried.Add(uint64(failed))
	}
	if termFailed > 0 {
		logger.Warn("settling frames with dead-lettered lines failed; they will be redelivered and their dead letters dropped as duplicates",
			"err", termErr, "frames", termFailed)
	}
}

// allDeadLettered reports whether every line of f was dead-lettered.
func (b *batch) allDeadLettered(f *frame) bool {
	for i := f.first; i < f.first+f.lines; i++ {
		if !b.items[i].deadLettered {
			return false
		}
	}
	return true
}

// awaitPubAck waits for f's PubAck until timeout fires or ctx is done, and
// returns why it did not come. Once the time is up (*expired), it only
// takes a PubAck that is already in.
func awaitPubAck(ctx context.Context, timeout <-chan time.Time, f jetstream.PubAckFuture, expired *bool) error {
	if *expired {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		default:
			return errDeadLetterTimeout
		}
	}
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-timeout:
		*expired = true
		return errDeadLetterTimeout
	case <-ctx.Done():
		*expired = true
		return ctx.Err()
	}
}

// countDeadLetter counts a line settled by its dead letter. Lines refused
// for what they hold (class permanent) count as rejected too; lines that
// ran out of deliveries only as dead-lettered.
func (w *Worker) countDeadLetter(d *pendingDeadLetter, bytes uint64) {
	s := &w.stats
	s.lines.Add(1)
	s.bytes.Add(bytes)
	s.deadLettered.Add(1)
	permanent := d.class == deadletter.ClassPermanent
	if permanent {
		s.rejected.Add(1)
	}
	s.mu.Lock()
	s.deadLetteredBy[d.reason]++
	if permanent {
		s.rejectedBy[d.reason]++
	}
	s.mu.Unlock()
}
