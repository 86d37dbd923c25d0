package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals of the modes that send lines, by workload (see [lineGoal]).
const (
	// goalRatio is the end-to-end rate as a share of the raw publish
	// rate.
	goalRatio = 0.5
	// goalFloorRatio is the end-to-end rate of a dump as a share of the
	// `xz -dc` floor.
	goalFloorRatio = 0.8
	// goalSmallPerSec is the end-to-end rate of small lines.
	goalSmallPerSec = 400_000
	// goalLoneP99 is the p99 of a lone line's wait for its row, in
	// seconds.
	goalLoneP99 = 0.050
)

// lineGoal returns the goal of a run of cfg that sends lines; [Report.judge]
// measures it.
func lineGoal(cfg Config) connGoal {
	switch {
	case cfg.Latency:
		return newGoal("lone-line row p99 ≤ 50 ms", goalLoneP99, true, millis)
	case cfg.Compress != "":
		return newGoal("end to end ≥ 0.8× the xz -dc floor", goalFloorRatio, false, times)
	case cfg.Corpus == "small":
		return newGoal("end to end ≥ 400,000 lines/s", goalSmallPerSec, false, perSec)
	}
	return newGoal("end to end ≥ 0.5× raw publish", goalRatio, false, times)
}

// judge measures the run against its goal with what it found.
func (r *Report) judge() {
	r.judgeCopy()
	g := &r.Goal
	switch e := r.E2E; {
	case r.Lone != nil:
		g.measure(r.Lone.P99)
	case e == nil || e.EndToEnd.Seconds <= 0:
		g.Note = "no end-to-end run"
	case r.Dump != nil:
		g.measure(r.Dump.Floor.Seconds / e.EndToEnd.Seconds)
	case r.Corpus.Kind == "small":
		g.measure(e.EndToEnd.LinesPerSec)
	case r.Raw != nil:
		g.measure(r.Ratio)
	}
}

func times(v float64) string { return fmt.Sprintf("%.2f×", v) }

// Report is everything a run measured and what it ran with. It is printed
// as aligned text, or as JSON with -json.
type Report struct {
	Mode       string      `json:"mode"`
	Started    time.Time   `json:"started"`
	RunSeconds float64     `json:"run_seconds"`
	Machine    machine     `json:"machine"`
	Corpus     corpusFacts `json:"corpus"`
	Setup      setup       `json:"setup"`
	Postgres   pgFacts     `json:"postgres"`
	NATS       natsFacts   `json:"nats"`
	Binaries   binaries    `json:"binaries"`
	Raw        *rawResult  `json:"raw_publish,omitempty"`
	E2E        *e2eResult  `json:"e2e,omitempty"`
	// Dump is the compressed file sent with -compress, and its floor.
	Dump *dump `json:"dump,omitempty"`
	// Lone is what -latency found.
	Lone *loneResult `json:"lone,omitempty"`
	// Typed is what the typed mode found besides E2E.
	Typed *typedResult `json:"typed,omitempty"`
	// Connections is what the connections mode found.
	Connections *connectionsResult `json:"connections,omitempty"`
	// Ratio is the end-to-end rate over the raw publish rate.
	Ratio float64  `json:"e2e_to_raw_ratio,omitempty"`
	Goal  connGoal `json:"goal"`
	// Copy is the raw landing's reference: one bare COPY of the same
	// lines (the e2e mode without -latency). CopyRatio is the end-to-end
	// rate over it, judged by CopyGoal.
	Copy      *copyResult `json:"bare_copy,omitempty"`
	CopyRatio float64     `json:"e2e_to_copy_ratio,omitempty"`
	CopyGoal  *connGoal   `json:"copy_goal,omitempty"`
}

// machine is what the numbers were measured on.
type machine struct {
	CPUModel   string `json:"cpu_model"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	MemBytes   int64  `json:"mem_bytes"`
	GoVersion  string `json:"go_version"`
	OSArch     string `json:"os_arch"`
	// BackgroundCores is how many cores other processes kept busy in the
	// second before the run.
	BackgroundCores float64 `json:"background_cores"`
}

func (m machine) summary() string {
	return fmt.Sprintf("%s, %d CPUs, GOMAXPROCS %d, %s RAM, %s %s; %.2f cores busy before the run",
		m.CPUModel, m.CPUs, m.GOMAXPROCS, gib(m.MemBytes), m.GoVersion, m.OSArch, m.BackgroundCores)
}

// corpusFacts describes the lines sent.
type corpusFacts struct {
	Kind          string  `json:"kind"`
	Lines         int     `json:"lines"`
	PayloadBytes  int64   `json:"payload_bytes"`
	AvgLineBytes  int64   `json:"avg_line_bytes"`
	Seed          uint64  `json:"seed"`
	GenerationSec float64 `json:"generation_seconds"`
}

// setup is how the programs were run.
type setup struct {
	Conns   int `json:"conns"`
	Workers int `json:"workers"`
	// WorkerConcurrency, BatchSize and MaxAckPending are the workers'
	// effective settings; the *Default fields say they were not set.
	WorkerConcurrency        int      `json:"worker_concurrency"`
	WorkerConcurrencyDefault bool     `json:"worker_concurrency_default"`
	BatchSize                int      `json:"batch_size"`
	BatchSizeDefault         bool     `json:"batch_size_default"`
	MaxAckPending            int      `json:"max_ack_pending"`
	ChildEnv                 []string `json:"child_env,omitempty"`
	// RawWindow is the gateway's per-connection in-flight window, which
	// the raw publishers use too.
	RawWindow window `json:"window"`
}

// pgFacts is the Postgres the rows went to.
type pgFacts struct {
	Version  string    `json:"version"`
	Settings []setting `json:"settings"`
}

func (p pgFacts) settingsLine() string {
	parts := make([]string, len(p.Settings))
	for i, s := range p.Settings {
		parts[i] = s.Name + "=" + s.Value
	}
	return strings.Join(parts, " ")
}

// natsFacts is the NATS server the lines went through.
type natsFacts struct {
	Version string `json:"version"`
	Store   string `json:"store"`
}

// newReport starts the report of a run of cfg with the machine's facts.
func newReport(cfg Config) (*Report, error) {
	win, wc, err := effectiveSettings(cfg)
	if err != nil {
		return nil, err
	}
	return &Report{
		Mode:    cfg.Mode,
		Started: time.Now().UTC().Truncate(time.Second),
		Machine: machine{
			CPUModel:   cpuModel(),
			CPUs:       runtime.NumCPU(),
			GOMAXPROCS: runtime.GOMAXPROCS(0),
			MemBytes:   memTotal(),
			GoVersion:  runtime.Version(),
			OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		},
		Setup: setup{
			Conns:                    cfg.Conns,
			Workers:                  cfg.Workers,
			WorkerConcurrency:        wc.Concurrency,
			WorkerConcurrencyDefault: cfg.WorkerConcurrency == 0,
			BatchSize:                wc.BatchSize,
			BatchSizeDefault:         cfg.BatchSize == 0,
			MaxAckPending:            wc.EffectiveMaxAckPending(),
			ChildEnv:                 cfg.ChildEnv,
			RawWindow:                win,
		},
		Goal: lineGoal(cfg),
	}, nil
}

func (r *Report) setCorpus(c *corpus, seed uint64, took time.Duration) {
	r.Corpus = corpusFacts{
		Kind:          c.kind.name,
		Lines:         c.Len(),
		PayloadBytes:  c.PayloadBytes(),
		AvgLineBytes:  c.PayloadBytes() / int64(max(c.Len(), 1)),
		Seed:          seed,
		GenerationSec: took.Seconds(),
	}
}

func (r *Report) setHarness(h *harness) {
	r.Postgres = pgFacts{Version: h.pgVer, Settings: h.pgFacts}
	r.NATS = natsFacts{Version: h.natsVer, Store: "embedded, JetStream file store, " + h.natsSync}
	r.Binaries = h.binaries
}

func (r *Report) setE2E(res e2eResult) {
	r.E2E = &res
	if r.Raw != nil && r.Raw.LinesPerSec > 0 {
		r.Ratio = res.EndToEnd.LinesPerSec / r.Raw.LinesPerSec
	}
	r.judge()
}

func (r *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText writes the report as aligned text.
func (r *Report) writeText(w io.Writer) error {
	if r.Connections != nil {
		return r.writeConnectionsText(w)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\njetline bench — mode %s — %s\n\n", r.Mode, r.Started.Format(time.RFC3339))

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", r.Machine.summary())
	fmt.Fprintf(tw, "corpus\t%s %s lines, %s payload, %s B/line avg, seed %d\n",
		thousands(int64(r.Corpus.Lines)), r.Corpus.Kind, mib(r.Corpus.PayloadBytes), thousands(r.Corpus.AvgLineBytes), r.Corpus.Seed)
	if d := r.Dump; d != nil {
		fmt.Fprintf(tw, "dump\t%s, `%s` (%s), sent by %s\n", mib(d.Bytes), d.Command, d.Path, d.Sender)
	}
	s := r.Setup
	fmt.Fprintf(tw, "setup\t%d connections, %d workers × WORKER_CONCURRENCY %d%s, WORKER_BATCH_SIZE %d%s, max ack pending %s\n",
		s.Conns, s.Workers, s.WorkerConcurrency, defaultMark(s.WorkerConcurrencyDefault),
		s.BatchSize, defaultMark(s.BatchSizeDefault), thousands(int64(s.MaxAckPending)))
	fmt.Fprintf(tw, "\tin-flight window per connection %s lines / %s (gateway and raw publishers, which hold at most %s messages in flight together)\n",
		thousands(int64(s.RawWindow.Messages)), mib(s.RawWindow.Bytes), thousands(rawQueueMsgs))
	if len(s.ChildEnv) > 0 {
		fmt.Fprintf(tw, "\textra env %s\n", strings.Join(s.ChildEnv, " "))
	}
	fmt.Fprintf(tw, "postgres\t%s, %s\n", r.Postgres.Version, r.Postgres.settingsLine())
	fmt.Fprintf(tw, "nats\t%s, %s\n", r.NATS.Version, r.NATS.Store)
	fmt.Fprintf(tw, "programs\tgateway %s, worker %s\n", r.Binaries.Gateway.describe(), r.Binaries.Worker.describe())
	if err := tw.Flush(); err != nil {
		return err
	}

	if r.Raw != nil || r.E2E != nil {
		fmt.Fprintf(&b, "\n%-18s %10s %8s %8s\n", "measurement", "lines/s", "MiB/s", "time")
	}
	row := func(name string, rt *rate, what string) {
		if rt != nil {
			fmt.Fprintf(&b, "%-18s %10s %8.1f %7.1fs   %s\n", name, thousands(int64(rt.LinesPerSec)), rt.MiBPerSec, rt.Seconds, what)
		}
	}
	if r.Raw != nil {
		row("raw publish", &r.Raw.rate, fmt.Sprintf("JetStream PublishMsgAsync, every ack; %.0f µs CPU/line, machine %.0f%% busy",
			perLine(r.Raw.CPUSeconds, r.Raw.Lines), r.Raw.BusyPct))
	}
	if d := r.Dump; d != nil {
		row("xz -dc floor", &d.Floor, fmt.Sprintf("xz -dc dump > /dev/null, MiB/s of decompressed output; %.0f µs CPU/line", perLine(d.FloorCPUSeconds, d.Floor.Lines)))
	}
	if e := r.E2E; e != nil {
		row("gateway ingest", &e.Ingest, "first byte sent → last receipt")
		end := "first byte sent → last row committed"
		if r.Typed != nil {
			end = "first byte sent → " + r.Typed.EndBasis
		}
		row("end to end", &e.EndToEnd, end)
		if e.Frames < 0 {
			fmt.Fprintf(&b, "frames/s: n/a (gateway exports no frame counter)\n")
		} else if e.Frames > 0 {
			fmt.Fprintf(&b, "%-18s %10s %8s %8s   %s frames, %.1f lines per frame (%s)\n", "frames/s", thousands(int64(float64(e.Frames)/e.EndToEnd.Seconds)),
				"", "", thousands(e.Frames), float64(e.EndToEnd.Lines)/float64(e.Frames), framesMetric)
		}
	}
	if c := r.Copy; c != nil {
		row("bare COPY", &c.rate, fmt.Sprintf("one connection, one pgx CopyFrom of (line_id, payload jsonb lz4) into a fresh table; Postgres %.0f µs CPU/line",
			perLine(c.PostgresCPUSeconds, c.Lines)))
	}
	if r.Raw != nil && r.E2E != nil {
		fmt.Fprintf(&b, "%-18s %9.2f×\n", "e2e / raw", r.Ratio)
	}
	if r.Copy != nil && r.E2E != nil {
		fmt.Fprintf(&b, "%-18s %9.2f×\n", "e2e / bare COPY", r.CopyRatio)
	}
	if d := r.Dump; d != nil && r.E2E != nil {
		fmt.Fprintf(&b, "%-18s %9.2f×   (of the time xz -dc takes)\n", "e2e / xz floor", d.Floor.Seconds/r.E2E.EndToEnd.Seconds)
	}
	if l := r.Lone; l != nil {
		fmt.Fprintf(&b, "\n%-18s p50 %s, p99 %s, max %s over %d lines (row visible in Postgres − line written to the socket, one line at a time on an idle pipeline; rows counted every %s)\n",
			"lone-line latency", millis(l.P50), millis(l.P99), millis(l.Max), l.Lines, lonePoll)
	}

	if e := r.E2E; e != nil && r.Typed != nil {
		r.Typed.writeText(&b, e, r.Setup.Conns)
	} else if e != nil {
		fmt.Fprintf(&b, "\n%-18s p50 %s, p99 %s (row commit time − gateway read time; includes the wait behind the backlog)\n",
			"line→row latency", seconds(e.LatencyP50), seconds(e.LatencyP99))
		checked := fmt.Sprintf("%s rows", thousands(int64(e.EndToEnd.Lines)))
		if e.DistinctLines >= 0 {
			checked += fmt.Sprintf(", %s distinct lines", thousands(e.DistinctLines))
		}
		fmt.Fprintf(&b, "%-18s %s, %d receipts ok, %s redelivered\n", "checked", checked, r.Setup.Conns, thousands(int64(e.Redelivered)))
	}
	if e := r.E2E; e != nil {

		fmt.Fprintf(&b, "\n%-24s %8s %7s %10s %10s   (first byte → last row, %.1fs)\n", "process", "CPU s", "cores", "µs/line", "peak RSS", e.WindowSeconds)
		var total float64
		for _, p := range e.Processes {
			rss := "-"
			if p.PeakRSS > 0 {
				rss = mib(p.PeakRSS)
			}
			total += p.CPUSeconds
			fmt.Fprintf(&b, "%-24s %8.1f %7.2f %10.1f %10s\n", p.Name, p.CPUSeconds, p.Cores, perLine(p.CPUSeconds, e.EndToEnd.Lines), rss)
		}
		fmt.Fprintf(&b, "%-24s %8.1f %7.2f %10.1f\n", "total", total, total/e.WindowSeconds, perLine(total, e.EndToEnd.Lines))
		fmt.Fprintf(&b, "%-24s %8s %7.2f\n", "other (not this run)", "", e.OtherCores)
		fmt.Fprintf(&b, "machine busy %.0f%% of %d CPUs, iowait %.0f%%\n", e.BusyPct, r.Machine.CPUs, e.IOWaitPct)
		if top, share := e.topConsumer(); total > 0 {
			fmt.Fprintf(&b, "CPU ceiling: all %d CPUs at %.0f µs/line would carry %s lines/s; %s takes %.0f%% of the run's CPU\n",
				r.Machine.CPUs, perLine(total, e.EndToEnd.Lines), thousands(int64(float64(r.Machine.CPUs)/total*float64(e.EndToEnd.Lines))), top, 100*share)
		}
		if e.OtherCores > backgroundWarn {
			fmt.Fprintf(&b, "WARNING: %.2f cores went to work outside this run; its rates are skewed low\n", e.OtherCores)
		}
	}

	b.WriteByte('\n')
	for _, g := range []*connGoal{&r.Goal, r.CopyGoal} {
		if g == nil {
			continue
		}
		verdict := g.verdict()
		if g.Note == "" {
			verdict += " (" + g.unit(g.Measured) + ")"
		}
		fmt.Fprintf(&b, "goal: %s: %s\n", g.Text, verdict)
	}
	fmt.Fprintf(&b, "run time %s\n", (time.Duration(r.RunSeconds*10) * time.Second / 10).String())
	_, err := io.WriteString(w, b.String())
	return err
}

func (b binary) describe() string {
	if b.Built {
		return "built from source"
	}
	return b.Path
}

// topConsumer returns the process with the most CPU time and its share of
// the run's CPU time.
func (e *e2eResult) topConsumer() (string, float64) {
	var top string
	var most, total float64
	for _, p := range e.Processes {
		total += p.CPUSeconds
		if p.CPUSeconds > most {
			top, most = p.Name, p.CPUSeconds
		}
	}
	if total == 0 {
		return "", 0
	}
	return top, most / total
}

// perLine returns CPU seconds spread over lines, in microseconds.
func perLine(cpuSeconds float64, lines int) float64 {
	if lines == 0 {
		return 0
	}
	return cpuSeconds / float64(lines) * 1e6
}

func defaultMark(d bool) string {
	if d {
		return " (default)"
	}
	return ""
}

// thousands formats n with comma separators: 1234567 → "1,234,567".
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// mib formats a byte count in MiB, or GiB from 10 GiB up.
func mib(n int64) string {
	if n >= 10<<30 {
		return gib(n)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// seconds formats a duration in seconds, in ms below one second.
func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0fms", s*1000)
	}
	return fmt.Sprintf("%.2fs", s)
}
