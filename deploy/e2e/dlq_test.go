package e2e

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

// deadLetters returns every entry of the dead-letter stream, oldest
// first, or none if the stream does not exist.
func (b *bundle) deadLetters(t *testing.T) []deadletter.Entry {
	t.Helper()
	s, err := b.js.Stream(t.Context(), deadletter.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("stream %s: %v", deadletter.StreamName, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s info: %v", deadletter.StreamName, err)
	}
	var out []deadletter.Entry
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged or deleted
		}
		if err != nil {
			t.Fatalf("read dead letter %d: %v", seq, err)
		}
		e, err := deadletter.Decode(m)
		if err != nil {
			t.Fatalf("decode dead letter: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// checkNoDeadLetters fails the test if any line was dead-lettered: the
// faults the tests inject are all transient, so every line must land.
func (b *bundle) checkNoDeadLetters(t *testing.T) {
	t.Helper()
	if dl := b.deadLetters(t); len(dl) > 0 {
		t.Errorf("%d lines were dead-lettered, the first: %s", len(dl), describeEntry(dl[0]))
	}
}

// describeEntry sums up a dead letter for a failure message.
func describeEntry(e deadletter.Entry) string {
	return fmt.Sprintf("seq %d, reason %s (%s) after %d deliveries: %s; data %.80q",
		e.StreamSeq, e.Reason, e.Class, e.Deliveries, e.Error, e.Data)
}
