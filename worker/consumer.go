package worker

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/deadletter"
	"github.com/jetline/jetline/shared/topology"
)

// rejectLogsPerInterval caps how many dead-lettered (or rejected) lines
// are logged one by one per progress interval; the rest are only counted,
// so a file of garbage does not flood the log.
const rejectLogsPerInterval = 100

// batch holds one loop's buffers, reused from batch to batch so steady
// state allocates little beyond what pgx and nats.go do.
type batch struct {
	msgs    []jetstream.Msg
	lines   []Line
	results []Result
	// route[i] is the index of msgs[i]'s route.
	route []int
	// delivered[i] is how many times msgs[i] has been delivered.
	delivered []uint64
	// fetched is when the fetch of msgs completed.
	fetched time.Time
	// dead are the batch's dead letters, published and not yet settled.
	dead []pendingDeadLetter
	// groups[r] holds the rows of route r.
	groups []group
}

// group is the part of a batch that goes to one route's table.
type group struct {
	// rows are the rows to store, backed by slots; rowMsg[i] is the index
	// in msgs of rows[i].
	rows    [][]any
	rowMsg  []int
	slots   []any
	columns int
	// err is why storing rows failed; the lines are then handed back.
	err error
}

func newBatch(size int, router *Router) *batch {
	b := &batch{
		msgs:      make([]jetstream.Msg, 0, size),
		lines:     make([]Line, 0, size),
		results:   make([]Result, 0, size),
		route:     make([]int, 0, size),
		delivered: make([]uint64, 0, size),
		groups:    make([]group, len(router.routes)),
	}
	for i, r := range router.routes {
		b.groups[i].columns = len(r.Transform.Table().Columns)
	}
	return b
}

// row returns the next free row of g, allocating g's slots on first use; a
// line filtered or rejected leaves it to the next one, so it is cleared of
// what it wrote.
func (g *group) row(size int) []any {
	if g.slots == nil {
		g.slots = make([]any, size*g.columns)
	}
	n, c := len(g.rows), g.columns
	row := g.slots[n*c : (n+1)*c : (n+1)*c]
	clear(row)
	return row
}

// loop is one fetch → transform → store → ack loop. It fetches until ctx is
// done; batches in hand are stored under hard, which outlives ctx by the
// shutdown timeout.
func (w *Worker) loop(ctx, hard context.Context, id int) error {
	logger := w.logger.With("loop", id)
	b := newBatch(w.opts.BatchSize, w.router)
	var fetchFailures, storeFailures int
	for ctx.Err() == nil {
		if err := w.fetch(b); err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				return ErrClosed
			}
			fetchFailures++
			logger.WarnContext(ctx, "fetch failed; retrying", "err", err, "attempt", fetchFailures)
			// Messages may still have arrived; they are handled below.
			if len(b.msgs) == 0 {
				sleep(ctx, backoff(w.opts.RetryBackoff, w.opts.RetryMaxBackoff, fetchFailures))
				continue
			}
		} else {
			fetchFailures = 0
		}
		if len(b.msgs) == 0 {
			continue
		}
		if w.process(hard, logger, b) {
			storeFailures = 0
			continue
		}
		// The store failed: give the database a rest before fetching more
		// work it cannot take.
		storeFailures++
		sleep(ctx, backoff(w.opts.RetryBackoff, w.opts.RetryMaxBackoff, storeFailures))
	}
	return nil
}

// fetch fills b.msgs with the next batch. It waits up to FetchMaxWait for a
// full batch; every message delivered is kept, even when the fetch then
// reports an error.
func (w *Worker) fetch(b *batch) error {
	b.msgs = b.msgs[:0]
	mb, err := w.cons.Fetch(w.opts.BatchSize, jetstream.FetchMaxWait(w.opts.FetchMaxWait))
	if err != nil {
		return err
	}
	for m := range mb.Messages() {
		b.msgs = append(b.msgs, m)
	}
	b.fetched = time.Now()
	return mb.Error()
}

// process transforms, stores and acknowledges the batch in b.msgs. Lines
// are grouped by route and each group is stored in its own transaction.
// It reports false when a store failed and that group's lines were handed
// back for redelivery; lines of groups that were stored are acknowledged
// all the same. Lines the transform or the database refuse are
// dead-lettered and terminated (see deadletter.go); their dead letters are
// published as soon as the refusal is known, so the PubAcks come back
// while the database works, and are waited for after the stored lines are
// acknowledged.
func (w *Worker) process(ctx context.Context, logger *slog.Logger, b *batch) bool {
	b.lines = b.lines[:0]
	b.results = b.results[:0]
	b.route = b.route[:0]
	b.delivered = b.delivered[:0]
	clear(b.dead)
	b.dead = b.dead[:0]
	for i := range b.groups {
		g := &b.groups[i]
		g.rows, g.rowMsg, g.err = g.rows[:0], g.rowMsg[:0], nil
	}

	for i, m := range b.msgs {
		line, delivered, res := readLine(m, w.idPrefix)
		b.lines = append(b.lines, line)
		b.delivered = append(b.delivered, delivered)
		r := w.router.route(line.Source)
		b.route = append(b.route, r)
		if res.Outcome == Insert {
			g := &b.groups[r]
			row := g.row(w.opts.BatchSize)
			res = w.router.routes[r].Transform.Transform(&b.lines[i], row)
			if res.Outcome == Insert {
				g.rows = append(g.rows, row)
				g.rowMsg = append(g.rowMsg, i)
			}
		}
		b.results = append(b.results, res)
	}
	if w.opts.DeadLetters != nil {
		for i, res := range b.results {
			if res.Outcome == Reject {
				w.deadLetter(b, i, res.Reason, deadletter.ClassPermanent, res.Detail)
			}
		}
	}

	stored := true
	var total WriteResult
	for r := range b.groups {
		g := &b.groups[r]
		if len(g.rows) == 0 {
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
		for _, re := range wr.Rejected {
			i := g.rowMsg[re.Index]
			code, msg := pgMessage(re.Err)
			reason := "db_error"
			if code != "" {
				reason = "pg_" + code
			}
			b.results[i] = Result{Outcome: Reject, Reason: reason, Detail: msg}
			if w.opts.DeadLetters != nil {
				w.deadLetter(b, i, reason, deadletter.ClassPermanent, msg)
			}
		}
		if wr.Splits > 0 {
			logger.Info("isolated rows the database refused", "table", w.router.routes[r].Transform.Table().Ident().Sanitize(),
				"rejected", len(wr.Rejected), "extra_attempts", wr.Splits, "rows", len(g.rows))
		}
		total.Inserted += wr.Inserted
		total.Duplicates += wr.Duplicates
		w.metrics.stored(r, wr)
	}
	w.finish(logger, b, total, stored)
	w.settleDeadLetters(ctx, logger, b)
	w.metrics.batchDone(b, stored)
	return stored
}

// Reasons the worker itself refuses a line before any transform.
const (
	// ReasonNoMetadata: the message is not a JetStream delivery, so it has
	// no stream sequence and cannot be acknowledged.
	ReasonNoMetadata = "no_metadata"
)

// readLine builds the Line of m and returns how often m was delivered.
// The line's identity is, in order, its topology.HeaderLineID (a line
// replayed from the dead letters keys the row it would have had), its
// Nats-Msg-Id, or idPrefix and its stream sequence (see
// Options.StreamCreated). A message that is not a JetStream delivery is
// rejected.
func readLine(m jetstream.Msg, idPrefix string) (line Line, delivered uint64, res Result) {
	line = Line{Source: topology.Source(m.Subject()), Data: m.Data()}
	md, err := m.Metadata()
	if err != nil {
		return line, 1, Result{Outcome: Reject, Reason: ReasonNoMetadata, Detail: err.Error()}
	}
	line.Seq = md.Sequence.Stream
	line.ReceivedAt = md.Timestamp
	if h := m.Headers(); h != nil {
		if v := h.Get(topology.HeaderReceivedAt); v != "" {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				line.ReceivedAt = t
			}
		}
		line.ID = cmp.Or(h.Get(topology.HeaderLineID), h.Get(topology.HeaderMsgID))
	}
	if line.ID == "" {
		line.ID = idPrefix + strconv.FormatUint(line.Seq, 10)
	}
	return line, md.NumDelivered, Result{Outcome: Insert}
}

// finish acknowledges the lines of a batch and counts and logs their
// outcomes. Lines whose group failed to store were handed back or
// dead-lettered by retry, and rejected lines are dead-lettered
// (settleDeadLetters settles both); the others, including every line the
// transform filtered, are acknowledged. Without a dead-letter publisher,
// rejected lines are acknowledged here too. complete says whether every
// group was stored.
func (w *Worker) finish(logger *slog.Logger, b *batch, wr WriteResult, complete bool) {
	var lines, filtered, rejected, bytes uint64
	var ackErr error
	failed := 0
	for i, m := range b.msgs {
		switch r := b.results[i]; r.Outcome {
		case Insert:
			if b.groups[b.route[i]].err != nil {
				continue
			}
		case Filter:
			filtered++
		case Reject:
			if w.opts.DeadLetters != nil {
				continue
			}
			rejected++
			w.countReject(r.Reason)
			if w.stats.rejectLogBudget.Add(-1) >= 0 {
				logger.Warn("line rejected", "seq", b.lines[i].Seq, "line_id", b.lines[i].ID, "source", b.lines[i].Source,
					"reason", r.Reason, "detail", r.Detail, "bytes", len(b.lines[i].Data))
			} else {
				w.stats.unlogged.Add(1)
			}
		}
		lines++
		bytes += uint64(len(b.lines[i].Data))
		if err := m.Ack(); err != nil {
			ackErr = err
			failed++
		}
	}
	if ackErr != nil {
		// What was acknowledged is settled; a lost ack only means the line
		// is redelivered after AckWait and skipped as a duplicate.
		logger.Warn("acknowledging lines failed; they will be redelivered and skipped as duplicates",
			"err", ackErr, "failed", failed, "lines", lines)
	}
	s := &w.stats
	if complete {
		s.batches.Add(1)
	}
	s.lines.Add(lines)
	s.bytes.Add(bytes)
	s.inserted.Add(uint64(wr.Inserted))
	s.duplicates.Add(uint64(wr.Duplicates))
	s.filtered.Add(filtered)
	s.rejected.Add(rejected)
}

// retry hands the lines of route r whose store failed back to JetStream:
// they are negatively acknowledged with a delay growing with their
// delivery count. A line on its last allowed delivery (Options.MaxDeliver)
// is dead-lettered instead, with reason max_deliveries and err, so it is
// not handed back into oblivion. Lines of other routes, and lines the
// transform settled on its own, do not depend on this store; finish
// acknowledges them.
func (w *Worker) retry(ctx context.Context, logger *slog.Logger, b *batch, r int, err error) {
	shuttingDown := ctx.Err() != nil
	class := Classify(err)
	maxDelay := time.Duration(0)
	retried, gaveUp := 0, 0
	var maxDelivery uint64
	for i, m := range b.msgs {
		if b.route[i] != r || b.results[i].Outcome != Insert {
			continue
		}
		maxDelivery = max(maxDelivery, b.delivered[i])
		// A store cut short by shutdown says nothing about the line: it
		// is handed back whatever its delivery count.
		if !shuttingDown && w.opts.MaxDeliver > 0 && b.delivered[i] >= uint64(w.opts.MaxDeliver) {
			w.deadLetter(b, i, deadletter.ReasonMaxDeliveries, deadletter.ClassTransient, err.Error())
			gaveUp++
			continue
		}
		delay := backoff(w.opts.RetryBackoff, w.opts.RetryMaxBackoff, int(b.delivered[i]))
		if shuttingDown {
			// Give the line to another worker now.
			delay = 0
		}
		maxDelay = max(maxDelay, delay)
		// A failed Nak is harmless: the line is redelivered after AckWait.
		_ = m.NakWithDelay(delay)
		retried++
	}
	attrs := []any{"err", err, "class", class.String(), "table", w.router.routes[r].Transform.Table().Ident().Sanitize(),
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
