package e2e

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// Paths of the programs under test, built by TestMain, and of the NATS
// server the cluster tests run as processes of their own.
var programs struct {
	gateway    string
	worker     string
	natsServer string
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
		fmt.Fprintf(os.Stderr, "e2e: built the gateway, worker (race=%t) and nats-server into %s in %s\n", raceEnabled, dir, time.Since(start).Round(time.Millisecond))
	}
	testenv.Main(m, func() { os.RemoveAll(dir) })
}

// buildPrograms builds the gateway and the worker into a new temporary
// directory, with -race if this test binary has it, and nats-server from
// the module go.mod names, without: it is not under test, and the race
// detector would slow the replication the cluster tests measure. It
// returns the directory.
func buildPrograms() (string, error) {
	dir, err := os.MkdirTemp("", "jetline-e2e-bin-")
	if err != nil {
		return "", fmt.Errorf("create build directory: %w", err)
	}
	var race []string
	if raceEnabled {
		race = []string{"-race"}
	}
	err = testenv.Build(dir, race, "github.com/jetline/jetline/gateway/cmd/gateway", "github.com/jetline/jetline/worker/cmd/worker")
	if err == nil {
		err = testenv.Build(dir, nil, "github.com/nats-io/nats-server/v2")
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	programs.gateway = filepath.Join(dir, "gateway")
	programs.worker = filepath.Join(dir, "worker")
	programs.natsServer = filepath.Join(dir, "nats-server")
	return dir, nil
}
