package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/testenv"
)

// Paths of the programs under test, built by TestMain.
var programs struct {
	gateway string
	worker  string
}

// buildDirPrefix starts the name of the directory the programs are built
// into; the process id follows, so a later run can tell a directory whose
// run has ended.
const buildDirPrefix = "jetline-e2e-bin-"

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
	testenv.Main(m)
}

// buildPrograms builds the gateway and the worker into a new temporary
// directory, with -race if this test binary has it, and returns the
// directory.
//
// testenv.Main ends the process without returning, so the directory cannot
// be removed by the run that made it; each run removes those of runs that
// have ended instead.
func buildPrograms() (string, error) {
	removeStaleBuilds()
	dir, err := os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
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

// removeStaleBuilds removes the build directories of runs whose process
// no longer exists. Errors are ignored: a directory left behind costs disk
// space, not correctness.
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, d := range dirs {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), buildDirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() || processExists(pid) {
			continue
		}
		os.RemoveAll(d)
	}
}

// processExists reports whether a process with this id exists (EPERM: it
// does, under another user).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
