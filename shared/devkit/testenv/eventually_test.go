package testenv

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestEventually(t *testing.T) {
	t.Parallel()
	n := 0
	Eventually(t, 5*time.Second, "the third call", func() error {
		if n++; n < 3 {
			return fmt.Errorf("call %d", n)
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}

	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(rec, 50*time.Millisecond, "what never happens", func() error { return errors.New("still 0 of 5") })
	}()
	<-done
	if !strings.Contains(rec.msg, "what never happens") || !strings.Contains(rec.msg, "still 0 of 5") {
		t.Fatalf("timeout message %q names neither the wait nor the last error", rec.msg)
	}
}

// recorder is a testing.TB whose Fatalf records its message and ends the
// goroutine, as the real one does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
