package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Defaults of the flags; -lines defaults to the corpus's own (see
// [corpusKinds]), sized for a run of a minute or two on 2 cores.
const (
	DefaultCorpus     = "tweets"
	DefaultLoneLines  = 100
	DefaultConns      = 4
	DefaultWorkers    = 2
	DefaultGatewayBin = ".data/bin/gateway"
	DefaultWorkerBin  = ".data/bin/worker"
	DefaultSpec       = "deploy/pipelines/tweets.yaml"
	DefaultIdleConns  = 10_000
	DefaultClients    = 32
	DefaultDuration   = 10 * time.Second
)

// seed seeds the line generator, so that every run of a corpus sends the
// same bytes and its dump is made once. A run fails when no row lands and
// no line is acknowledged for stallTimeout.
const (
	seed         = 1
	stallTimeout = time.Minute
)

// Config is one bench run: the flags, which [parseFlags] fills in; their
// usage strings say what each does and its default.
type Config struct {
	// Mode is a key of [modes]; Spec and Against are -spec and -against.
	Mode, Spec, Against string
	// Corpus is a key of [corpusKinds]; Lines defaults to its own number,
	// or [DefaultLoneLines] with Latency.
	Corpus string
	Lines  int
	// Compress ("xz") and Latency send over one connection, so Conns
	// defaults to 1 with them.
	Compress string
	Latency  bool
	Conns    int
	Workers  int
	// GatewayBin and WorkerBin are the programs, as `make build` leaves them.
	GatewayBin, WorkerBin string
	// ChildEnv holds the -env NAME=VALUE pairs for the gateway and workers.
	ChildEnv []string
	// NATSSync is -nats-sync: "" keeps the server default (2m), "always"
	// fsyncs every write as deploy/nats/ does in production.
	NATSSync string
	JSON     bool
	// IdleConns, Clients and Duration are -mode connections' settings.
	IdleConns, Clients int
	Duration           time.Duration
}

// parseFlags parses args (without the program name) into a Config.
func parseFlags(args []string) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./deploy/bench [flags]\n\n"+
			"Measures jetline end to end on this machine: raw JetStream publish rate, then\n"+
			"NDJSON over TCP → gateway → JetStream → workers → Postgres, with real servers.\n\nModes:\n")
		for _, name := range modeNames() {
			fmt.Fprintf(fs.Output(), "  %-11s %s\n", name, modes[name])
		}
		fmt.Fprintf(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Mode, "mode", "e2e", "what to measure: "+strings.Join(modeNames(), ", "))
	fs.StringVar(&cfg.Against, "against", "", "pipeline spec `file` to run the same lines through after the typed run, and judge the typed run against (≥ 0.8×), e.g. "+DefaultSpec)
	fs.StringVar(&cfg.Spec, "spec", "", "pipeline spec `file` of -mode typed, and -mode e2e through it (default: "+DefaultSpec+" for tweets, a generated one for the other corpora)")
	fs.StringVar(&cfg.Corpus, "corpus", DefaultCorpus, "lines to send: tweets (~6 KB statuses, 400,000 lines), feed (the tweets as a live feed: users who come again, mentions, delete notices; 400,000), archive (~4 KB records with values of their own, 100,000), small (~200 B records, 2,000,000)")
	fs.StringVar(&cfg.Compress, "compress", "", "`xz`: send the corpus as one xz -T2 file with `ncat host port < dump.xz`, and measure xz -dc of it as the floor")
	fs.BoolVar(&cfg.Latency, "latency", false, "-mode e2e: send the lines one at a time over one connection, each once the row of the one before is visible")
	fs.IntVar(&cfg.Lines, "lines", 0, "number of lines to send (default: the corpus's, see -corpus; 100 with -latency)")
	fs.IntVar(&cfg.Conns, "conns", DefaultConns, "concurrent TCP connections (and raw publishers); 1 with -compress or -latency")
	fs.IntVar(&cfg.Workers, "workers", DefaultWorkers, "worker processes")
	fs.StringVar(&cfg.GatewayBin, "gateway-bin", DefaultGatewayBin, "gateway `program` (make build makes it)")
	fs.StringVar(&cfg.WorkerBin, "worker-bin", DefaultWorkerBin, "worker `program` (make build makes it)")
	fs.Func("env", "extra `NAME=VALUE` for the gateway and workers (repeatable), e.g. -env GATEWAY_INFLIGHT_LINES=8192 -env WORKER_BATCH_SIZE=100", func(s string) error {
		name, _, ok := strings.Cut(s, "=")
		if !ok || name == "" {
			return fmt.Errorf("%q is not NAME=VALUE", s)
		}
		cfg.ChildEnv = append(cfg.ChildEnv, s)
		return nil
	})
	fs.StringVar(&cfg.NATSSync, "nats-sync", "", "JetStream fsync: `always` or an interval such as 1s (empty: the server default, 2m)")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON on stdout (the text report goes to stderr)")
	fs.IntVar(&cfg.IdleConns, "idle-conns", DefaultIdleConns, "idle connections held open by -mode connections")
	fs.IntVar(&cfg.Clients, "clients", DefaultClients, "concurrent clients of the connection rates of -mode connections")
	fs.DurationVar(&cfg.Duration, "duration", DefaultDuration, "how long -mode connections measures each connection rate")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q: everything is set with flags (see -h)", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Lines == 0 && !set["lines"] {
		cfg.Lines = corpusKinds[cfg.Corpus].lines
		if cfg.Latency {
			cfg.Lines = DefaultLoneLines
		}
	}
	if (cfg.Compress != "" || cfg.Latency) && !set["conns"] {
		cfg.Conns = 1
	}
	return cfg, cfg.Validate()
}

// typed reports whether the e2e mode runs through a pipeline into its
// typed table: with -spec, or by its name -mode typed.
func (c Config) typed() bool { return c.Mode == "typed" || c.Spec != "" }

// Validate reports what is wrong with c, in terms of the flags.
func (c Config) Validate() error {
	_, modeOK := modes[c.Mode]
	_, corpusOK := corpusKinds[c.Corpus]
	_, _, _, syncErr := c.natsSync()
	errs := []error{syncErr}
	for _, check := range []struct {
		bad  bool
		what string
	}{
		{!modeOK, fmt.Sprintf("-mode %q is unknown: use one of %s", c.Mode, strings.Join(modeNames(), ", "))},
		{!corpusOK, fmt.Sprintf("-corpus %q is unknown: use one of %s", c.Corpus, strings.Join(slices.Sorted(maps.Keys(corpusKinds)), ", "))},
		{c.Compress != "" && c.Compress != "xz", fmt.Sprintf("-compress %q is unknown: use xz, or leave it out to send plain lines", c.Compress)},
		{(c.Compress != "" || c.Latency) && c.Conns != 1, fmt.Sprintf("-compress and -latency send over one connection: leave out -conns (got %d)", c.Conns)},
		{c.Latency && (c.Mode != "e2e" || c.Spec != "" || c.Compress != ""), "-latency measures lone lines into the raw landing: use it with -mode e2e and without -compress"},
		{c.Against != "" && (!c.typed() || c.Compress != ""), "-against compares two pipelines on the same plain lines: use it with -mode typed (or -spec) and without -compress"},
		{c.Lines < 1, fmt.Sprintf("-lines must be at least 1 (got %d)", c.Lines)},
		{c.Conns < 1 || c.Conns > 10_000, fmt.Sprintf("-conns must be between 1 and 10000 (got %d)", c.Conns)},
		{c.Conns > c.Lines, fmt.Sprintf("-conns (%d) must not exceed -lines (%d): every connection sends at least one line", c.Conns, c.Lines)},
		{c.Workers < 1 || c.Workers > 64, fmt.Sprintf("-workers must be between 1 and 64 (got %d)", c.Workers)},
		{c.GatewayBin == "" || c.WorkerBin == "", "-gateway-bin and -worker-bin must not be empty"},
		{c.IdleConns < 1 || c.IdleConns > 1_000_000, fmt.Sprintf("-idle-conns must be between 1 and 1000000 (got %d)", c.IdleConns)},
		{c.Clients < 1 || c.Clients > 10_000, fmt.Sprintf("-clients must be between 1 and 10000 (got %d)", c.Clients)},
		{c.Duration < time.Second, fmt.Sprintf("-duration must be at least 1s (got %s)", c.Duration)},
	} {
		if check.bad {
			errs = append(errs, errors.New(check.what))
		}
	}
	for _, kv := range c.ChildEnv {
		name, _, _ := strings.Cut(kv, "=")
		if hint, owned := harnessOwned[name]; owned {
			errs = append(errs, fmt.Errorf("-env %s: the bench sets %s itself%s", kv, name, hint))
		}
	}
	return errors.Join(errs...)
}

// natsSync returns the embedded server's fsync options for -nats-sync,
// and their description for the report.
func (c Config) natsSync() (always bool, interval time.Duration, text string, err error) {
	switch c.NATSSync {
	case "":
		return false, 0, "fsync every 2m (server default sync_interval)", nil
	case "always":
		return true, 0, "fsync every write (sync_interval: always)", nil
	}
	d, err := time.ParseDuration(c.NATSSync)
	if err != nil || d <= 0 {
		return false, 0, "", fmt.Errorf("-nats-sync %q: use always or a positive duration such as 1s", c.NATSSync)
	}
	return false, d, "fsync every " + c.NATSSync, nil
}
