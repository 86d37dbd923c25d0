package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress writes what the run is doing, stamped with the time since it
// began, so that a minute-long run is not silent. Safe for concurrent use.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, start: time.Now()}
}

// step reports a step of the run.
func (p *progress) step(format string, args ...any) {
	p.print("", format, args...)
}

// warn reports something that does not fail the run but may skew it.
func (p *progress) warn(format string, args ...any) {
	p.print("warning: ", format, args...)
}

func (p *progress) print(prefix, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %s%s\n", time.Since(p.start).Seconds(), prefix, fmt.Sprintf(format, args...))
}

// Elapsed returns the time since the run began.
func (p *progress) Elapsed() time.Duration { return time.Since(p.start) }
