package worker

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// rejectLogsPerInterval caps how many dead-lettered (or rejected) lines
// are logged one by one per progress interval; the rest are only counted,
// so a file of garbage does not flood the log.
const rejectLogsPerInterval = 100

// This file is the batch engine: one loop's take → split → transform →
// store → acknowledge cycle. A batch is a run of frames taken from the
// prefetch queue (fetch.go); each frame is split into its lines, and
// from then on everything is per line, as when a message held one line:
// the transform, the filter, the dead letters, the bisection of rows the
// database refuses, the row keys and the accounting. What is per frame is
// only what JetStream sees: a frame is acknowledged once every one of its
// lines is committed or dead-lettered, and handed back whole otherwise.

// batch holds one loop's buffers, reused from batch to batch so steady
// state allocates little beyond what pgx and nats.go do.
type batch struct {
	msgs   []jetstream.Msg
	frames []frame
	items  []item
	// taken is when the frames were taken from the prefetch queue.
	taken time.Time
	// dead are the batch's dead letters, published and not yet settled.
	dead []pendingDeadLetter
	// groups[r] holds the rows of route r.
	groups []group
}

// frame is one message of a batch: a gateway's frame of consecutive
// lines, a replayed line, or what another program published.
type frame struct {
	msg jetstream.Msg
	// delivered is how many times msg has been delivered.
	delivered uint64
	// route is the index of the route of msg's source.
	route int
	// items[first:first+lines] are its lines.
	first, lines int
	// handedBack is set once the frame was negatively acknowledged: its
	// lines are not settled in this batch.
	handedBack bool
	// dead counts its lines waiting for their dead letter.
	dead int
}

// item is one line of a batch and what became of it.
type item struct {
	line Line
	// frame is the index in batch.frames of the line's frame, k the
	// line's position in it (from 0).
	frame, k int
	result   Result
	// deadLettered is set when the line's dead letter was stored.
	deadLettered bool
}

// group is the part of a batch that goes to one route's tables.
type group struct {
	// rows are the rows to store, each with the index in items of the
	// line it came from.
	rows *Rows
	// err is why storing rows failed; the lines are then handed back.
	err error
}

func newBatch(size int, router *Router) *batch {
	b := &batch{
		msgs:   make([]jetstream.Msg, 0, size),
		frames: make([]frame, 0, size),
		items:  make([]item, 0, size),
		groups: make([]group, len(router.routes)),
	}
	for i, r := range router.routes {
		b.groups[i].rows = NewRows(r.Transform.Tables())
	}
	return b
}

// reset empties b for the next batch, keeping its buffers but none of
// the frames and lines of the last: a slot past a buffer's new length that
// still held a frame kept it alive for as long as no later batch was as
// long, and with it, through nats.go's links, the frames delivered after
// it (see [prefetch]).
func (b *batch) reset() {
	clear(b.msgs)
	b.msgs = b.msgs[:0]
	clear(b.frames)
	b.frames = b.frames[:0]
	clear(b.items)
	b.items = b.items[:0]
	clear(b.dead)
	b.dead = b.dead[:0]
	for i := range b.groups {
		b.groups[i].rows.Reset()
		b.groups[i].err = nil
	}
}

// loop is one take → transform → store → ack loop. It takes batches from
// q until ctx is done; batches in hand are stored under hard, which
// outlives ctx by the shutdown timeout.
func (w *Worker) loop(ctx, hard context.Context, q *prefetch, id int) error {
	logger := w.logger.With("loop", id)
	b := newBatch(w.opts.BatchSize, w.router)
	var storeFailures int
	for ctx.Err() == nil {
		b.msgs = q.take(ctx, b.msgs, w.opts.BatchSize, w.opts.BatchBytes)
		if len(b.msgs) == 0 {
			continue
		}
		b.taken = time.Now()
		if w.process(hard, logger, b) {
			storeFailures = 0
			continue
		}
		// The store failed: give the database a rest before taking more
		// work it cannot take.
		storeFailures++
		sleep(ctx, backoff(w.opts.RetryBackoff, w.opts.RetryMaxBackoff, storeFailures))
	}
	return nil
}

// process splits, transforms, stores and acknowledges the frames in
// b.msgs. Lines are grouped by route and each group is stored in its own
// transaction. It reports false when a store failed and that group's
// frames were handed back for redelivery; frames of groups that were
// stored are acknowledged all the same. Lines the transform or the
// database refuse are dead-lettered (see deadletter.go); their dead
// letters are published as soon as the refusal is known, so the PubAcks
// come back while the database works, and are waited for after the frames
// without any are acknowledged. It empties b when done, so that between
// batches a loop holds no frame.
func (w *Worker) process(ctx context.Context, logger *slog.Logger, b *batch) bool {
	defer b.reset()
	for _, m := range b.msgs {
		w.split(b, m)
	}
	if w.opts.DeadLetters != nil {
		for i := range b.items {
			if res := b.items[i].result; res.Outcome == Reject {
				w.deadLetter(b, i, res.Reason, deadletter.ClassPermanent, res.Detail)
			}
		}
	}

	stored := true
	var total WriteResult
	for r := range b.groups {
		g := &b.groups[r]
		if g.rows.Len() == 0 {
			continue
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if w.opts.WriteTimeout > 0 {
			wctx, cancel = context.WithTimeout(ctx, w.opts.WriteTimeout)
		}
		wr, err := w.router.routes[r].Store.Write(wctx, g.rows)
		cancel()
		if err != nil {
			g.err = err
			stored = false
			w.retry(ctx, logger, b, r, err)
			continue
		}
		tables := w.router.routes[r].Transform.Tables()
		for _, re := range wr.Rejected {
			i := re.Line
			if b.items[i].result.Outcome == Reject {
				continue // another of the line's rows was refused too
			}
			code, msg := pgMessage(re.Err)
			reason := "db_error"
			if code != "" {
				reason = "pg_" + code
			}
			if len(tables) > 1 {
				msg = tables[re.Table].Ident().Sanitize() + ": " + msg
			}
			b.items[i].result = Result{Outcome: Reject, Reason: reason, Detail: msg}
			if w.opts.DeadLetters != nil {
				w.deadLetter(b, i, reason, deadletter.ClassPermanent, msg)
			}
		}
		if wr.Splits > 0 {
			logger.Info("isolated rows the database refused", "table", tables[0].Ident().Sanitize(),
				"rejected", len(wr.Rejected), "extra_attempts", wr.Splits, "rows", g.rows.Len())
		}
		total.Inserted += wr.Inserted
		total.Duplicates += wr.Duplicates
		w.metrics.stored(r, wr)
		w.countTables(r, wr)
	}
	w.finish(logger, b, total, stored)
	w.settleDeadLetters(ctx, logger, b)
	w.metrics.batchDone(b, stored)
	return stored
}

// split adds the frame m and its lines to b, transforming each line into
// a row of its route's group. A message that is not a JetStream delivery
// has its lines rejected.
func (w *Worker) split(b *batch, m jetstream.Msg) {
	meta, res := readFrame(m, w.seqIDs)
	f := frame{msg: m, delivered: meta.delivered, route: w.router.route(meta.source), first: len(b.items)}
	g := &b.groups[f.route]
	tf := w.router.routes[f.route].Transform
	add := func(k int, data []byte) {
		it := item{line: meta.line(k, data), frame: len(b.frames), k: k, result: res}
		if it.result.Outcome == Insert {
			it.result = g.rows.Transform(tf, &it.line, len(b.items))
		}
		b.items = append(b.items, it)
		f.lines++
	}
	for k, data := range topology.Lines(m.Data()) {
		add(k, data)
	}
	if f.lines == 0 {
		// A message with no line in it (another program's empty or blank
		// message) is a line all the same, refused as what it holds is,
		// so that it is counted and dead-lettered rather than dropped.
		add(0, m.Data())
	}
	b.frames = append(b.frames, f)
}

// Reasons the worker itself refuses a line before any transform.
const (
	// ReasonNoMetadata: the message is not a JetStream delivery, so it has
	// no stream sequence and cannot be acknowledged.
	ReasonNoMetadata = "no_metadata"
)

// frameMeta is what the lines of one frame share, and how to tell their
// identities apart.
type frameMeta struct {
	source     string
	seq        uint64
	delivered  uint64
	receivedAt time.Time
	// single is the identity of a message's only line: its
	// topology.HeaderLineID (a line replayed from the dead letters keys
	// the row it would have had), else its Nats-Msg-Id, else the one its
	// stream sequence gives it.
	single string
	// ids and firstLine identify the lines of a gateway's frame, or of
	// another program's message of several (numbered from 1 after its
	// sequence): line k is ids.Line(firstLine+k). Without them
	// (firstLine 0), every line is single.
	ids       topology.LineIDs
	firstLine int64
}

// readFrame reads what the lines of m share. The received time is the
// gateway's Jetline-Received-At, else JetStream's. A message that is not
// a JetStream delivery is rejected.
func readFrame(m jetstream.Msg, seqIDs topology.SeqLineIDs) (frameMeta, Result) {
	f := frameMeta{source: topology.Source(m.Subject()), delivered: 1}
	md, err := m.Metadata()
	if err != nil {
		return f, Result{Outcome: Reject, Reason: ReasonNoMetadata, Detail: err.Error()}
	}
	f.seq, f.delivered, f.receivedAt = md.Sequence.Stream, md.NumDelivered, md.Timestamp
	var msgID, lineID string
	if h := m.Headers(); h != nil {
		if v := h.Get(topology.HeaderReceivedAt); v != "" {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				f.receivedAt = t
			}
		}
		msgID, lineID = h.Get(topology.HeaderMsgID), h.Get(topology.HeaderLineID)
		first, ferr := strconv.ParseInt(h.Get(topology.HeaderLine), 10, 64)
		lines, lerr := strconv.ParseInt(h.Get(topology.HeaderLines), 10, 64)
		if ferr == nil && lerr == nil {
			f.ids, _ = topology.FrameLineIDs(msgID, first, lines)
			if f.ids != "" {
				f.firstLine = first
			}
		}
	}
	f.single = lineID
	if f.single == "" {
		f.single = msgID
	}
	if f.single == "" {
		f.single = seqIDs.Message(f.seq)
	}
	if lineID == "" && f.firstLine == 0 && hasSeveralLines(m.Data()) {
		f.ids, f.firstLine = seqIDs.Lines(f.seq), 1
	}
	return f, Result{Outcome: Insert}
}

// line returns the Line at position k of the frame, holding data.
func (f *frameMeta) line(k int, data []byte) Line {
	l := Line{Seq: f.seq, Source: f.source, ReceivedAt: f.receivedAt, Data: data}
	if f.firstLine > 0 {
		l.ID = f.ids.Line(f.firstLine + int64(k))
	} else {
		l.ID = f.single
	}
	return l
}

// hasSeveralLines reports whether payload holds more than one line.
func hasSeveralLines(payload []byte) bool {
	n := 0
	for range topology.Lines(payload) {
		if n++; n > 1 {
			return true
		}
	}
	return false
}

// finish acknowledges the frames of a batch whose lines are all settled
// now and counts and logs their lines' outcomes. Frames handed back by
// retry are left alone, and frames with lines waiting for their dead
// letter are settled by settleDeadLetters. Without a dead-letter
// publisher, rejected lines are settled here too, as acknowledged.
// complete says whether every group was stored.
func (w *Worker) finish(logger *slog.Logger, b *batch, wr WriteResult, complete bool) {
	var ackErr error
	failed, acked := 0, 0
	for fi := range b.frames {
		f := &b.frames[fi]
		if f.handedBack || f.dead > 0 {
			continue
		}
		if err := f.msg.Ack(); err != nil {
			ackErr = err
			failed++
		}
		acked++
		w.countSettled(logger, b, f)
	}
	if ackErr != nil {
		// What was acknowledged is settled; a lost ack only means the frame
		// is redelivered after AckWait and its rows skipped as duplicates.
		logger.Warn("acknowledging frames failed; they will be redelivered and their rows skipped as duplicates",
			"err", ackErr, "failed", failed, "frames", acked)
	}
	s := &w.stats
	if complete {
		s.batches.Add(1)
	}
	s.inserted.Add(uint64(wr.Inserted))
	s.duplicates.Add(uint64(wr.Duplicates))
}

// countSettled counts the lines of f, which is settled: stored, filtered,
// rejected (without dead letters) or dead-lettered (counted when their
// dead letter was stored), and observes how long ago its first line was
// read.
func (w *Worker) countSettled(logger *slog.Logger, b *batch, f *frame) {
	var lines, filtered, rejected, bytes uint64
	for i := f.first; i < f.first+f.lines; i++ {
		it := &b.items[i]
		if it.deadLettered {
			continue
		}
		switch it.result.Outcome {
		case Filter:
			filtered++
		case Reject:
			rejected++
			w.countReject(it.result.Reason)
			if w.stats.rejectLogBudget.Add(-1) >= 0 {
				logger.Warn("line rejected", "seq", it.line.Seq, "line_id", it.line.ID, "source", it.line.Source,
					"reason", it.result.Reason, "detail", it.result.Detail, "bytes", len(it.line.Data))
			} else {
				w.stats.unlogged.Add(1)
			}
		}
		lines++
		bytes += uint64(len(it.line.Data))
	}
	if f.lines > 0 {
		w.metrics.settled(b.items[f.first].line.ReceivedAt)
	}
	s := &w.stats
	s.frames.Add(1)
	s.lines.Add(lines)
	s.bytes.Add(bytes)
	s.filtered.Add(filtered)
	s.rejected.Add(rejected)
}

// retry hands the frames of route r whose store failed back to
// JetStream: they are negatively acknowledged with a delay growing with
// their delivery count. A frame on its last allowed delivery
// (Options.MaxDeliver) is kept instead: each of its lines that was to be
// stored is dead-lettered on its own, with reason max_deliveries and err,
// so no line is handed back into oblivion and `worker dlq replay` works
// line by line. Frames of other routes do not depend on this store;
// finish acknowledges them.
func (w *Worker) retry(ctx context.Context, logger *slog.Logger, b *batch, r int, err error) {
	shuttingDown := ctx.Err() != nil
	class := Classify(err)
	maxDelay := time.Duration(0)
	retried, gaveUp := 0, 0
	var maxDelivery uint64
	for fi := range b.frames {
		f := &b.frames[fi]
		if f.route != r || !b.hasRows(f) {
			continue
		}
		maxDelivery = max(maxDelivery, f.delivered)
		// A store cut short by shutdown says nothing about the lines: the
		// frame is handed back whatever its delivery count.
		if !shuttingDown && w.opts.MaxDeliver > 0 && f.delivered >= uint64(w.opts.MaxDeliver) {
			for i := f.first; i < f.first+f.lines; i++ {
				if b.items[i].result.Outcome == Insert {
					w.deadLetter(b, i, deadletter.ReasonMaxDeliveries, deadletter.ClassTransient, err.Error())
					gaveUp++
				}
			}
			continue
		}
		delay := backoff(w.opts.RetryBackoff, w.opts.RetryMaxBackoff, int(f.delivered))
		if shuttingDown {
			// Give the frame to another worker now.
			delay = 0
		}
		maxDelay = max(maxDelay, delay)
		f.handBack(delay)
		retried += f.lines
	}
	attrs := []any{"err", err, "class", class.String(), "table", w.router.routes[r].Transform.Tables()[0].Ident().Sanitize(),
		"lines", retried, "redeliver_in", maxDelay, "delivery", maxDelivery}
	if gaveUp > 0 {
		attrs = append(attrs, "dead_lettered", gaveUp, "max_deliver", w.opts.MaxDeliver)
	}
	switch {
	case shuttingDown:
		logger.Warn("batch not stored before shutdown deadline; handed back", attrs...)
	case retried == 0:
		logger.Error("storing batch failed on the last delivery allowed; lines dead-lettered", attrs...)
	case class == Permanent:
		logger.Error("storing batch failed; will retry (fix the cause)", attrs...)
	default:
		logger.Warn("storing batch failed; will retry", attrs...)
	}
	w.stats.failures.Add(1)
	w.stats.retried.Add(uint64(retried))
}

// hasRows reports whether any line of f was to be stored.
func (b *batch) hasRows(f *frame) bool {
	for i := f.first; i < f.first+f.lines; i++ {
		if b.items[i].result.Outcome == Insert {
			return true
		}
	}
	return false
}

// handBack negatively acknowledges f, to be redelivered after delay. A
// failed Nak is harmless: the frame is redelivered after AckWait.
func (f *frame) handBack(delay time.Duration) {
	if f.handedBack {
		return
	}
	f.handedBack = true
	_ = f.msg.NakWithDelay(delay)
}

func (w *Worker) countReject(reason string) {
	w.stats.mu.Lock()
	w.stats.rejectedBy[reason]++
	w.stats.mu.Unlock()
}

// backoff returns base doubled (n-1) times, capped at limit.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
