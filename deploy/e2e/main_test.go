package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// Paths of the programs under test, built by TestMain.
var programs struct {
	gateway string
	worker  string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		testenv.Main(m) // every test skips
	}
	start := time.Now()
	dir, err := buildPrograms()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built the gateway and worker (race=%t) into %s in %s\n", raceEnabled, dir, time.Since(start).Round(time.Millisecond))
	}
	testenv.Main(m, func() { os.RemoveAll(dir) })
}

// buildPrograms builds the gateway and the worker into a new temporary
// directory, with -race if this test binary has it, and returns the
// directory.
func buildPrograms() (string, error) {
	dir, err := os.MkdirTemp("", "jetline-e2e-bin-")
	if err != nil {
		return "", fmt.Errorf("create build directory: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/jetline/jetline/gateway/cmd/gateway", "github.com/jetline/jetline/worker/cmd/worker")
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	programs.gateway = filepath.Join(dir, "gateway")
	programs.worker = filepath.Join(dir, "worker")
	return dir, nil
}
