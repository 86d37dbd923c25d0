package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/shared/runtime/natsconn"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/admin"
)

// operation is what an operator command does once connected to NATS.
type operation func(ctx context.Context, js jetstream.JetStream, stdout, stderr io.Writer) error

// dlqSubcommand is one of `worker dlq`'s sub-commands. parse checks its
// arguments, printing usage to stderr for -h (flag.ErrHelp), and returns
// the operation, so a mistake answers before any connection is made.
type dlqSubcommand struct {
	name, args, usage string
	parse             func(args []string, stderr io.Writer) (operation, error)
}

var dlqCommands = []dlqSubcommand{
	{"list", "[FILTERS] [--json]", "count dead letters by reason and source, with the oldest and newest", parseList},
	{"show", "SEQ [--full]", "show one dead letter: why, its headers and the line", parseShow},
	{"replay", "[FILTERS] [--dry-run] [--rate N]", "republish dead letters to " + topology.StreamName + " once their cause is fixed", parseReplay},
	{"purge", "[FILTERS] --yes", "remove dead letters for good", parsePurge},
}

const filtersUsage = "FILTERS: --reason R, --source S, --seq FROM-TO, --since T, --until T (all of them must match)"

func dlqUsage() string {
	s := "usage: worker dlq COMMAND; worker dlq COMMAND -h lists its flags"
	for _, c := range dlqCommands {
		s += fmt.Sprintf("\n  %-7s %-34s %s", c.name, c.args, c.usage)
	}
	return s + "\n" + filtersUsage
}

// dlqCommand runs `worker dlq COMMAND`.
func dlqCommand(ctx context.Context, cfg worker.Config, args []string) error {
	return dlqTo(ctx, cfg, args, os.Stdout, os.Stderr)
}

func dlqTo(ctx context.Context, cfg worker.Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(dlqUsage())
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, dlqUsage())
		return nil
	}
	for _, c := range dlqCommands {
		if c.name == args[0] {
			op, err := c.parse(args[1:], stderr)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			if err != nil {
				return err
			}
			return runOperation(ctx, cfg, "dlq-"+c.name, op, stdout, stderr)
		}
	}
	return fmt.Errorf("unknown command \"dlq %s\"\n%s", args[0], dlqUsage())
}

// runOperation connects to NATS with the worker's settings and runs op.
// Logs go to stderr, warnings and errors only unless LOG_LEVEL is debug,
// so the output stays what the operator asked for.
func runOperation(ctx context.Context, cfg worker.Config, name string, op operation, stdout, stderr io.Writer) error {
	logCfg := cfg.Log
	logCfg.Level = max(logCfg.Level, slog.LevelWarn)
	if cfg.Log.Level < slog.LevelInfo {
		logCfg.Level = cfg.Log.Level
	}
	nc, js, err := natsconn.Connect(ctx, cfg.NATS, "jetline-worker-"+name+"/"+cfg.InstanceName(), logging.New(logCfg, stderr))
	if err != nil {
		return err
	}
	defer nc.Close()
	return op(ctx, js, stdout, stderr)
}

// newFlags returns the flag set of `worker NAME`, whose usage shows args
// and about above the flags.
func newFlags(name, args, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("worker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: worker %s %s\n\n%s\n", name, args, about)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(stderr, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args with fs, allowing flags after positional
// arguments (`show 12 --full`), and returns the positional ones.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// filterFlags are the flags that select dead letters.
type filterFlags struct {
	reason, source, seq, since, until string
}

func (ff *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&ff.reason, "reason", "", "only entries of this `reason` (as worker dlq list shows them)")
	fs.StringVar(&ff.source, "source", "", "only entries of lines from this `source`")
	fs.StringVar(&ff.seq, "seq", "", "only entries whose dead-letter sequence is in `FROM-TO` (or N, FROM-, -TO)")
	fs.StringVar(&ff.since, "since", "", "only entries stored at or after `time`: RFC 3339, a date, or a duration ago (2h)")
	fs.StringVar(&ff.until, "until", "", "only entries stored at or before `time`, written as for -since")
}

// filter returns the selection the flags describe.
func (ff *filterFlags) filter(now time.Time) (admin.Filter, error) {
	f := admin.Filter{Reason: ff.reason, Source: ff.source}
	var errs []error
	if ff.seq != "" {
		var err error
		if f.FromSeq, f.ToSeq, err = admin.ParseSeqRange(ff.seq); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range []struct {
		flag, value string
		into        *time.Time
	}{{"--since", ff.since, &f.Since}, {"--until", ff.until, &f.Until}} {
		if t.value == "" {
			continue
		}
		v, err := admin.ParseTime(t.value, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", t.flag, err))
		}
		*t.into = v
	}
	if err := errors.Join(errs...); err != nil {
		return f, err
	}
	return f, f.Validate()
}

// parse parses args with fs, on which register was called, for a command
// that takes flags only, and returns the selection the filter flags
// describe.
func (ff *filterFlags) parse(fs *flag.FlagSet, args []string) (admin.Filter, error) {
	rest, err := parseFlags(fs, args)
	if err != nil {
		return admin.Filter{}, err
	}
	if err := noArgs(fs, rest); err != nil {
		return admin.Filter{}, err
	}
	return ff.filter(time.Now())
}

// noArgs reports positional arguments a command does not take.
func noArgs(fs *flag.FlagSet, args []string) error {
	if len(args) > 0 {
		fs.Usage()
		return fmt.Errorf("%s takes no arguments, only flags (got %q)", fs.Name(), args)
	}
	return nil
}

func parseList(args []string, stderr io.Writer) (operation, error) {
	fs := newFlags("dlq list", "[FILTERS] [--json]", "Count the dead letters by reason and source, with when the oldest and newest were stored.\nWithout sequence or time filters this reads only the stream's per-subject counts and one entry per group, so it is fast however many there are.", stderr)
	var ff filterFlags
	ff.register(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	f, err := ff.parse(fs, args)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, js jetstream.JetStream, stdout, _ io.Writer) error {
		sum, err := admin.List(ctx, js, f)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, sum)
		}
		if err := admin.WriteSummary(stdout, sum); err != nil {
			return err
		}
		if sum.Entries > 0 {
			_, err = fmt.Fprintln(stdout, "\nworker dlq show SEQ shows one; worker dlq replay --reason R replays a reason once its cause is fixed")
		}
		return err
	}, nil
}

func parseShow(args []string, stderr io.Writer) (operation, error) {
	fs := newFlags("dlq show", "SEQ [--full]", fmt.Sprintf("Show the dead letter with sequence SEQ (worker dlq list shows the range): its reason, error,\nheaders and the line, of which the first %d bytes unless --full.", admin.ShowBytes), stderr)
	full := fs.Bool("full", false, "show the whole line")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(rest) != 1 {
		fs.Usage()
		return nil, errors.New("dlq show takes one dead-letter sequence number, e.g. worker dlq show 12")
	}
	seq, err := strconv.ParseUint(rest[0], 10, 64)
	if err != nil || seq == 0 {
		return nil, fmt.Errorf("dlq show: %q is not a dead-letter sequence number (a positive integer, as worker dlq list shows)", rest[0])
	}
	return func(ctx context.Context, js jetstream.JetStream, stdout, _ io.Writer) error {
		e, err := admin.Show(ctx, js, seq)
		if err != nil && e.Seq == 0 {
			return err
		}
		if werr := admin.WriteEntry(stdout, e, *full); werr != nil {
			return werr
		}
		// An entry someone else wrote is shown as it is, with why it
		// reads oddly.
		return err
	}, nil
}

func parseReplay(args []string, stderr io.Writer) (operation, error) {
	fs := newFlags("dlq replay", "[FILTERS] [--dry-run] [--rate N]", `Republish dead letters to `+topology.StreamName+` (all, or those the filters select), oldest first, once
their cause is fixed. Each line goes back to its own subject with its own headers, among them
`+topology.HeaderLineID+` (its identity, which workers key its row by), plus
Nats-Msg-Id replay.<seq>; its entry is removed once the stream has acknowledged it. An
interrupted replay (Ctrl-C) loses nothing: run it again and each line is still stored once.
Lines cut by the gateway (reason `+deadletter.ReasonTooLong+`) cannot be replayed; they are skipped and counted.`, stderr)
	var ff filterFlags
	ff.register(fs)
	dryRun := fs.Bool("dry-run", false, "say what would be replayed and change nothing")
	lineRate := fs.Float64("rate", 0, "republish at most `N` lines a second; 0 means as fast as acknowledged")
	every := fs.Duration("progress", 5*time.Second, "how often to report progress on stderr")
	f, err := ff.parse(fs, args)
	if err != nil {
		return nil, err
	}
	if *lineRate < 0 || *every <= 0 {
		return nil, fmt.Errorf("dlq replay: --rate must not be negative (got %g) and --progress must be positive (got %s)", *lineRate, *every)
	}
	return func(ctx context.Context, js jetstream.JetStream, stdout, stderr io.Writer) error {
		if *dryRun {
			sum, err := admin.List(ctx, js, f)
			if err != nil {
				return err
			}
			if err := admin.WriteSummary(stdout, sum); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
		}
		res, err := admin.Replay(ctx, js, admin.ReplayOptions{Filter: f, DryRun: *dryRun, Rate: *lineRate, Progress: stderr, ProgressEvery: *every})
		if res.Skipped != nil {
			if werr := admin.WriteReplayResult(stdout, res); werr != nil && err == nil {
				err = werr
			}
		}
		switch {
		case err != nil:
			return err
		case res.Interrupted:
			return errors.New("replay interrupted")
		case res.Failed > 0:
			return fmt.Errorf("%s could not be replayed and stayed in %s", admin.Count(res.Failed, "dead letter"), deadletter.StreamName)
		}
		return nil
	}, nil
}

func parsePurge(args []string, stderr io.Writer) (operation, error) {
	fs := newFlags("dlq purge", "[FILTERS] --yes", "Remove dead letters for good: all, or those the filters select. Without --yes, show what would\nbe removed and change nothing. By reason and source alone they go in one request; sequence and\ntime ranges are removed one by one.", stderr)
	var ff filterFlags
	ff.register(fs)
	yes := fs.Bool("yes", false, "really remove them")
	f, err := ff.parse(fs, args)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, js jetstream.JetStream, stdout, _ io.Writer) error {
		if !*yes {
			sum, err := admin.List(ctx, js, f)
			if err != nil {
				return err
			}
			if sum.Entries == 0 {
				fmt.Fprintf(stdout, "nothing to purge (%s)\n", f)
				return nil
			}
			if err := admin.WriteSummary(stdout, sum); err != nil {
				return err
			}
			return fmt.Errorf("nothing purged: add --yes to remove %s (%s) for good", admin.Count(sum.Entries, "dead letter"), f)
		}
		n, err := admin.Purge(ctx, js, f)
		fmt.Fprintf(stdout, "purged %s (%s)\n", admin.Count(n, "dead letter"), f)
		return err
	}, nil
}
