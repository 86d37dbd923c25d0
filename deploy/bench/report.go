package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// copyGoalText is the raw landing's goal against one bare COPY of the same
// lines: Postgres bounds the raw landing, and frames leave the broker so
// little CPU that the workers' parallel COPYs should beat one backend's.
const copyGoalText = "raw landing end to end ≥ 1.7× one bare COPY"

// lineGoal returns the goal of a run of cfg that sends lines, by workload;
// [Report.judge] measures it.
func lineGoal(cfg Config) goal {
	switch {
	case cfg.Latency:
		return newGoal("lone-line row p99 ≤ 50 ms", 0.050, true, millis)
	case cfg.Compress != "":
		return newGoal("end to end ≥ 0.8× the xz -dc floor", 0.8, false, times)
	case cfg.Corpus == "small":
		return newGoal("end to end ≥ 400,000 lines/s", 400_000, false, perSec)
	case cfg.Against != "":
		return newGoal("end to end ≥ 0.8× the same lines through -against "+cfg.Against, 0.8, false, times)
	case cfg.typed():
		return newGoal("through a pipeline end to end ≥ 1.0× raw publish", 1.0, false, times)
	}
	return newGoal("end to end ≥ 0.5× raw publish", 0.5, false, times)
}

// judge works out a run's ratios and measures it against its goal, and the
// raw landing against its bare COPY.
func (r *Report) judge() {
	e := r.E2E
	if e == nil || e.EndToEnd.Seconds <= 0 {
		if r.Lone != nil {
			r.Goal.measure(r.Lone.P99)
		} else {
			r.Goal.Note = "no end-to-end run"
		}
		return
	}
	if r.Raw != nil && r.Raw.LinesPerSec > 0 {
		r.Ratio = e.EndToEnd.LinesPerSec / r.Raw.LinesPerSec
	}
	if a := r.Against; a != nil && a.EndToEnd.LinesPerSec > 0 {
		r.AgainstRatio = e.EndToEnd.LinesPerSec / a.EndToEnd.LinesPerSec
	}
	switch {
	case r.Against != nil:
		r.Goal.measure(r.AgainstRatio)
	case r.Dump != nil:
		r.Goal.measure(r.Dump.Floor.Seconds / e.EndToEnd.Seconds)
	case r.Corpus.Kind == "small":
		r.Goal.measure(e.EndToEnd.LinesPerSec)
	default:
		r.Goal.measure(r.Ratio)
	}
	if r.Copy != nil && r.Copy.LinesPerSec > 0 {
		r.CopyRatio = e.EndToEnd.LinesPerSec / r.Copy.LinesPerSec
		g := newGoal(copyGoalText, 1.7, false, times)
		g.measure(r.CopyRatio)
		r.CopyGoal = &g
	}
}

// goal is one goal of a run and how the run did. Measured must not exceed
// Goal when AtMost, else reach it; Measured is in the goal's unit, which
// formats it, and Ratio is Measured / Goal. Both are 0 and Note says why
// when it was not measured.
type goal struct {
	Text     string  `json:"text"`
	Goal     float64 `json:"goal"`
	AtMost   bool    `json:"at_most"`
	Measured float64 `json:"measured"`
	Ratio    float64 `json:"ratio"`
	Met      bool    `json:"met"`
	Note     string  `json:"note,omitempty"`
	unit     func(float64) string
}

func newGoal(text string, target float64, atMost bool, unit func(float64) string) goal {
	return goal{Text: text, Goal: target, AtMost: atMost, unit: unit}
}

func (g *goal) measure(v float64) {
	g.Measured, g.Ratio = v, v/g.Goal
	g.Met = v >= g.Goal
	if g.AtMost {
		g.Met = v <= g.Goal
	}
}

func (g goal) verdict() string {
	switch {
	case g.Note != "":
		return "not measured (" + g.Note + ")"
	case g.Met:
		return "met"
	}
	return "missed"
}

// Report is everything a run measured and what it ran with. It is printed
// as aligned text, or as JSON with -json.
type Report struct {
	Mode       string    `json:"mode"`
	Started    time.Time `json:"started"`
	RunSeconds float64   `json:"run_seconds"`
	Machine    machine   `json:"machine"`
	Corpus     struct {
		Kind          string  `json:"kind"`
		Lines         int     `json:"lines"`
		PayloadBytes  int64   `json:"payload_bytes"`
		AvgLineBytes  int64   `json:"avg_line_bytes"`
		Seed          uint64  `json:"seed"`
		GenerationSec float64 `json:"generation_seconds"`
	} `json:"corpus"`
	Setup    setup     `json:"setup"`
	Postgres pgFacts   `json:"postgres"`
	NATS     natsFacts `json:"nats"`
	Binaries binaries  `json:"binaries"`
	// Raw is the raw JetStream publish of the corpus, a message per line;
	// Ratio the end-to-end rate over it.
	Raw   *rate      `json:"raw_publish,omitempty"`
	Ratio float64    `json:"e2e_to_raw_ratio,omitempty"`
	E2E   *e2eResult `json:"e2e,omitempty"`
	// Dump is the compressed file sent with -compress, and its floor.
	Dump *dump       `json:"dump,omitempty"`
	Lone *loneResult `json:"lone,omitempty"`
	// Connections is what the connections mode found.
	Connections *connectionsResult `json:"connections,omitempty"`
	Goal        goal               `json:"goal"`
	// Copy is the raw landing's reference: one bare COPY of the same
	// lines. CopyRatio is the end-to-end rate over it, judged by CopyGoal.
	Copy      *rate   `json:"bare_copy,omitempty"`
	CopyRatio float64 `json:"e2e_to_copy_ratio,omitempty"`
	CopyGoal  *goal   `json:"copy_goal,omitempty"`
	// Against is the run of the same lines through -against's spec, after
	// the run's own; AgainstRatio the run's end-to-end rate over its.
	Against      *e2eResult `json:"against,omitempty"`
	AgainstRatio float64    `json:"e2e_to_against_ratio,omitempty"`
}

// machine is what the numbers were measured on; BackgroundCores is how
// many cores other processes kept busy in the second before the run.
type machine struct {
	CPUModel        string  `json:"cpu_model"`
	CPUs            int     `json:"cpus"`
	GOMAXPROCS      int     `json:"gomaxprocs"`
	MemBytes        int64   `json:"mem_bytes"`
	GoVersion       string  `json:"go_version"`
	OSArch          string  `json:"os_arch"`
	BackgroundCores float64 `json:"background_cores"`
}

func (m machine) summary() string {
	return fmt.Sprintf("%s, %d CPUs, GOMAXPROCS %d, %s RAM, %s %s; %.2f cores busy before the run",
		m.CPUModel, m.CPUs, m.GOMAXPROCS, gib(m.MemBytes), m.GoVersion, m.OSArch, m.BackgroundCores)
}

// setup is how the programs were run: the workers' effective settings,
// and the gateway's per-connection in-flight window, which the raw
// publishers use too.
type setup struct {
	Conns             int      `json:"conns"`
	Workers           int      `json:"workers"`
	WorkerConcurrency int      `json:"worker_concurrency"`
	BatchSize         int      `json:"batch_size"`
	MaxAckPending     int      `json:"max_ack_pending"`
	ChildEnv          []string `json:"child_env,omitempty"`
	RawWindow         window   `json:"window"`
}

// defaultMark marks a worker setting that -env left at its default.
func (s setup) defaultMark(name string) string {
	if slices.ContainsFunc(s.ChildEnv, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
		return ""
	}
	return " (default)"
}

// pgFacts is the Postgres the rows went to.
type pgFacts struct {
	Version  string    `json:"version"`
	Settings []setting `json:"settings"`
}

// setting is one server setting as reported by the server.
type setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
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
	model, mem := machineFacts()
	return &Report{
		Mode:    cfg.Mode,
		Started: time.Now().UTC().Truncate(time.Second),
		Machine: machine{CPUModel: model, CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), MemBytes: mem,
			GoVersion: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH},
		Setup: setup{Conns: cfg.Conns, Workers: cfg.Workers, WorkerConcurrency: wc.Concurrency, BatchSize: wc.BatchSize,
			MaxAckPending: wc.EffectiveMaxAckPending(), ChildEnv: cfg.ChildEnv, RawWindow: win},
		Goal: lineGoal(cfg),
	}, nil
}

func (r *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText writes the report as aligned text: the facts of the run, then
// what its mode measured, then the goals.
func (r *Report) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\njetline bench — mode %s — %s\n\n", r.Mode, r.Started.Format(time.RFC3339))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fact := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	env, programs := strings.Join(r.Setup.ChildEnv, " "), "gateway "+r.Binaries.Gateway.Path
	if c := r.Connections; c != nil {
		fact("machine", "%s; load average %s", r.Machine.summary(), c.LoadAvg)
		fact("limits", "open files: bench %s (hard %s), gateway %s; GATEWAY_MAX_CONNECTIONS %s",
			thousands(int64(c.OpenFiles)), thousands(int64(c.OpenFilesHard)), thousands(int64(c.GatewayOpenFiles)), thousands(int64(c.MaxConnections)))
		fact("clients", "from %s, %d at a time for %s per rate, one line per connection; no workers (a receipt needs only JetStream's acknowledgement)",
			c.SourceAddrs, c.Clients, time.Duration(c.DurationSeconds*float64(time.Second)))
		fact("tls", "ECDSA P-256 certificate signed by a CA of the run's own, verified; a full handshake per connection (no session resumption); %s", c.TLS.Protocol)
		if env != "" {
			fact("extra env", "%s", env)
		}
	} else {
		s := r.Setup
		fact("machine", "%s", r.Machine.summary())
		fact("corpus", "%s %s lines, %s payload, %s B/line avg, seed %d",
			thousands(int64(r.Corpus.Lines)), r.Corpus.Kind, mib(r.Corpus.PayloadBytes), thousands(r.Corpus.AvgLineBytes), r.Corpus.Seed)
		if d := r.Dump; d != nil {
			fact("dump", "%s, `%s` (%s), sent by %s", mib(d.Bytes), d.Command, d.Path, d.Sender)
		}
		fact("setup", "%d connections, %d workers × WORKER_CONCURRENCY %d%s, WORKER_BATCH_SIZE %d%s, max ack pending %s",
			s.Conns, s.Workers, s.WorkerConcurrency, s.defaultMark("WORKER_CONCURRENCY"),
			s.BatchSize, s.defaultMark("WORKER_BATCH_SIZE"), thousands(int64(s.MaxAckPending)))
		fact("", "in-flight window per connection %s lines / %s (gateway and raw publishers, which hold at most %s messages in flight together)",
			thousands(int64(s.RawWindow.Messages)), mib(s.RawWindow.Bytes), thousands(rawQueueMsgs))
		if env != "" {
			fact("", "extra env %s", env)
		}
		fact("postgres", "%s, %s", r.Postgres.Version, r.Postgres.settingsLine())
		programs += ", worker " + r.Binaries.Worker.Path
	}
	fact("nats", "%s, %s", r.NATS.Version, r.NATS.Store)
	fact("programs", "%s", programs)
	if err := tw.Flush(); err != nil {
		return err
	}
	if c := r.Connections; c != nil {
		c.writeText(&b, r.Machine.CPUs)
	} else {
		r.writeLines(&b)
	}
	fmt.Fprintf(&b, "run time %s\n", (time.Duration(r.RunSeconds*10) * time.Second / 10).String())
	_, err := io.WriteString(w, b.String())
	return err
}

// writeLines writes what a run that sends lines measured, and its goals.
func (r *Report) writeLines(b *strings.Builder) {
	e := r.E2E
	line := func(name, format string, args ...any) {
		fmt.Fprintf(b, "%-18s %s\n", name, fmt.Sprintf(format, args...))
	}
	row := func(name string, rt rate, what string) {
		line(name, "%10s %8.1f %7.1fs   %s", thousands(int64(rt.LinesPerSec)), rt.MiBPerSec, rt.Seconds, what)
	}
	if r.Raw != nil || e != nil {
		fmt.Fprintf(b, "\n%-18s %10s %8s %8s\n", "measurement", "lines/s", "MiB/s", "time")
	}
	if r.Raw != nil {
		row("raw publish", *r.Raw, fmt.Sprintf("JetStream PublishMsgAsync, every ack; %.0f µs CPU/line, machine %.0f%% busy",
			perLine(r.Raw.CPUSeconds, r.Raw.Lines), r.Raw.BusyPct))
	}
	if d := r.Dump; d != nil {
		row("xz -dc floor", d.Floor, fmt.Sprintf("xz -dc dump > /dev/null, MiB/s of decompressed output; %.0f µs CPU/line", perLine(d.Floor.CPUSeconds, d.Floor.Lines)))
	}
	if e != nil {
		typed, end := e.Expected.Spec != "", "last row committed"
		if typed {
			end = e.EndBasis
		}
		row("gateway ingest", e.Ingest, "first byte sent → last receipt")
		row("end to end", e.EndToEnd, "first byte sent → "+end)
		if e.Frames < 0 {
			b.WriteString("frames/s: n/a (gateway exports no frame counter)\n")
		} else if e.Frames > 0 {
			line("frames/s", "%10s %8s %8s   %s frames, %.1f lines per frame (%s)", thousands(int64(float64(e.Frames)/e.EndToEnd.Seconds)),
				"", "", thousands(e.Frames), float64(e.EndToEnd.Lines)/float64(e.Frames), framesMetric)
		}
		if c := r.Copy; c != nil {
			row("bare COPY", *c, fmt.Sprintf("one connection, one pgx CopyFrom of (line_id, payload jsonb lz4) into a fresh table; Postgres %.0f µs CPU/line",
				perLine(c.CPUSeconds, c.Lines)))
		}
		if r.Raw != nil {
			line("e2e / raw", "%9.2f×", r.Ratio)
		}
		if r.Copy != nil {
			line("e2e / bare COPY", "%9.2f×", r.CopyRatio)
		}
		if d := r.Dump; d != nil {
			line("e2e / xz floor", "%9.2f×   (of the time xz -dc takes)", d.Floor.Seconds/e.EndToEnd.Seconds)
		}
		if a := r.Against; a != nil {
			row("against", a.EndToEnd, fmt.Sprintf("the same lines end to end through %s, after this run; %.0f µs CPU/line in all", a.Expected.Spec, perLine(a.cpuSeconds(), a.EndToEnd.Lines)))
			line("e2e / against", "%9.2f×", r.AgainstRatio)
		}
		if typed {
			e.writeTables(b, line, r.Setup.Conns)
		} else {
			b.WriteByte('\n')
			e.writeLatency(line)
			line("checked", "%s rows, %s distinct lines, %d receipts ok, %s redelivered",
				thousands(int64(e.EndToEnd.Lines)), thousands(e.Expected.Tables[0].DistinctKeys), r.Setup.Conns, thousands(int64(e.Redelivered)))
		}
		e.writeUsage(b, r.Machine.CPUs)
	}
	if l := r.Lone; l != nil {
		b.WriteByte('\n')
		line("lone-line latency", "p50 %s, p99 %s, max %s over %d lines (row visible in Postgres − line written to the socket, one line at a time on an idle pipeline; rows counted every %s)",
			millis(l.P50), millis(l.P99), millis(l.Max), l.Lines, lonePoll)
	}
	b.WriteByte('\n')
	for _, g := range []*goal{&r.Goal, r.CopyGoal} {
		if g == nil {
			continue
		}
		verdict := g.verdict()
		if g.Note == "" {
			verdict += " (" + g.unit(g.Measured) + ")"
		}
		fmt.Fprintf(b, "goal: %s: %s\n", g.Text, verdict)
	}
}

// writeLatency writes the settle latency, or why there is none.
func (e *e2eResult) writeLatency(line func(name, format string, args ...any)) {
	if e.LatencySamples == 0 {
		line("settle latency", "%s", e.Latency)
		return
	}
	line("settle latency", "p50 %s, p99 %s over %s frames (%s; includes the wait behind the backlog)",
		seconds(e.LatencyP50), seconds(e.LatencyP99), thousands(int64(e.LatencySamples)), e.Latency)
}

// writeTables writes a run through a spec's part of the text report: the
// rows stored per table, what the spec made of the lines, how the end was
// taken, the latency and the checks, each with line.
func (e *e2eResult) writeTables(b *strings.Builder, line func(name, format string, args ...any), conns int) {
	x := e.Expected
	if len(x.Tables) == 1 {
		line("rows stored", "%10s rows/s   (%s rows in %.1fs)", thousands(int64(e.RowsPerSec)), thousands(e.Rows), e.EndToEnd.Seconds)
	} else {
		line("rows stored", "%10s rows/s   (%s rows in %.1fs, %d tables)", thousands(int64(e.RowsPerSec)), thousands(e.Rows), e.EndToEnd.Seconds, len(x.Tables))
		for _, t := range x.Tables {
			fmt.Fprintf(b, "  %-24s %10s rows/s   (%s rows)\n", t.Table, thousands(int64(t.RowsPerSec)), thousands(t.Rows))
		}
	}
	b.WriteByte('\n')
	line("pipeline", "%s → %s", x.Spec, x.tablesText())
	line("lines", "%s; worked out in-process with worker/pipeline", x.linesText())
	line("end of run", "%s (the consumer was seen drained %s after the last commit, polling every %s)", e.EndBasis, seconds(e.DrainedAfterCommit), drainPoll)
	e.writeLatency(line)
	for _, t := range x.Tables {
		name := ""
		if len(x.Tables) > 1 {
			name = t.Table + ": "
		}
		line("exactly once", "%scount(*) %s = count(DISTINCT %s) %s = expected %s",
			name, thousands(t.Rows), strings.Join(t.Key, ", "), thousands(t.DistinctKeys), thousands(t.Want))
	}
	line("", "%d receipts ok, %s redelivered", conns, thousands(int64(e.Redelivered)))
}

// cpuSeconds returns the CPU time the run's processes used.
func (e *e2eResult) cpuSeconds() float64 {
	var total float64
	for _, p := range e.Processes {
		total += p.CPUSeconds
	}
	return total
}

// writeUsage writes the table of each process's CPU and memory, and what
// they add up to.
func (e *e2eResult) writeUsage(b *strings.Builder, cpus int) {
	fmt.Fprintf(b, "\n%-24s %8s %7s %10s %10s   (first byte → last row, %.1fs)\n", "process", "CPU s", "cores", "µs/line", "peak RSS", e.WindowSeconds)
	total, most := e.cpuSeconds(), 0.0
	var top string
	for _, p := range e.Processes {
		rss := "-"
		if p.PeakRSS > 0 {
			rss = mib(p.PeakRSS)
		}
		if p.CPUSeconds > most {
			top, most = p.Name, p.CPUSeconds
		}
		fmt.Fprintf(b, "%-24s %8.1f %7.2f %10.1f %10s\n", p.Name, p.CPUSeconds, p.Cores, perLine(p.CPUSeconds, e.EndToEnd.Lines), rss)
	}
	fmt.Fprintf(b, "%-24s %8.1f %7.2f %10.1f\n", "total", total, total/e.WindowSeconds, perLine(total, e.EndToEnd.Lines))
	fmt.Fprintf(b, "%-24s %8s %7.2f\n", "other (not this run)", "", e.OtherCores)
	fmt.Fprintf(b, "machine busy %.0f%% of %d CPUs, iowait %.0f%%\n", e.BusyPct, cpus, e.IOWaitPct)
	if total > 0 {
		fmt.Fprintf(b, "CPU ceiling: all %d CPUs at %.0f µs/line would carry %s lines/s; %s takes %.0f%% of the run's CPU\n",
			cpus, perLine(total, e.EndToEnd.Lines), thousands(int64(float64(cpus)/total*float64(e.EndToEnd.Lines))), top, 100*most/total)
	}
	if e.OtherCores > backgroundWarn {
		fmt.Fprintf(b, "WARNING: %.2f cores went to work outside this run; its rates are skewed low\n", e.OtherCores)
	}
}

// perLine returns CPU seconds spread over lines (or connections), in
// microseconds.
func perLine(cpuSeconds float64, lines int) float64 {
	if lines == 0 {
		return 0
	}
	return cpuSeconds / float64(lines) * 1e6
}

var printer = message.NewPrinter(language.English)

// thousands formats n with comma separators: 1234567 → "1,234,567".
func thousands(n int64) string { return printer.Sprintf("%d", n) }

// mib formats a byte count in MiB, or GiB from 10 GiB up.
func mib(n int64) string {
	if n >= 10<<30 {
		return gib(n)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func gib(n int64) string      { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
func kib(v float64) string    { return fmt.Sprintf("%.1f KiB", v/1024) }
func perSec(v float64) string { return thousands(int64(v)) + "/s" }
func millis(s float64) string { return fmt.Sprintf("%.1fms", s*1000) }
func times(v float64) string  { return fmt.Sprintf("%.2f×", v) }

// seconds formats a duration in seconds, in ms below one second.
func seconds(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0fms", s*1000)
	}
	return fmt.Sprintf("%.2fs", s)
}
