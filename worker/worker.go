// Package worker moves received lines from the shared JetStream consumer
// into PostgreSQL: fetch (fetch.go) → split and transform (batch.go,
// transform.go) → store (store.go) → acknowledge (batch.go), with dead
// letters beside (deadletter.go). Each [Worker] runs a few loops that
// take a batch of frames (messages of consecutive lines) bounded by count
// and bytes, split them into lines, send each line where its source's
// [Route] says, turn it into a row with the route's [Transform], store
// each table's rows in one transaction with the route's [Store] and
// acknowledge each frame after the commit that holds its lines' rows. Any
// number of worker processes share the consumer; keyed inserts make a
// redelivered batch harmless. Lines that cannot be stored (refused by the
// transform or the database, or out of deliveries) are written to the
// dead-letter stream one by one; see package shared/contract/deadletter.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/shared/contract/topology"
)

// Options are the [Worker]'s own settings. [Config.Options] fills them from
// the environment; see [Config] for their meaning and defaults.
type Options struct {
	// BatchSize is the most frames (messages) one batch takes. Required.
	BatchSize int
	// BatchBytes is the most payload bytes one batch takes; a frame larger
	// than that is taken alone. The frames consumed ahead of the batches
	// are bounded by BatchBytes × Concurrency too, and so are the pull
	// requests outstanding, or by the server's max_payload if larger: see
	// [Worker.Run] for what a worker holds at most. Required.
	BatchBytes int
	// Concurrency is how many fetch → store → ack loops run. Required.
	Concurrency int
	// RetryBackoff is the redelivery delay after a failed store, doubled
	// per delivery. Required.
	RetryBackoff time.Duration
	// RetryMaxBackoff caps RetryBackoff's doubling. Required.
	RetryMaxBackoff time.Duration
	// ShutdownTimeout bounds finishing the batches in hand once Run's
	// context is done. Required.
	ShutdownTimeout time.Duration
	// WriteTimeout bounds storing one batch; a batch not stored in time is
	// handed back for redelivery. 0 means no limit. [Config.Options] sets
	// it to three quarters of AckWait: a frame may have waited in the
	// prefetch queue before, and by AckWait JetStream redelivers it to
	// another worker anyway.
	WriteTimeout time.Duration
	// ProgressInterval is how often progress is logged, when there was
	// any. Defaults to 10s.
	ProgressInterval time.Duration

	// DeadLetters is where lines that cannot be stored are written (the
	// INGEST_DLQ stream, through the program's JetStream context); each is
	// terminated once its dead letter is acknowledged. nil means lines
	// the transform or the database refuse are acknowledged and only
	// counted, as tools and tests that keep no dead letters want; the
	// worker program always sets it.
	DeadLetters DeadLetterPublisher
	// DeadLetterTimeout bounds waiting for the dead letters of one batch
	// to be acknowledged; lines whose dead letter is not acknowledged by
	// then are handed back for redelivery. Defaults to 10s.
	DeadLetterTimeout time.Duration
	// MaxDeliver is the delivery of a line from which a failed store gives
	// up on it: the line is dead-lettered (reason max_deliveries) instead
	// of handed back. 0 means never; it needs DeadLetters.
	MaxDeliver int
	// Instance names this worker in the dead letters it writes.
	Instance string
	// StreamCreated is when the ingest stream was created (its stream
	// info says). A line published without a message id is identified by
	// it and the line's sequence, "<unix nanoseconds>.<seq>", so lines of
	// a stream deleted and created again do not take the identities of
	// the old stream's lines. Zero identifies such lines by "<seq>" alone,
	// which suits tests and tools; the worker program always sets it.
	StreamCreated time.Time
}

func (o Options) validate() error {
	switch {
	case o.BatchSize < 1:
		return fmt.Errorf("batch size must be positive (got %d)", o.BatchSize)
	case o.BatchBytes < 1:
		return fmt.Errorf("batch bytes must be positive (got %d)", o.BatchBytes)
	case o.Concurrency < 1:
		return fmt.Errorf("concurrency must be positive (got %d)", o.Concurrency)
	case o.RetryBackoff <= 0 || o.RetryMaxBackoff < o.RetryBackoff:
		return fmt.Errorf("retry backoff must be positive and at most the maximum (got %s, max %s)", o.RetryBackoff, o.RetryMaxBackoff)
	case o.ShutdownTimeout <= 0:
		return fmt.Errorf("shutdown timeout must be positive (got %s)", o.ShutdownTimeout)
	case o.WriteTimeout < 0:
		return fmt.Errorf("write timeout must not be negative (got %s)", o.WriteTimeout)
	case o.MaxDeliver < 0:
		return fmt.Errorf("max deliver must not be negative (got %d)", o.MaxDeliver)
	case o.MaxDeliver > 0 && o.DeadLetters == nil:
		return fmt.Errorf("max deliver %d needs a dead-letter publisher to put lines that run out of deliveries", o.MaxDeliver)
	}
	return nil
}

// Worker consumes the shared consumer and stores every line. Create it with
// [New]; call [Worker.Run] once. [Worker.Stats] may be called at any time,
// from any goroutine.
type Worker struct {
	cons   jetstream.Consumer
	router *Router
	opts   Options
	logger *slog.Logger

	stats   counters
	metrics *metrics // see metrics.go

	// seqIDs identifies the lines of messages without a message id (see
	// Options.StreamCreated).
	seqIDs topology.SeqLineIDs
}

// New returns a worker that fetches from cons and sends each line where
// router says: the route's transform turns it into a row, the route's
// store writes it. The consumer is normally the one
// topology.EnsureConsumer returns.
func New(cons jetstream.Consumer, router *Router, opts Options, logger *slog.Logger) (*Worker, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("worker options: %w", err)
	}
	if router == nil {
		return nil, errors.New("new worker: no router")
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 10 * time.Second
	}
	if opts.DeadLetterTimeout <= 0 {
		opts.DeadLetterTimeout = 10 * time.Second
	}
	w := &Worker{
		cons:   cons,
		router: router,
		opts:   opts,
		logger: logger.With("component", "worker"),
	}
	w.seqIDs = topology.StreamSeqLineIDs(opts.StreamCreated)
	w.stats.rejectedBy = map[string]uint64{}
	w.stats.deadLetteredBy = map[string]uint64{}
	w.stats.rejectLogBudget.Store(rejectLogsPerInterval)
	w.metrics = newMetrics(w, router)
	return w, nil
}

// Run consumes and stores batches until ctx is done or consuming fails
// for good ([ErrClosed]). Call it once. When ctx is done it stops
// consuming, hands the frames not yet taken into a batch back at once,
// finishes, commits and acknowledges the batches in hand, and returns nil
// within Options.ShutdownTimeout; batches not committed by then are
// negatively acknowledged so another worker takes them at once. Errors
// storing a batch never end Run: the batch is redelivered later.
//
// Run holds at most 2 × Options.BatchBytes × Options.Concurrency +
// max(Options.BatchBytes × Options.Concurrency, the server's max_payload)
// of frames, plus two frames: the batches in hand, the frames consumed
// ahead of them, the pull budget, the frame that may overfill the queue
// and the one on its way into it (see [prefetch]); when frames are larger
// than BatchBytes, each batch in hand may be one frame instead. With the
// defaults (4 MiB, 2) and a max_payload of 8 MiB that is 24 MiB and two
// frames.
func (w *Worker) Run(ctx context.Context) error {
	// Work in hand runs on its own context, which outlives ctx by at most
	// the shutdown timeout.
	hard, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-stopped:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(w.opts.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-stopped:
		case <-t.C:
			w.logger.Warn("shutdown timeout reached; abandoning batches in hand", "timeout", w.opts.ShutdownTimeout)
			abandon()
		}
	}()

	// Frames consumed ahead wait in q, bounded by the batches the loops
	// can take at once; JetStream's pull requests may hold as much again,
	// and at least the largest message the server takes, so that any
	// message can be delivered.
	ahead := w.opts.BatchBytes * w.opts.Concurrency
	q := newPrefetch(ahead)
	closed, closing := context.WithCancelCause(ctx)
	defer closing(nil)
	budget := ahead
	if p := w.maxPayload(); p != math.MaxInt {
		budget = max(budget, p)
	} else {
		budget = max(budget, 64<<20) // the largest max_payload NATS allows
	}
	stopConsuming, err := w.consume(q, budget, func() { closing(ErrClosed) })
	if err != nil {
		return fmt.Errorf("consume %s: %w", w.cons.CachedInfo().Name, err)
	}

	w.logger.InfoContext(ctx, "worker started",
		"batch_size", w.opts.BatchSize, "batch_bytes", w.opts.BatchBytes, "concurrency", w.opts.Concurrency,
		"table", w.router.routes[0].Transform.Tables()[0].Ident().Sanitize(),
		"pipelines", w.router.Sources(), "max_deliver", w.opts.MaxDeliver, "dead_letters", w.opts.DeadLetters != nil)
	started := time.Now()

	loops, loopCtx := errgroup.WithContext(closed)
	for id := range w.opts.Concurrency {
		loops.Go(func() error { return w.loop(loopCtx, hard, q, id) })
	}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		w.reportProgress(loopCtx)
	}()
	<-loopCtx.Done()
	// Frames consumed but not taken go to another worker now, not after
	// the ack wait: those in the queue, and those nats.go still delivers
	// while the subscription drains.
	for _, m := range q.close() {
		_ = m.NakWithDelay(0)
	}
	stopConsuming()
	err = loops.Wait()
	<-progressDone
	if cause := context.Cause(closed); errors.Is(cause, ErrClosed) {
		err = ErrClosed
	}

	s := w.Stats()
	w.logger.Info("worker stopped", "uptime", time.Since(started).Round(time.Millisecond),
		"batches", s.Batches, "frames", s.Frames, "lines", s.Lines, "inserted", s.Inserted, "duplicates", s.Duplicates,
		"filtered", s.Filtered, "rejected", s.Rejected, "dead_lettered", s.DeadLettered, "retried", s.Retried)
	return err
}

// Stats are the worker's running totals since New. A line is counted once
// it is settled (acknowledged, or terminated after its dead letter was
// written); a line retried and then settled counts once in Retried and once
// in its final outcome.
type Stats struct {
	// Batches counts batches that were stored and acknowledged.
	Batches uint64
	// Frames counts settled frames (messages), each holding one line or
	// more.
	Frames uint64
	// Lines counts settled lines: Inserted + Duplicates + Filtered +
	// Rejected + DeadLetteredBy["max_deliveries"].
	Lines uint64
	// Bytes counts the bytes of settled lines.
	Bytes uint64
	// Inserted counts rows newly stored.
	Inserted uint64
	// Duplicates counts rows skipped because their key was already stored.
	Duplicates uint64
	// Filtered counts lines the transform did not want.
	Filtered uint64
	// Rejected counts lines refused by the transform or the database; they
	// are not stored, but dead-lettered (when the worker has
	// Options.DeadLetters) and terminated, or else acknowledged.
	Rejected uint64
	// RejectedBy splits Rejected by reason ("invalid_json", "pg_22P05" …).
	RejectedBy map[string]uint64
	// DeadLettered counts lines written to the dead-letter stream and
	// terminated: the rejected ones and those that ran out of deliveries.
	DeadLettered uint64
	// DeadLetteredBy splits DeadLettered by reason ("invalid_json",
	// "pg_22003", "max_deliveries" …).
	DeadLetteredBy map[string]uint64
	// DeadLetterFailures counts lines whose dead letter could not be
	// written; they were handed back for redelivery (and counted in
	// Retried).
	DeadLetterFailures uint64
	// Retried counts lines negatively acknowledged for redelivery after a
	// failed store or a failed dead letter.
	Retried uint64
	// Failures counts batches whose store failed.
	Failures uint64
	// Tables counts, by table name (schema.name), what became of the rows
	// stored into it; a delete entry's counts are its table's.
	Tables map[string]TableCounts
}

type counters struct {
	batches, frames, lines, bytes, inserted, duplicates, filtered, rejected, retried, failures atomic.Uint64
	deadLettered, deadLetterFailures                                                           atomic.Uint64

	// rejectLogBudget is how many more dead-lettered or rejected lines may
	// be logged one by one in this progress interval; unlogged counts the
	// others.
	rejectLogBudget atomic.Int64
	unlogged        atomic.Uint64

	mu             sync.Mutex
	rejectedBy     map[string]uint64
	deadLetteredBy map[string]uint64
	tables         map[string]TableCounts
}

// Stats returns a snapshot of the running totals. Safe for concurrent use.
func (w *Worker) Stats() Stats {
	c := &w.stats
	c.mu.Lock()
	by := maps.Clone(c.rejectedBy)
	dlBy := maps.Clone(c.deadLetteredBy)
	tables := maps.Clone(c.tables)
	c.mu.Unlock()
	return Stats{
		Batches:            c.batches.Load(),
		Frames:             c.frames.Load(),
		Lines:              c.lines.Load(),
		Bytes:              c.bytes.Load(),
		Inserted:           c.inserted.Load(),
		Duplicates:         c.duplicates.Load(),
		Filtered:           c.filtered.Load(),
		Rejected:           c.rejected.Load(),
		RejectedBy:         by,
		DeadLettered:       c.deadLettered.Load(),
		DeadLetteredBy:     dlBy,
		DeadLetterFailures: c.deadLetterFailures.Load(),
		Retried:            c.retried.Load(),
		Failures:           c.failures.Load(),
		Tables:             tables,
	}
}

// countTables adds what a store of route r's rows did to the counts by
// table.
func (w *Worker) countTables(r int, wr WriteResult) {
	tables := w.router.routes[r].Transform.Tables()
	c := &w.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tables == nil {
		c.tables = map[string]TableCounts{}
	}
	for t, n := range wr.Tables {
		name := strings.Join(tables[t].Ident(), ".")
		sum := c.tables[name]
		sum.add(n)
		c.tables[name] = sum
	}
}

// reportProgress logs what happened every ProgressInterval, when anything
// did, until ctx is done.
func (w *Worker) reportProgress(ctx context.Context) {
	t := time.NewTicker(w.opts.ProgressInterval)
	defer t.Stop()
	last, lastAt := w.Stats(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.stats.rejectLogBudget.Store(rejectLogsPerInterval)
			s := w.Stats()
			if s.Lines == last.Lines && s.Retried == last.Retried {
				continue
			}
			secs := now.Sub(lastAt).Seconds()
			attrs := []any{
				"batches", s.Batches - last.Batches,
				"frames", s.Frames - last.Frames,
				"lines", s.Lines - last.Lines,
				"inserted", s.Inserted - last.Inserted,
				"duplicates", s.Duplicates - last.Duplicates,
				"filtered", s.Filtered - last.Filtered,
				"rejected", s.Rejected - last.Rejected,
				"dead_lettered", s.DeadLettered - last.DeadLettered,
				"retried", s.Retried - last.Retried,
				"lines_per_sec", int(float64(s.Lines-last.Lines) / secs),
				"mib_per_sec", float64(int(float64(s.Bytes-last.Bytes)/secs/(1<<20)*10)) / 10,
			}
			if s.Rejected != last.Rejected {
				attrs = append(attrs, growthBy("rejected_by", s.RejectedBy, last.RejectedBy))
			}
			if s.DeadLettered != last.DeadLettered {
				attrs = append(attrs, growthBy("dead_lettered_by", s.DeadLetteredBy, last.DeadLetteredBy))
			}
			if n := s.DeadLetterFailures - last.DeadLetterFailures; n > 0 {
				attrs = append(attrs, "dead_letter_failures", n)
			}
			if n := w.stats.unlogged.Swap(0); n > 0 {
				attrs = append(attrs, "rejected_not_logged", n)
			}
			if w.router.detailed {
				attrs = append(attrs, tableGrowth(s.Tables, last.Tables))
			}
			w.logger.InfoContext(ctx, "progress", attrs...)
			last, lastAt = s, now
		}
	}
}

// tableGrowth returns a log group "tables" with, for each table whose rows
// moved from last to now, what moved: inserted, duplicates, updated,
// unchanged, deleted and suppressed rows.
func tableGrowth(now, last map[string]TableCounts) slog.Attr {
	var by []any
	for _, name := range slices.Sorted(maps.Keys(now)) {
		n, l := now[name], last[name]
		var moved []any
		for _, x := range []struct {
			key      string
			now, was int
		}{{"inserted", n.Inserted, l.Inserted}, {"duplicates", n.Duplicates, l.Duplicates}, {"updated", n.Updated, l.Updated},
			{"unchanged", n.Unchanged, l.Unchanged}, {"deleted", n.Deleted, l.Deleted}, {"suppressed", n.Suppressed, l.Suppressed}} {
			if d := x.now - x.was; d > 0 {
				moved = append(moved, slog.Int(x.key, d))
			}
		}
		if len(moved) > 0 {
			by = append(by, slog.Group(name, moved...))
		}
	}
	return slog.Group("tables", by...)
}

// growthBy returns a log group named name with, for each reason whose
// count grew from last to now, by how much.
func growthBy(name string, now, last map[string]uint64) slog.Attr {
	var by []any
	for reason, n := range now {
		if d := n - last[reason]; d > 0 {
			by = append(by, slog.Uint64(reason, d))
		}
	}
	return slog.Group(name, by...)
}

// drainTimeout bounds waiting, at shutdown, for the frames nats.go has
// buffered to be handed back.
const drainTimeout = 2 * time.Second

// ErrClosed is returned by [Worker.Run] when the NATS connection under the
// consumer was closed, so no batch can be fetched again. Its text names no
// program: the worker's main adds "worker:" once, for every error.
var ErrClosed = errors.New("nats connection closed")
