package testenv

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"
)

// skips counts, by reason, the tests this binary skipped because a server
// they need is missing. [Main] reports them when the tests end.
var skips struct {
	mu sync.Mutex
	n  map[string]int
}

// skip records that t is skipped for reason, then skips it.
func skip(t testing.TB, reason string) {
	t.Helper()
	skips.mu.Lock()
	if skips.n == nil {
		skips.n = map[string]int{}
	}
	skips.n[reason]++
	skips.mu.Unlock()
	t.Skip("testenv: " + reason + " (set CI=true to fail instead)")
}

// reportSkips writes to [loudOutput] one line per reason saying how many
// tests were skipped, or nothing if none was.
func reportSkips() {
	skips.mu.Lock()
	defer skips.mu.Unlock()
	if len(skips.n) == 0 {
		return
	}
	w, closeW := loudOutput()
	defer closeW()
	writeSkips(w, skips.n)
}

// writeSkips writes the lines of reportSkips for the counts n.
func writeSkips(w io.Writer, n map[string]int) {
	reasons := make([]string, 0, len(n))
	for r := range n {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		first, _, _ := strings.Cut(r, "\n")
		fmt.Fprintf(w, "testenv: %s: SKIPPED %d tests: %s (set CI=true to fail instead)\n", binaryName(), n[r], first)
	}
}

// loudOutput returns where a line is seen in plain `go test ./...`
// output. go test shows a passing package's own output only with -v, so a
// line on the binary's stderr would vanish; the go command's stderr does
// not. On Linux the test binary is the go command's child, and
// /proc/<parent>/fd/2 is that stderr. Elsewhere, with -v, or when the
// parent is not the go command (a binary run by hand), it is the binary's
// own stderr. A cached result is replayed without the line: go test does
// not recheck inputs outside the module, so the run that skipped is cached
// like any other.
func loudOutput() (io.Writer, func()) {
	if testing.Verbose() {
		return os.Stderr, func() {}
	}
	parent := fmt.Sprintf("/proc/%d/", os.Getppid())
	if comm, err := os.ReadFile(parent + "comm"); err != nil || strings.TrimSpace(string(comm)) != "go" {
		return os.Stderr, func() {}
	}
	f, err := os.OpenFile(parent+"fd/2", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return os.Stderr, func() {}
	}
	return f, func() { f.Close() }
}

// binaryName is the package under test ("github.com/…/worker"), or the
// binary's file name if the build information does not say.
func binaryName() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Path != "" {
		return strings.TrimSuffix(bi.Path, ".test")
	}
	return strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
}
