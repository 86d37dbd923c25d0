package childproc

import (
	"io"
	"sync"
)

// SyncWriter serialises writes to W, so that each Write lands whole when a
// program's own log and the output of its children go to one place. Safe
// for concurrent use.
type SyncWriter struct {
	mu sync.Mutex
	W  io.Writer
}

// Write writes p to W while no other Write runs.
func (s *SyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.W.Write(p)
}
