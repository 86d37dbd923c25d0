package privatepg

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// helperDirEnv makes TestDieWithParentHelper start a server in that
// directory instead of returning at once.
const helperDirEnv = "PRIVATEPG_TEST_HELPER_DIR"

// TestDieWithParent kills a process running a server with SIGKILL, which
// skips every cleanup, and checks that postgres dies with it.
func TestDieWithParent(t *testing.T) {
	t.Parallel()
	if _, err := findBinDir(t.Context(), ""); err != nil {
		skipWithoutBinaries(t, err)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestDieWithParentHelper$", "-test.v")
	dir := filepath.Join(tempDir(t), "data")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	ready := false
	var lines []string
	scanner := bufio.NewScanner(out)
	for !ready && scanner.Scan() {
		lines = append(lines, scanner.Text())
		ready = strings.Contains(scanner.Text(), "postgres ready")
	}
	if !ready {
		t.Fatalf("helper exited without starting postgres:\n%s", strings.Join(lines, "\n"))
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		t.Fatal(err)
	}
	if n := len(dirProcs(dir)); n < 2 {
		t.Fatalf("found %d processes working in %s, want the postmaster and its helpers", n, dir)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// Nobody kills the backends here: they must notice the postmaster died.
	deadline := time.Now().Add(5 * time.Second)
	for len(dirProcs(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if pids := dirProcs(dir); len(pids) > 0 {
		t.Fatalf("postgres processes %v survived their parent", pids)
	}
}

// TestDieWithParentHelper is the process TestDieWithParent kills.
func TestDieWithParentHelper(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	startServer(t, Options{Dir: dir, Settings: map[string]string{"fsync": "off"}})
	time.Sleep(time.Minute)
}
