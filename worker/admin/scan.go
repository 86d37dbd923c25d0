package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

// letter is one dead letter as read from the stream.
type letter struct {
	// Entry is the decoded entry; Err why it could not be decoded (an
	// entry not written by jetline), in which case Entry holds only what
	// the stream says: Seq, Header, Data.
	Entry deadletter.Entry
	Err   error
	// Subject is the entry's dead-letter subject, Time when the stream
	// stored it.
	Subject string
	Time    time.Time
}

// How far the server sends entries ahead of the reader: scanBatch entries
// when only headers are read, scanBytes when lines are too (one may be as
// large as the server's maximum payload).
const (
	scanBatch = 500
	scanBytes = 16 << 20
)

// scanIdle is how long scan waits for the next entry before checking that
// one is still to come.
const scanIdle = 2 * time.Second

// scan calls fn with each dead letter f selects, oldest first, until fn
// returns an error (which scan returns) or ctx is done (ctx.Err()). It
// stops at the last entry the stream held when scan started, so entries
// written meanwhile do not keep it going. headersOnly leaves Data empty
// for callers that do not need it.
//
// It reads with an ordered consumer, which streams entries in batches
// rather than asking for each, and which the server forgets soon after
// scan returns.
func scan(ctx context.Context, s jetstream.Stream, f Filter, headersOnly bool, fn func(letter) error) error {
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	end := info.State.LastSeq
	if f.ToSeq != 0 {
		end = min(end, f.ToSeq)
	}
	if info.State.Msgs == 0 || end < max(f.FromSeq, info.State.FirstSeq) {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{f.Subject()},
		HeadersOnly:       headersOnly,
		InactiveThreshold: 30 * time.Second,
	}
	switch {
	case f.FromSeq > 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = f.FromSeq
	case !f.Since.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		since := f.Since
		cfg.OptStartTime = &since
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	// Without this check an empty selection would wait for entries
	// forever.
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil
	}
	var ahead jetstream.PullMessagesOpt = jetstream.PullMaxMessages(scanBatch)
	if !headersOnly {
		ahead = jetstream.PullMaxBytes(scanBytes)
	}
	it, err := cons.Messages(ahead)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	defer it.Stop()
	for {
		wait, cancel := context.WithTimeout(ctx, scanIdle)
		m, err := it.Next(jetstream.NextContext(wait))
		cancel()
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			// The entries left may have gone meanwhile (purged, aged out,
			// replayed by someone else): then there is nothing to wait for.
			info, ierr := cons.Info(ctx)
			if ierr == nil && info.NumPending == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
		}
		seq := meta.Sequence.Stream
		if seq > end || (!f.Until.IsZero() && meta.Timestamp.After(f.Until)) {
			return nil
		}
		if f.keepsTime(meta.Timestamp) {
			raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: seq, Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp}
			e, derr := deadletter.Decode(raw)
			if err := fn(letter{Entry: e, Err: derr, Subject: m.Subject(), Time: meta.Timestamp}); err != nil {
				return err
			}
		}
		if meta.NumPending == 0 || seq == end {
			return nil
		}
	}
}
