package worker

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestBatchResetDropsFrames checks that a batch done with keeps no
// reference to its frames or their lines in the buffers it reuses, past
// their new length included: a slot left holding one kept its frame alive
// for as long as no later batch was as long (fails with b.msgs or the
// rows' slots left as they were).
func TestBatchResetDropsFrames(t *testing.T) {
	t.Parallel()
	w := &Worker{router: rawRouter(t, &recordingStore{})}
	b := newBatch(8, w.router)
	md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: 1}, NumDelivered: 1}
	for range 3 {
		m := &testMsg{data: []byte(`{"a":1}` + "\n" + `{"b":2}` + "\n"), md: md}
		b.msgs = append(b.msgs, m)
		w.split(b, m)
	}
	if n := b.groups[0].rows.Len(); n != 6 {
		t.Fatalf("the batch holds %d rows, want 6", n)
	}
	b.reset()

	for i, m := range b.msgs[:cap(b.msgs)] {
		if m != nil {
			t.Errorf("msgs[%d] still holds a frame", i)
		}
	}
	for i, it := range b.items[:cap(b.items)] {
		if it.line.Data != nil {
			t.Errorf("items[%d] still holds a line", i)
		}
	}
	for ti := range b.groups[0].rows.tables {
		for i, v := range b.groups[0].rows.tables[ti].slots {
			if v != nil {
				t.Errorf("table %d's slot %d still holds %T", ti, i, v)
			}
		}
	}
}
