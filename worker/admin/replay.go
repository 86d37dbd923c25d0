package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// ReplayOptions select and pace a replay.
type ReplayOptions struct {
	// Filter selects the entries to replay.
	Filter Filter
	// DryRun counts what would be replayed and skipped and changes
	// nothing.
	DryRun bool
	// Rate caps the lines republished per second; 0 means as fast as the
	// server acknowledges them.
	Rate float64
	// Progress, if not nil, receives a line of progress every
	// ProgressEvery (defaults to 5s).
	Progress      io.Writer
	ProgressEvery time.Duration
	// Window is how many republished lines may await their
	// acknowledgement at once. Defaults to 256. WindowBytes bounds their
	// bytes. Defaults to 32 MiB.
	Window      int
	WindowBytes int64
	// AckTimeout is how long to wait for one acknowledgement before giving
	// the line up as failed (it stays in the dead letters). Defaults to
	// 30s.
	AckTimeout time.Duration
}

// ReplayResult counts what a replay did. Every selected entry is counted
// once: replayed, skipped or failed, or none of them if the replay was
// interrupted before reaching it.
type ReplayResult struct {
	// DryRun is set when nothing was changed: Replayed then counts the
	// entries that would have been.
	DryRun bool `json:"dry_run"`
	// Selected is how many entries the filter selected at the start.
	Selected uint64 `json:"selected"`
	// Replayed entries were republished to the ingest stream, acknowledged
	// and removed from the dead letters.
	Replayed uint64 `json:"replayed"`
	// Duplicates, among Replayed, were already in the ingest stream from an
	// earlier replay that was interrupted before it removed them; the
	// stream stored them once.
	Duplicates uint64 `json:"duplicates"`
	// Skipped counts entries that cannot be replayed, by why; they stay in
	// the dead letters.
	Skipped map[string]uint64 `json:"skipped"`
	// Failed entries could not be republished; they stay in the dead
	// letters. Errors holds the first few reasons.
	Failed uint64   `json:"failed"`
	Errors []string `json:"errors,omitempty"`
	// NotRemoved entries were republished but could not be removed from
	// the dead letters; replaying them again publishes them under the
	// same message id, so the worker still stores them once.
	NotRemoved uint64 `json:"not_removed"`
	// Interrupted is set when the context ended the replay early.
	Interrupted bool          `json:"interrupted"`
	Elapsed     time.Duration `json:"elapsed"`
}

// SkippedTotal is the number of entries skipped for any reason.
func (r ReplayResult) SkippedTotal() uint64 {
	var n uint64
	for _, c := range r.Skipped {
		n += c
	}
	return n
}

// ReplayMsgIDPrefix starts the Nats-Msg-Id of a replayed line; the rest is
// the entry's dead-letter sequence, so replaying an entry again (after an
// interrupted replay) is de-duplicated by the ingest stream.
const ReplayMsgIDPrefix = "replay."

// Reasons an entry is skipped.
const (
	skipTruncated  = "truncated: the gateway kept only the first part of a line over its maximum length"
	skipUnreadable = "not a jetline dead letter (no readable Jetline-Dlq-* headers)"
	skipNoSubject  = "no ingest subject recorded (" + deadletter.HeaderSubject + ")"
)

// maxErrors bounds ReplayResult.Errors.
const maxErrors = 5

// Replay republishes the dead letters opts.Filter selects to the ingest
// stream, oldest first, each on its original subject with its original
// headers, which include topology.HeaderLineID (the line's identity, which
// workers key its row by), plus Nats-Msg-Id "replay.<dead-letter seq>". An
// entry is removed from the dead letters
// only once the ingest stream has acknowledged its republication, so an
// interrupted replay loses nothing, and running it again republishes under
// the same ids. Truncated lines (reason too_long) cannot be replayed and
// are skipped and counted. Entries written while it runs (a replayed line
// that fails again) are left for the next replay, so a line that keeps
// failing cannot keep a replay going.
//
// When ctx ends, Replay stops reading, waits for the acknowledgements of
// what it already published (removing those entries), and returns with
// Interrupted set and a nil error. It stops with an error at the first
// line the ingest stream refuses (full, say), after settling what is in
// flight.
func Replay(ctx context.Context, js jetstream.JetStream, opts ReplayOptions) (ReplayResult, error) {
	start := time.Now()
	res := ReplayResult{DryRun: opts.DryRun, Skipped: map[string]uint64{}}
	dl, err := deadLetters(ctx, js)
	if err != nil {
		return res, err
	}
	if _, err := ingest(ctx, js); err != nil {
		return res, err
	}
	// The total makes progress readable; for sequence and time ranges it
	// costs a pass over the headers, small beside the replay itself.
	sum, err := List(ctx, js, opts.Filter)
	if err != nil {
		if ctx.Err() != nil {
			res.Interrupted = true
			return res, nil
		}
		return res, err
	}
	res.Selected = sum.Entries

	r := newReplayer(js, dl, opts)
	if opts.Progress != nil {
		stop := r.reportProgress(opts.Progress, res.Selected, start)
		defer stop()
	}
	readCtx, stopReading := context.WithCancelCause(ctx)
	defer stopReading(nil)
	confirmed := make(chan struct{})
	go func() {
		defer close(confirmed)
		r.confirm(stopReading)
	}()
	scanErr := scan(readCtx, dl, opts.Filter, false, func(l letter) error { return r.replay(readCtx, l) })
	close(r.inflight)
	<-confirmed

	r.fill(&res)
	res.Elapsed = time.Since(start)
	switch {
	case scanErr != nil && ctx.Err() != nil:
		// The reading stopped because ctx ended. (Had it finished first,
		// the replay was complete, not interrupted.)
		res.Interrupted = true
		return res, nil
	case ctx.Err() == nil && context.Cause(readCtx) != nil:
		// The confirming goroutine stopped the reading: a publish failed.
		return res, context.Cause(readCtx)
	case scanErr != nil:
		return res, scanErr
	}
	return res, nil
}

// replayer carries one replay's state between the reading goroutine, which
// publishes, and the confirming one, which waits for acks and removes.
type replayer struct {
	js      jetstream.JetStream
	dl      jetstream.Stream
	opts    ReplayOptions
	limiter *rate.Limiter
	// inflight holds published lines in publish order; its capacity is the
	// window, and bytes bounds their size.
	inflight chan published
	bytes    *semaphore.Weighted

	replayed, duplicates, failed, notRemoved atomic.Uint64

	mu      sync.Mutex
	skipped map[string]uint64
	errs    []string
}

// published is a line waiting for its ack.
type published struct {
	seq  uint64
	size int64
	ack  jetstream.PubAckFuture
}

func newReplayer(js jetstream.JetStream, dl jetstream.Stream, opts ReplayOptions) *replayer {
	if opts.Window <= 0 {
		opts.Window = 256
	}
	if opts.WindowBytes <= 0 {
		opts.WindowBytes = 32 << 20
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 30 * time.Second
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 5 * time.Second
	}
	r := &replayer{
		js: js, dl: dl, opts: opts, skipped: map[string]uint64{},
		inflight: make(chan published, opts.Window),
		bytes:    semaphore.NewWeighted(opts.WindowBytes),
	}
	if opts.Rate > 0 {
		// A burst of a hundredth of a second's worth keeps the pace even
		// without waking for every line at high rates.
		r.limiter = rate.NewLimiter(rate.Limit(opts.Rate), max(1, int(opts.Rate/100)))
	}
	return r
}

// replay handles one entry: skip it, count it (dry run) or publish it.
func (r *replayer) replay(ctx context.Context, l letter) error {
	if why := skipReason(l); why != "" {
		r.mu.Lock()
		r.skipped[why]++
		r.mu.Unlock()
		return nil
	}
	if r.opts.DryRun {
		r.replayed.Add(1)
		return nil
	}
	if r.limiter != nil {
		if err := r.limiter.Wait(ctx); err != nil {
			return ctx.Err()
		}
	}
	// A line larger than the whole window still goes, alone.
	size := min(int64(len(l.Entry.Data)), r.opts.WindowBytes)
	if err := r.bytes.Acquire(ctx, size); err != nil {
		return ctx.Err()
	}
	// No WithExpectStream: its header would be stored with the line and
	// copied into any later dead letter of it, which INGEST_DLQ would then
	// refuse. Replay checked that INGEST exists; its subjects are ingest.>.
	ack, err := r.js.PublishMsgAsync(replayMsg(l.Entry))
	if err != nil {
		r.bytes.Release(size)
		r.fail(l.Entry.Seq, err)
		return fmt.Errorf("republish dead letter %d to %s: %w", l.Entry.Seq, l.Entry.Subject, err)
	}
	// The confirming goroutine drains inflight until it is closed, so
	// this send never blocks for good, and a published line is always
	// settled.
	r.inflight <- published{seq: l.Entry.Seq, size: size, ack: ack}
	return nil
}

// removers is how many entries are removed at once. Each removal is a
// request and reply; one at a time they would bound a replay to a few
// thousand lines a second.
const removers = 8

// confirm waits for each published line's ack, in order, and has its entry
// removed. It stops the reading at the first failure.
func (r *replayer) confirm(stopReading context.CancelCauseFunc) {
	remove := make(chan uint64, r.opts.Window)
	var wg sync.WaitGroup
	for range removers {
		wg.Go(func() {
			for seq := range remove {
				r.remove(seq)
			}
		})
	}
	defer wg.Wait()
	defer close(remove)
	for p := range r.inflight {
		timer := time.NewTimer(r.opts.AckTimeout)
		var err error
		var dup bool
		select {
		case ack := <-p.ack.Ok():
			dup = ack.Duplicate
		case err = <-p.ack.Err():
		case <-timer.C:
			err = fmt.Errorf("no acknowledgement in %s", r.opts.AckTimeout)
		}
		timer.Stop()
		r.bytes.Release(p.size)
		if err != nil {
			r.fail(p.seq, err)
			stopReading(fmt.Errorf("republish dead letter %d: %w (it stays in %s; fix the cause and replay again)", p.seq, err, deadletter.StreamName))
			continue
		}
		r.replayed.Add(1)
		if dup {
			r.duplicates.Add(1)
		}
		remove <- p.seq
	}
}

// remove removes a replayed entry. It runs even when the replay is being
// interrupted: the line is in the ingest stream now.
func (r *replayer) remove(seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.dl.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		r.notRemoved.Add(1)
		r.note(fmt.Sprintf("remove dead letter %d after replaying it: %v", seq, err))
	}
}

func (r *replayer) fail(seq uint64, err error) {
	r.failed.Add(1)
	r.note(fmt.Sprintf("dead letter %d: %v", seq, err))
}

func (r *replayer) note(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < maxErrors {
		r.errs = append(r.errs, msg)
	}
}

// fill copies the counts into res.
func (r *replayer) fill(res *ReplayResult) {
	res.Replayed, res.Duplicates = r.replayed.Load(), r.duplicates.Load()
	res.Failed, res.NotRemoved = r.failed.Load(), r.notRemoved.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	maps.Copy(res.Skipped, r.skipped)
	res.Errors = slices.Clone(r.errs)
}

// reportProgress writes a progress line to w every ProgressEvery until the
// returned stop is called.
func (r *replayer) reportProgress(w io.Writer, total uint64, start time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.opts.ProgressEvery)
		defer t.Stop()
		var last uint64
		lastAt := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				var res ReplayResult
				res.Skipped = map[string]uint64{}
				r.fill(&res)
				n := res.Replayed + res.SkippedTotal() + res.Failed
				lineRate := float64(res.Replayed-last) / now.Sub(lastAt).Seconds()
				last, lastAt = res.Replayed, now
				fmt.Fprintf(w, "replay: %d/%d done (%s), %.0f lines/s, %d skipped, %d failed\n",
					n, total, percent(n, total), lineRate, res.SkippedTotal(), res.Failed)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// skipReason says why l cannot be replayed, or "" if it can.
func skipReason(l letter) string {
	switch {
	case l.Err != nil:
		return skipUnreadable
	case l.Entry.Reason == deadletter.ReasonTooLong || l.Entry.Truncated():
		return skipTruncated
	case topology.Source(l.Entry.Subject) == "":
		return skipNoSubject
	}
	return ""
}

// replayMsg returns the message that puts e's line back on its ingest
// subject: the line's own headers, without the dead-letter ones and
// without JetStream's (a stale Nats-Msg-Id would be de-duplicated away),
// plus a replay message id. The line's headers hold its identity
// (topology.HeaderLineID), which workers write on every dead letter, so
// the replayed line keys the row the line would have had, however often
// it is replayed. An entry without one (written before workers set it) is
// identified by its replay message id instead: stored once, though not
// recognised as the line it was.
func replayMsg(e deadletter.Entry) *nats.Msg {
	h := nats.Header{}
	for k, v := range e.Header {
		if hasPrefixFold(k, "Jetline-Dlq-") || hasPrefixFold(k, "Nats-") {
			continue
		}
		h[k] = slices.Clone(v)
	}
	h.Set(topology.HeaderMsgID, ReplayMsgIDPrefix+strconv.FormatUint(e.Seq, 10))
	return &nats.Msg{Subject: e.Subject, Header: h, Data: e.Data}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// percent formats n of total as a percentage.
func percent(n, total uint64) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(total))
}

// WriteReplayResult writes the summary of a replay.
func WriteReplayResult(out io.Writer, res ReplayResult) error {
	w := bufio.NewWriter(out)
	verb := "replayed"
	if res.DryRun {
		verb = "would replay"
	}
	fmt.Fprintf(w, "%s %d of %d selected", verb, res.Replayed, res.Selected)
	if res.Duplicates > 0 {
		fmt.Fprintf(w, " (%d already republished by an earlier, interrupted replay; stored once)", res.Duplicates)
	}
	fmt.Fprintf(w, "; skipped %d; failed %d", res.SkippedTotal(), res.Failed)
	if !res.DryRun {
		fmt.Fprintf(w, "; in %s", res.Elapsed.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	for _, why := range slices.Sorted(maps.Keys(res.Skipped)) {
		fmt.Fprintf(w, "  skipped %d: %s\n", res.Skipped[why], why)
	}
	if res.NotRemoved > 0 {
		fmt.Fprintf(w, "  %d replayed but still in %s: replaying them again is harmless (same message id and line id)\n", res.NotRemoved, deadletter.StreamName)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if res.Interrupted {
		fmt.Fprintln(w, "interrupted: entries not yet replayed are still in "+deadletter.StreamName+"; run the same command again to continue")
	}
	return w.Flush()
}
