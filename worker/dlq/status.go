package dlq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/deadletter"
	"github.com/jetline/jetline/shared/topology"
)

// FullPercent is how full the ingest stream may get before [TakeStatus]
// warns that the gateway is about to push back on senders.
const FullPercent = 90

// Status is one look at the pipeline: the ingest stream, the workers'
// consumer and the dead letters, sampled twice to see how they move.
type Status struct {
	At time.Time `json:"at"`
	// Interval is the time between the two readings.
	Interval time.Duration `json:"-"`
	Seconds  float64       `json:"interval_seconds"`
	Ingest   IngestStatus  `json:"ingest"`
	// Consumer is nil when no worker has created it yet.
	Consumer *ConsumerStatus `json:"consumer"`
	// DeadLetters is nil when nothing has been dead-lettered yet.
	DeadLetters *DeadLetterStatus `json:"dead_letters"`
	Rates       Rates             `json:"rates"`
	// Verdict says in a sentence how things go; Warnings list what needs
	// a look.
	Verdict  string   `json:"verdict"`
	Warnings []string `json:"warnings,omitempty"`
}

// IngestStatus is the state of the ingest stream.
type IngestStatus struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// MaxBytes is the stream's byte limit (INGEST_MAX_BYTES), FullPercent
	// how much of it Bytes is.
	MaxBytes    int64   `json:"max_bytes"`
	FullPercent float64 `json:"full_percent"`
	LastSeq     uint64  `json:"last_seq"`
}

// ConsumerStatus is the state of the workers' shared consumer.
type ConsumerStatus struct {
	// Pending lines are waiting to be fetched.
	Pending uint64 `json:"pending"`
	// AckPending lines are fetched and being stored.
	AckPending int `json:"ack_pending"`
	// Redelivered lines, among AckPending, were delivered before.
	Redelivered int `json:"redelivered"`
	// Waiting is the number of fetch requests waiting for lines: one per
	// idle worker loop (each worker runs WORKER_CONCURRENCY loops; a loop
	// busy storing a batch has none), so busy workers do not show here.
	Waiting int `json:"waiting_pulls"`
	// MaxAckPending is the consumer's cap on AckPending.
	MaxAckPending int `json:"max_ack_pending"`
}

// DeadLetterStatus is the size of the dead-letter stream.
type DeadLetterStatus struct {
	Messages uint64            `json:"messages"`
	Bytes    uint64            `json:"bytes"`
	ByReason map[string]uint64 `json:"by_reason"`
	LastSeq  uint64            `json:"last_seq"`
}

// Rates are lines per second over the sampling interval.
type Rates struct {
	// In is lines received into the ingest stream.
	In float64 `json:"in_per_sec"`
	// Out is lines that left it: stored, or dead-lettered and acknowledged.
	Out float64 `json:"out_per_sec"`
	// DeadLetters is entries written to the dead-letter stream.
	DeadLetters float64 `json:"dead_letters_per_sec"`
	// Backlog is how fast the ingest stream grows (negative: shrinks).
	Backlog float64 `json:"backlog_per_sec"`
}

// sample is one reading of the three streams' state.
type sample struct {
	at       time.Time
	ingest   IngestStatus
	consumer *ConsumerStatus
	dead     *DeadLetterStatus
}

// TakeStatus reads the state of the pipeline twice, interval apart, and
// judges it. It returns [ErrNoIngest] when the ingest stream does not
// exist, and ctx's error when ctx ends between the readings.
func TakeStatus(ctx context.Context, js jetstream.JetStream, interval time.Duration) (Status, error) {
	first, err := takeSample(ctx, js)
	if err != nil {
		return Status{}, err
	}
	select {
	case <-ctx.Done():
		return Status{}, ctx.Err()
	case <-time.After(interval):
	}
	last, err := takeSample(ctx, js)
	if err != nil {
		return Status{}, err
	}
	st := Status{At: last.at, Interval: last.at.Sub(first.at), Ingest: last.ingest, Consumer: last.consumer, DeadLetters: last.dead}
	secs := st.Interval.Seconds()
	st.Seconds = secs
	perSec := func(from, to uint64) float64 { return (float64(to) - float64(from)) / secs }
	st.Rates.In = perSec(first.ingest.LastSeq, last.ingest.LastSeq)
	st.Rates.Backlog = perSec(first.ingest.Messages, last.ingest.Messages)
	// The ingest stream keeps a line until it is acknowledged, so what
	// came in and did not stay went out.
	st.Rates.Out = max(st.Rates.In-st.Rates.Backlog, 0)
	if first.dead != nil && last.dead != nil {
		st.Rates.DeadLetters = perSec(first.dead.LastSeq, last.dead.LastSeq)
	} else if last.dead != nil {
		st.Rates.DeadLetters = float64(last.dead.LastSeq) / secs
	}
	st.Verdict, st.Warnings = judge(st)
	return st, nil
}

func takeSample(ctx context.Context, js jetstream.JetStream) (sample, error) {
	s := sample{at: time.Now()}
	in, err := ingest(ctx, js)
	if err != nil {
		return s, err
	}
	info, err := in.Info(ctx)
	if err != nil {
		return s, fmt.Errorf("read stream %s: %w", topology.StreamName, err)
	}
	s.ingest = IngestStatus{Messages: info.State.Msgs, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes, LastSeq: info.State.LastSeq}
	if info.Config.MaxBytes > 0 {
		s.ingest.FullPercent = 100 * float64(info.State.Bytes) / float64(info.Config.MaxBytes)
	}

	cons, err := in.Consumer(ctx, topology.ConsumerName)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return s, fmt.Errorf("read consumer %s: %w", topology.ConsumerName, err)
	default:
		ci := cons.CachedInfo()
		s.consumer = &ConsumerStatus{Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting, MaxAckPending: ci.Config.MaxAckPending}
	}

	dl, err := deadLetters(ctx, js)
	if errors.Is(err, ErrNoDeadLetters) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	dinfo, err := dl.Info(ctx, jetstream.WithSubjectFilter(deadletter.StreamSubjects))
	if err != nil {
		return s, fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	s.dead = &DeadLetterStatus{Messages: dinfo.State.Msgs, Bytes: dinfo.State.Bytes, LastSeq: dinfo.State.LastSeq, ByReason: map[string]uint64{}}
	for subject, n := range dinfo.State.Subjects {
		s.dead.ByReason[groupOf(subject).Reason] += n
	}
	return s, nil
}

// judge puts st in plain words.
func judge(st Status) (verdict string, warnings []string) {
	if st.Ingest.FullPercent >= FullPercent {
		warnings = append(warnings, fmt.Sprintf("%s is %.0f%% full: when full, the gateway refuses lines and senders wait (raise INGEST_MAX_BYTES or add workers)", topology.StreamName, st.Ingest.FullPercent))
	}
	if st.DeadLetters != nil && st.Rates.DeadLetters > 0 {
		warnings = append(warnings, fmt.Sprintf("lines are being dead-lettered (%.1f/s): see worker dlq list", st.Rates.DeadLetters))
	}
	if c := st.Consumer; c != nil && c.Redelivered > 0 {
		warnings = append(warnings, fmt.Sprintf("%d lines in flight were delivered before: workers failed or timed out storing them (see worker logs)", c.Redelivered))
	}
	c := st.Consumer
	if c == nil {
		if st.Ingest.Messages > 0 {
			return fmt.Sprintf("no worker has started: consumer %s does not exist and %d lines are waiting", topology.ConsumerName, st.Ingest.Messages), warnings
		}
		return fmt.Sprintf("no worker has started yet (consumer %s does not exist)", topology.ConsumerName), warnings
	}
	backlog := c.Pending + uint64(c.AckPending)
	r := st.Rates
	switch {
	case backlog == 0 && r.In == 0:
		verdict = "idle: nothing waiting, nothing arriving"
	case backlog == 0:
		verdict = fmt.Sprintf("keeping up: %.0f lines/s arriving, nothing waiting", r.In)
	case r.Out == 0 && c.AckPending == 0 && c.Waiting == 0:
		verdict = fmt.Sprintf("stalled: %d lines waiting and no worker fetching (are workers running?)", backlog)
	case r.Out == 0:
		verdict = fmt.Sprintf("stalled: %d lines waiting, workers hold %d but stored none in %s (database down? see worker logs)", backlog, c.AckPending, st.Interval.Round(100*time.Millisecond))
	case r.Backlog > 0:
		verdict = fmt.Sprintf("backlog growing by %.0f lines/s (%.0f in, %.0f out), %d waiting: add workers or check the database", r.Backlog, r.In, r.Out, backlog)
	case r.Backlog < 0:
		eta := time.Duration(float64(backlog) / -r.Backlog * float64(time.Second))
		verdict = fmt.Sprintf("draining: %d waiting, shrinking by %.0f lines/s, empty in about %s", backlog, -r.Backlog, eta.Round(time.Second))
	default:
		verdict = fmt.Sprintf("steady: %d waiting, %.0f lines/s in and out", backlog, r.Out)
	}
	return verdict, warnings
}

// WriteStatus writes st as one screen for a terminal.
func WriteStatus(out io.Writer, st Status) error {
	w := bufio.NewWriter(out)
	in := st.Ingest
	fmt.Fprintf(w, "%-11s %d lines, %s", topology.StreamName, in.Messages, Bytes(in.Bytes))
	if in.MaxBytes > 0 {
		fmt.Fprintf(w, " of %s (%.1f%% full)", Bytes(uint64(in.MaxBytes)), in.FullPercent)
	}
	fmt.Fprintln(w)
	if c := st.Consumer; c != nil {
		fmt.Fprintf(w, "%-11s %d to fetch, %d being stored (max %d), %d of them redelivered; %d fetch requests waiting (idle worker loops)\n",
			topology.ConsumerName, c.Pending, c.AckPending, c.MaxAckPending, c.Redelivered, c.Waiting)
	} else {
		fmt.Fprintf(w, "%-11s consumer does not exist yet\n", topology.ConsumerName)
	}
	fmt.Fprintf(w, "%-11s %.0f lines/s in, %.0f lines/s out, %.1f dead letters/s (over %s)\n",
		"rates", st.Rates.In, st.Rates.Out, st.Rates.DeadLetters, st.Interval.Round(100*time.Millisecond))
	if d := st.DeadLetters; d != nil {
		fmt.Fprintf(w, "%-11s %s, %s", deadletter.StreamName, Count(d.Messages, "dead letter"), Bytes(d.Bytes))
		if len(d.ByReason) > 0 {
			var parts []string
			for _, reason := range slices.Sorted(maps.Keys(d.ByReason)) {
				parts = append(parts, fmt.Sprintf("%s %d", reason, d.ByReason[reason]))
			}
			fmt.Fprintf(w, ": %s", strings.Join(parts, ", "))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "%-11s none yet\n", deadletter.StreamName)
	}
	fmt.Fprintf(w, "\n%s\n", st.Verdict)
	for _, warning := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
	return w.Flush()
}
