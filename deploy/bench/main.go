// Command bench measures jetline end to end on this machine. It generates
// NDJSON lines once, starts an embedded NATS server and a private Postgres
// (fsync on) in a temporary directory, measures the raw JetStream publish
// rate of those lines one per message, then runs the gateway and the
// workers as child processes and measures the same lines from the first
// byte sent over TCP to the last row committed (or, through a pipeline
// that filters, the last line settled). It prints the rates, their ratio
// against the goal, frames per second (the gateway's
// jetline_gateway_frames_published_total), line-to-row latency, and each
// process's CPU per line and peak memory, then stops everything and
// removes the directory. The raw landing (-mode e2e) is also measured
// against one bare COPY of the same lines, made after it in the same
// Postgres: one connection, one pgx CopyFrom of (line_id text primary key,
// payload jsonb lz4) into a fresh table, committed.
//
// -mode typed is the e2e mode through a pipeline spec into its typed
// tables, each checked against the rows the spec's transform makes of the
// corpus in-process, with rows/s per table: -spec (which alone selects it
// too, e.g. deploy/pipelines/tweets-full.yaml), or the corpus's own. -corpus chooses
// the lines: tweets (about 6 KB, shared/devkit/tweetgen; the tweets
// pipeline keeps 27 %), archive (4 KB records with values of their own,
// which xz compresses about 8×; their pipeline keeps 0.15 %) or small (200
// B records, 1 % kept). -compress xz compresses the corpus once with `xz
// -T2` (kept in the user's cache directory), sends it as `ncat host port <
// dump.xz` (or by the bench itself where ncat is missing) and measures `xz
// -dc` of it as the floor. -latency sends lone lines instead: one at a time
// over one connection, each once the row of the one before is visible in
// Postgres. -mode connections measures the gateway per connection instead
// of per line: its memory per idle connection, then plain and TLS
// connections per second, one line each, without workers.
//
// The goals: end to end ≥ 0.5× raw publish (tweets), ≥ 1.7× the bare
// COPY (the raw landing, where Postgres is the limit), ≥ 0.8× the xz -dc
// floor (a dump), ≥ 400,000 lines/s (small), lone-line p99 ≤ 50 ms.
//
// Usage (from the repository root, after `make build`):
//
//	go run ./deploy/bench [-mode e2e|typed|connections]
//	                      [-corpus tweets|archive|small] [-compress xz]
//	                      [-spec file] [-latency]
//	                      [-lines N] [-conns 4] [-workers 2]
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
