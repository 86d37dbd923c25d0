package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/worker"
)

// modes are the measurements -mode chooses from, with what each measures.
var modes = map[string]string{
	"e2e":         "raw JetStream publish rate, then the same lines end to end: TCP → gateway → JetStream → workers → Postgres (with -latency: lone lines)",
	"typed":       "the e2e mode through a pipeline spec (-spec, or the corpus's own) into its tables",
	"connections": "gateway memory per idle connection, then plain and TLS connections per second (one line each; no workers)",
}

func modeNames() []string { return slices.Sorted(maps.Keys(modes)) }

// backgroundWarn is the load of other processes, in cores, above which the
// numbers are skewed.
const backgroundWarn = 0.2

// bench is the state of one run that modes share.
type bench struct {
	cfg    Config
	pr     *progress
	stderr io.Writer
	corpus *corpus
	dump   *dump // the corpus compressed, with -compress
	h      *harness
	report *Report
	// gatewayAddr is where the running gateway listens.
	gatewayAddr string
}

// run generates the corpus, starts the harness, runs the mode, tears it
// down and writes the report. Missing the goal is reported, not an error.
func run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (err error) {
	measure, lines := runE2E, cfg.Mode != "connections"
	if !lines {
		measure = runConnections
	}
	// The bench's log, its progress and its children's output share stderr.
	stderr = &childproc.SyncWriter{W: stderr}
	logger := logging.New(logging.Config{Format: "auto", Level: slog.LevelWarn}, stderr).With("component", "bench")
	pr := &progress{w: stderr, start: time.Now()}
	rep, err := newReport(cfg)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, pr: pr, stderr: stderr, report: rep}

	pr.step("jetline bench, mode %s: %s", cfg.Mode, modes[cfg.Mode])
	if rep.Machine.BackgroundCores, err = backgroundLoad(time.Second, rep.Machine.CPUs); err != nil {
		return err
	}
	pr.step("machine: %s", rep.Machine.summary())
	if rep.Machine.BackgroundCores > backgroundWarn {
		pr.step("warning: other processes keep %.2f cores busy: the numbers will be low and noisy", rep.Machine.BackgroundCores)
	}
	if lines {
		pr.step("goal: %s", rep.Goal.Text)
		kind := corpusKinds[cfg.Corpus]
		pr.step("generating %s %s lines: %s (seed %d)", thousands(int64(cfg.Lines)), kind.name, kind.about, seed)
		start := time.Now()
		c := newCorpus(kind, seed, cfg.Lines)
		b.corpus, rep.Corpus.GenerationSec = c, time.Since(start).Seconds()
		rep.Corpus.Kind, rep.Corpus.Lines, rep.Corpus.PayloadBytes, rep.Corpus.Seed = kind.name, c.Len(), c.PayloadBytes(), seed
		rep.Corpus.AvgLineBytes = c.PayloadBytes() / int64(c.Len())
		pr.step("generated %s in %s, %s bytes per line on average", mib(c.PayloadBytes()), time.Since(start).Round(10*time.Millisecond), thousands(rep.Corpus.AvgLineBytes))
		if cfg.Compress != "" {
			if b.dump, err = newDump(ctx, c, pr); err != nil {
				return err
			}
			rep.Dump = b.dump
			pr.step("dump: %s, %.1f× smaller, sent by %s", mib(b.dump.Bytes), float64(len(c.data))/float64(b.dump.Bytes), b.dump.Sender)
		}
	} else {
		pr.step("%s", connGoalText)
	}

	if b.h, err = startHarness(ctx, cfg, logger, pr, rep); err != nil {
		return err
	}
	pr.step("postgres %s: %s", rep.Postgres.Version, rep.Postgres.settingsLine())
	pr.step("nats %s: %s", rep.NATS.Version, rep.NATS.Store)
	runErr := measure(ctx, b)
	pr.step("stopping Postgres and NATS, removing the temporary directory")
	if err := errors.Join(runErr, b.h.close(context.WithoutCancel(ctx))); err != nil {
		return err
	}
	rep.RunSeconds = time.Since(pr.start).Seconds()
	if lines {
		rep.judge()
	}
	if cfg.JSON {
		if err := rep.writeText(stderr); err != nil {
			return err
		}
		return rep.writeJSON(stdout)
	}
	return rep.writeText(stdout)
}

// progress writes the run's steps stamped with the time since it began, so
// that a minute-long run is not silent. Safe for concurrent use.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *progress) step(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// settle writes dirty pages out before a measurement, so that the kernel
// flushing what came before does not steal from it.
func settle() { syscall.Sync() }

// effectiveSettings returns the gateway's in-flight window and the workers'
// settings the children run with: their defaults, overridden by -env.
func effectiveSettings(cfg Config) (window, worker.Config, error) {
	vars := map[string]string{}
	for _, kv := range cfg.ChildEnv {
		name, value, _ := strings.Cut(kv, "=")
		vars[name] = value
	}
	var gc gateway.Config
	var wc worker.Config
	if err := env.ParseWithOptions(&gc, env.Options{Environment: vars}); err != nil {
		return window{}, wc, fmt.Errorf("gateway settings from -env: %w", err)
	}
	if err := env.ParseWithOptions(&wc, env.Options{Environment: vars}); err != nil {
		return window{}, wc, fmt.Errorf("worker settings from -env: %w", err)
	}
	return window{Messages: gc.InflightLines, Bytes: gc.InflightBytes}, wc, nil
}
