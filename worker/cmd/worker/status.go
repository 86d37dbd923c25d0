package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/admin"
)

// statusCommand runs `worker status`.
func statusCommand(ctx context.Context, cfg worker.Config, args []string) error {
	return statusTo(ctx, cfg, args, os.Stdout, os.Stderr)
}

func statusTo(ctx context.Context, cfg worker.Config, args []string, stdout, stderr io.Writer) error {
	op, err := parseStatus(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return runOperation(ctx, cfg, "status", op, stdout, stderr)
}

func parseStatus(args []string, stderr io.Writer) (operation, error) {
	fs := newFlags("status", "[--interval D] [--json]", `One screen on the pipeline: the ingest stream's depth and fill, the workers' consumer
(frames to fetch, being stored, redelivered, and pull requests waiting — none from a worker
whose prefetch is full), the connected workers (each one's host, uptime, lines/s, rows
inserted, lines dead-lettered and last heartbeat), dead letters by reason, frames in and out
per second measured over --interval, and a verdict in plain words.`, stderr)
	interval := fs.Duration("interval", 2*time.Second, "time between the two readings the rates come from")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if err := noArgs(fs, rest); err != nil {
		return nil, err
	}
	if *interval < 100*time.Millisecond {
		return nil, fmt.Errorf("status: --interval must be at least 100ms (got %s) for the rates to mean anything", *interval)
	}
	return func(ctx context.Context, js jetstream.JetStream, stdout, _ io.Writer) error {
		st, err := admin.TakeStatus(ctx, js, *interval)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, st)
		}
		return admin.WriteStatus(stdout, st)
	}, nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
