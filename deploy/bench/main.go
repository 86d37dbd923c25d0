// Command bench measures jetline end to end on this machine. It generates
// NDJSON lines once, starts an embedded NATS server and a private Postgres
// (fsync on) in a temporary directory, measures the raw JetStream publish
// rate of those lines one per message, then runs the gateway and the
// workers (as `make build` leaves them) and measures the same lines from
// the first byte sent over TCP to the last row committed (or, through a
// pipeline that filters, the last line settled). It prints the rates,
// their ratio against the goal, frames per second, line-to-row latency,
// and each process's CPU per line and peak memory. The raw landing (-mode
// e2e) is also measured against one bare COPY of the same lines into the
// same Postgres.
//
// -mode typed runs through a pipeline spec (-spec, or the corpus's own)
// into its tables, each checked against the rows the spec's transform
// makes of the corpus in-process, with rows/s per table. -corpus chooses
// the lines: tweets, archive or small. -compress xz sends the corpus as
// one `xz -T2` file with ncat, against the `xz -dc` floor. -latency sends
// lone lines, each once the row of the one before is visible. -mode
// connections measures the gateway per connection instead: its memory
// per idle connection, then plain and TLS connections per second.
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
// no line, nothing moves for a minute); missing the goal is reported, not
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
