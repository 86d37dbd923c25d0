package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

// Purge removes the dead letters f selects, for good, and returns how many
// it removed. Selected by reason and source only, they go in one purge
// request per call, however many there are; sequence and time ranges are
// removed entry by entry. Interrupted by ctx, it returns what it removed
// so far with ctx's error.
func Purge(ctx context.Context, js jetstream.JetStream, f Filter) (uint64, error) {
	s, err := deadLetters(ctx, js)
	if err != nil {
		return 0, err
	}
	if f.BySubjectOnly() {
		return purgeSubject(ctx, s, f)
	}
	var n uint64
	err = scan(ctx, s, f, true, func(l letter) error {
		if err := s.DeleteMsg(ctx, l.Entry.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("remove dead letter %d: %w", l.Entry.Seq, err)
		}
		n++
		return nil
	})
	return n, err
}

// purgeSubject purges f's subject and counts the entries that went.
func purgeSubject(ctx context.Context, s jetstream.Stream, f Filter) (uint64, error) {
	before, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	var opts []jetstream.StreamPurgeOpt
	if !f.all() {
		opts = append(opts, jetstream.WithPurgeSubject(f.Subject()))
	}
	if err := s.Purge(ctx, opts...); err != nil {
		return 0, fmt.Errorf("purge %s of %s: %w", deadletter.StreamName, f, err)
	}
	after, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	// Entries written meanwhile make this an estimate, never an
	// underflow.
	if after.State.Msgs > before.State.Msgs {
		return 0, nil
	}
	return before.State.Msgs - after.State.Msgs, nil
}
