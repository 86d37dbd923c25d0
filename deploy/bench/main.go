// Command bench measures jetline end to end on this machine: it generates
// NDJSON lines, starts an embedded NATS and a private Postgres (fsync on),
// measures the raw JetStream publish rate of the lines, then sends them
// through the gateway and the workers (as `make build` leaves them) to the
// last row committed, and against one bare COPY of them. It reports the
// rates and their ratio to the goal, frames/s, settle latency, and each
// process's CPU per line and peak memory. -mode typed runs a pipeline spec
// into its tables; -compress xz sends one xz file with ncat; -latency sends
// lone lines; -mode connections measures the gateway per connection.
//
// Usage (from the repository root, after `make build`):
//
//	go run ./deploy/bench [-mode e2e|typed|connections]
//	                      [-corpus tweets|archive|small] [-compress xz]
//	                      [-spec file] [-latency] [-lines N] [-conns 4]
//	                      [-workers 2] [-env NAME=VALUE]... [-nats-sync always]
//	                      [-json] [-idle-conns 10000] [-clients 32] [-duration 10s]
//
// It exits non-zero only when the run fails (a program dies, a receipt is
// wrong, a row is missing or twice, a table holds a key the spec makes of
// no line, nothing moves for a minute); missing the goal is reported.
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
