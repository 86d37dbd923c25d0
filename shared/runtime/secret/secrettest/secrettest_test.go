package secrettest_test

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/jetline/jetline/shared/runtime/secret/secrettest"
)

// TestRunMain is the program of TestRuns's child processes.
func TestRunMain(t *testing.T) { secrettest.Main(t, program) }

// program prints a configuration line, then fails with $FAIL if it is set,
// or says it started and runs until SIGTERM.
func program() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	fmt.Println("configuration format=" + os.Getenv("LOG_FORMAT"))
	if msg := os.Getenv("FAIL"); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
	fmt.Println("started")
	<-stop
	fmt.Println("stopped")
}

func TestRuns(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts child processes")
	}
	secrettest.Runs(t, []secrettest.Run{
		{Name: "fails", Start: func(t *testing.T, format string) *secrettest.Program {
			// The last of the environments wins.
			p := secrettest.Start(t, "TestRunMain", map[string]string{"LOG_FORMAT": format, "FAIL": "overridden"}, map[string]string{"FAIL": "cannot go on"})
			p.WantFailure(t, "cannot go on")
			return p
		}},
		{Name: "stops", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", map[string]string{"LOG_FORMAT": format})
			p.StopAfter(t, "started")
			p.WaitFor(t, "stopped")
			return p
		}},
	}, "never-printed")
}
