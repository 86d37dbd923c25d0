package privatepg

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetline/jetline/shared/devkit/childproc"
)

// TestStopCutShort checks that a fast shutdown cut short kills postgres
// and all its backends, so the server starts again on its data directory.
func TestStopCutShort(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{Dir: filepath.Join(tempDir(t), "data"), Settings: map[string]string{"fsync": "off"}})
	connect(t, srv.URL()) // a backend, which the postmaster's group does not hold

	postmaster := srv.Process()
	cut, cancel := context.WithCancel(t.Context())
	cancel()
	if err := srv.Stop(cut); !errors.Is(err, childproc.ErrKilled) || !strings.Contains(err.Error(), "after SIGINT when the stop was cut short (context canceled)") {
		t.Fatalf("Stop with a done context = %v, want postgres killed during its fast shutdown", err)
	}
	if !postmaster.Exited() || srv.Process() != nil {
		t.Fatalf("after Stop, the postmaster's Exited() = %t and Process() = %v; want true and nil", postmaster.Exited(), srv.Process())
	}
	if pids := srv.Pids(); len(pids) > 0 {
		t.Fatalf("processes %v still alive after a Stop cut short", pids)
	}
	if err := srv.Restart(t.Context()); err != nil {
		t.Fatalf("restart after a Stop cut short: %v", err)
	}
	if srv.Process() == nil || srv.Process().Pid() == postmaster.Pid() {
		t.Fatalf("Process() after Restart = %v, want a new postmaster", srv.Process())
	}
}
