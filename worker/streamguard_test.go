package worker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/testenv"
)

func TestGuardStreamSequences(t *testing.T) {
	b := setupStore(t)
	ctx := t.Context()
	logger := testenv.Logger(t)
	tables := []Table{b.store.Table()}
	first := time.Date(2026, 11, 1, 10, 0, 0, 123456789, time.UTC)
	second := first.Add(time.Hour)

	// The first worker records the stream; the same stream passes again.
	for range 2 {
		if err := GuardStreamSequences(ctx, b.pool, "INGEST", first, tables, logger); err != nil {
			t.Fatalf("same stream: %v", err)
		}
	}
	// A recreated stream while the table is empty: recorded, then passes.
	if err := GuardStreamSequences(ctx, b.pool, "INGEST", second, tables, logger); err != nil {
		t.Fatalf("recreated stream, empty table: %v", err)
	}
	if err := GuardStreamSequences(ctx, b.pool, "INGEST", second, tables, logger); err != nil {
		t.Fatalf("recreated stream recorded: %v", err)
	}

	// Rows keyed by the second stream's sequences, then a third stream:
	// refused, naming the table and what to do.
	if _, err := b.store.Write(ctx, rawRows(1, 1)); err != nil {
		t.Fatal(err)
	}
	err := GuardStreamSequences(ctx, b.pool, "INGEST", second.Add(time.Hour), tables, logger)
	if !errors.Is(err, ErrStreamRecreated) {
		t.Fatalf("recreated stream with rows: got %v, want %v", err, ErrStreamRecreated)
	}
	for _, want := range []string{`"events"`, "RENAME"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	// Another stream's record is its own.
	if err := GuardStreamSequences(ctx, b.pool, "OTHER", second.Add(time.Hour), tables, logger); err != nil {
		t.Fatalf("other stream: %v", err)
	}
	// Tables keyed by something else do not hold the stream's sequences.
	keyed := Table{Name: "tweets", Key: []string{"id"}}
	if err := GuardStreamSequences(ctx, b.pool, "INGEST", second.Add(2*time.Hour), []Table{keyed}, logger); err != nil {
		t.Fatalf("table keyed by id: %v", err)
	}
}
