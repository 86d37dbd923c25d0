package gateway

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

// TestWindowSharesTotalBudget checks that connections together stay within
// the gateway-wide byte budget: a second window waits for room that only
// an acknowledgement on the first can free.
func TestWindowSharesTotalBudget(t *testing.T) {
	t.Parallel()
	total := semaphore.NewWeighted(100)
	a := newWindow(10, 100, total)
	b := newWindow(10, 100, total)
	ctx := t.Context()

	if err := a.reserve(ctx, 1, 60); err != nil {
		t.Fatal(err)
	}
	a.push(&entry{lines: 1, size: 60})

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.reserve(short, 1, 60); err == nil {
		t.Fatal("second window got 60 bytes while the first holds 60 of a 100-byte budget")
	}
	b.mu.Lock()
	lines, bytes := b.lines, b.bytes
	b.mu.Unlock()
	if lines != 0 || bytes != 0 {
		t.Fatalf("failed reserve left lines=%d bytes=%d in the window", lines, bytes)
	}

	got := make(chan error, 1)
	go func() { got <- b.reserve(ctx, 1, 60) }()
	select {
	case err := <-got:
		t.Fatalf("reserve returned %v before room was freed", err)
	case <-time.After(20 * time.Millisecond):
	}
	a.pop()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reserve still blocked after the first window's line was acknowledged")
	}

	// A session that ends with lines unacknowledged gives their budget back.
	b.push(&entry{lines: 1, size: 60})
	b.releaseTotal()
	if !total.TryAcquire(100) {
		t.Fatal("budget not returned after releaseTotal")
	}
}
