// Command bench measures jetline end to end on this machine. It generates
// tweet-shaped NDJSON lines once, starts an embedded NATS server and a
// private Postgres (fsync on) in a temporary directory, measures the raw
// JetStream publish rate of those lines, then runs the gateway and the
// workers as child processes and measures the same lines from the first
// byte sent over TCP to the last row committed. It prints the rates, their
// ratio against the goal, line-to-row latency, and each process's CPU and
// peak memory, then stops everything and removes the directory.
//
// -mode typed does the same through a pipeline spec into its typed table.
// -mode connections measures the gateway per connection instead of per
// line: its memory per idle connection, then plain and TLS connections per
// second, one line each, without workers.
//
// Usage (from the repository root, after `make build`):
//
//	go run ./deploy/bench [-mode e2e|typed|connections]
//	                      [-lines 400000] [-conns 4] [-workers 2]
//	                      [-worker-concurrency N] [-batch N]
//	                      [-pg name=value]... [-env NAME=VALUE]... [-json]
//	                      [-idle-conns 10000] [-clients 32] [-duration 10s]
//
// It exits non-zero only when the run fails (a program dies, a receipt is
// wrong, a row is missing or twice); missing the goal is reported, not
// failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		stop()
		os.Exit(1)
	}
}
