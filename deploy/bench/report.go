package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Goals of the runs that send lines, by workload (see [lineGoal]): the
// end-to-end rate as a share of the raw publish rate, raw landing and
// through a pipeline, of a dump as a share of the `xz -dc` floor, of small
// lines in lines/s, and the p99 of a lone line's wait for its row in
// seconds.
const (
	goalRatio       = 0.5
	goalTypedRatio  = 1.0
	goalFloorRatio  = 0.8
	goalSmallPerSec = 400_000
	goalLoneP99     = 0.050
)

// lineGoal returns the goal of a run of cfg that sends lines; [Report.judge]
// measures it.
func lineGoal(cfg Config) goal {
	switch {
	case cfg.Latency:
		return newGoal("lone-line row p99 ≤ 50 ms", goalLoneP99, true, millis)
	case cfg.Compress != "":
		return newGoal("end to end ≥ 0.8× the xz -dc floor", goalFloorRatio, false, times)
	case cfg.Corpus == "small":
		return newGoal("end to end ≥ 400,000 lines/s", goalSmallPerSec, false, perSec)
	case cfg.typed():
		return newGoal("through a pipeline end to end ≥ 1.0× raw publish", goalTypedRatio, false, times)
	}
	return newGoal("end to end ≥ 0.5× raw publish", goalRatio, false, times)
}

// judge measures the run against its goal, and the raw landing against
// its bare COPY when the run made one.
func (r *Report) judge() {
	if r.Copy != nil {
		g := newGoal(copyGoalText, goalCopyRatio, false, times)
		if e := r.E2E; e != nil && e.EndToEnd.Seconds > 0 && r.Copy.LinesPerSec > 0 {
			r.CopyRatio = e.EndToEnd.LinesPerSec / r.Copy.LinesPerSec
			g.measure(r.CopyRatio)
		} else {
			g.Note = "no end-to-end run"
		}
		r.CopyGoal = &g
	}
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

// goal is one goal of a run and how the run did: each of the connections
// mode's, or the one of a run that sends lines.
type goal struct {
	Text string  `json:"text"`
	Goal float64 `json:"goal"`
	// AtMost is true when Measured must not exceed Goal, false when it
	// must reach it.
	AtMost bool `json:"at_most"`
	// Measured is in the goal's unit; Ratio is Measured / Goal. Both are
	// 0 and Note says why when it was not measured.
	Measured float64 `json:"measured"`
	Ratio    float64 `json:"ratio"`
	Met      bool    `json:"met"`
	Note     string  `json:"note,omitempty"`
	// unit formats Measured for the text report.
	unit func(float64) string
}

func newGoal(text string, target float64, atMost bool, unit func(float64) string) goal {
	return goal{Text: text, Goal: target, AtMost: atMost, unit: unit}
}

// measure records the measured value v.
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
	// Typed is what a run through a pipeline spec found besides E2E.
	Typed *typedResult `json:"typed,omitempty"`
	// Connections is what the connections mode found.
	Connections *connectionsResult `json:"connections,omitempty"`
	// Ratio is the end-to-end rate over the raw publish rate.
	Ratio float64 `json:"e2e_to_raw_ratio,omitempty"`
	Goal  goal    `json:"goal"`
	// Copy is the raw landing's reference: one bare COPY of the same
	// lines (the e2e mode without -latency). CopyRatio is the end-to-end
	// rate over it, judged by CopyGoal.
	Copy      *copyResult `json:"bare_copy,omitempty"`
	CopyRatio float64     `json:"e2e_to_copy_ratio,omitempty"`
	CopyGoal  *goal       `json:"copy_goal,omitempty"`
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
	model, mem := machineFacts()
	return &Report{
		Mode:    cfg.Mode,
		Started: time.Now().UTC().Truncate(time.Second),
		Machine: machine{CPUModel: model, CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), MemBytes: mem,
			GoVersion: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH},
		Setup: setup{Conns: cfg.Conns, Workers: cfg.Workers,
			WorkerConcurrency: wc.Concurrency, WorkerConcurrencyDefault: cfg.WorkerConcurrency == 0,
			BatchSize: wc.BatchSize, BatchSizeDefault: cfg.BatchSize == 0,
			MaxAckPending: wc.EffectiveMaxAckPending(), ChildEnv: cfg.ChildEnv, RawWindow: win},
		Goal: lineGoal(cfg),
	}, nil
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

// writeText writes the report as aligned text: the facts of the run, then
// what its mode measured, then the goals.
func (r *Report) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\njetline bench — mode %s — %s\n\n", r.Mode, r.Started.Format(time.RFC3339))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if c := r.Connections; c != nil {
		fmt.Fprintf(tw, "machine\t%s; load average %s\n", r.Machine.summary(), c.LoadAvg)
		fmt.Fprintf(tw, "limits\topen files: bench %s (hard %s), gateway %s; GATEWAY_MAX_CONNECTIONS %s\n",
			thousands(int64(c.OpenFiles)), thousands(int64(c.OpenFilesHard)), thousands(int64(c.GatewayOpenFiles)), thousands(int64(c.MaxConnections)))
		fmt.Fprintf(tw, "clients\tfrom %s, %d at a time for %s per rate, one line per connection; no workers (a receipt needs only JetStream's acknowledgement)\n",
			c.SourceAddrs, c.Clients, time.Duration(c.DurationSeconds*float64(time.Second)))
		if c.TLS != nil {
			fmt.Fprintf(tw, "tls\tself-signed ECDSA P-256 certificate, verified; a full handshake per connection (no session resumption); %s\n", c.TLS.Protocol)
		} else {
			fmt.Fprint(tw, "tls\tnot measured (not run)\n")
		}
		if len(r.Setup.ChildEnv) > 0 {
			fmt.Fprintf(tw, "extra env\t%s\n", strings.Join(r.Setup.ChildEnv, " "))
		}
		fmt.Fprintf(tw, "nats\t%s, %s\n", r.NATS.Version, r.NATS.Store)
		fmt.Fprintf(tw, "programs\tgateway %s\n", r.Binaries.Gateway.describe())
		if err := tw.Flush(); err != nil {
			return err
		}
		c.writeText(&b, r.Machine.CPUs)
	} else {
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
		r.writeLines(&b)
	}
	fmt.Fprintf(&b, "run time %s\n", (time.Duration(r.RunSeconds*10) * time.Second / 10).String())
	_, err := io.WriteString(w, b.String())
	return err
}

// writeLines writes what a run that sends lines measured, and its goals.
func (r *Report) writeLines(b *strings.Builder) {
	if r.Raw != nil || r.E2E != nil {
		fmt.Fprintf(b, "\n%-18s %10s %8s %8s\n", "measurement", "lines/s", "MiB/s", "time")
	}
	row := func(name string, rt rate, what string) {
		fmt.Fprintf(b, "%-18s %10s %8.1f %7.1fs   %s\n", name, thousands(int64(rt.LinesPerSec)), rt.MiBPerSec, rt.Seconds, what)
	}
	ratio := func(name string, v float64, what string) { fmt.Fprintf(b, "%-18s %9.2f×%s\n", name, v, what) }
	if r.Raw != nil {
		row("raw publish", r.Raw.rate, fmt.Sprintf("JetStream PublishMsgAsync, every ack; %.0f µs CPU/line, machine %.0f%% busy",
			perLine(r.Raw.CPUSeconds, r.Raw.Lines), r.Raw.BusyPct))
	}
	if d := r.Dump; d != nil {
		row("xz -dc floor", d.Floor, fmt.Sprintf("xz -dc dump > /dev/null, MiB/s of decompressed output; %.0f µs CPU/line", perLine(d.FloorCPUSeconds, d.Floor.Lines)))
	}
	e := r.E2E
	if e != nil {
		row("gateway ingest", e.Ingest, "first byte sent → last receipt")
		end := "first byte sent → last row committed"
		if r.Typed != nil {
			end = "first byte sent → " + r.Typed.EndBasis
		}
		row("end to end", e.EndToEnd, end)
		if e.Frames < 0 {
			fmt.Fprintf(b, "frames/s: n/a (gateway exports no frame counter)\n")
		} else if e.Frames > 0 {
			fmt.Fprintf(b, "%-18s %10s %8s %8s   %s frames, %.1f lines per frame (%s)\n", "frames/s", thousands(int64(float64(e.Frames)/e.EndToEnd.Seconds)),
				"", "", thousands(e.Frames), float64(e.EndToEnd.Lines)/float64(e.Frames), framesMetric)
		}
	}
	if c := r.Copy; c != nil {
		row("bare COPY", c.rate, fmt.Sprintf("one connection, one pgx CopyFrom of (line_id, payload jsonb lz4) into a fresh table; Postgres %.0f µs CPU/line",
			perLine(c.PostgresCPUSeconds, c.Lines)))
	}
	if r.Raw != nil && e != nil {
		ratio("e2e / raw", r.Ratio, "")
	}
	if r.Copy != nil && e != nil {
		ratio("e2e / bare COPY", r.CopyRatio, "")
	}
	if d := r.Dump; d != nil && e != nil {
		ratio("e2e / xz floor", d.Floor.Seconds/e.EndToEnd.Seconds, "   (of the time xz -dc takes)")
	}
	if l := r.Lone; l != nil {
		fmt.Fprintf(b, "\n%-18s p50 %s, p99 %s, max %s over %d lines (row visible in Postgres − line written to the socket, one line at a time on an idle pipeline; rows counted every %s)\n",
			"lone-line latency", millis(l.P50), millis(l.P99), millis(l.Max), l.Lines, lonePoll)
	}
	if e != nil && r.Typed != nil {
		r.Typed.writeText(b, e, r.Setup.Conns)
	} else if e != nil {
		fmt.Fprintf(b, "\n%-18s p50 %s, p99 %s (row commit time − gateway read time; includes the wait behind the backlog)\n",
			"line→row latency", seconds(e.LatencyP50), seconds(e.LatencyP99))
		fmt.Fprintf(b, "%-18s %s rows, %s distinct lines, %d receipts ok, %s redelivered\n", "checked",
			thousands(int64(e.EndToEnd.Lines)), thousands(e.DistinctLines), r.Setup.Conns, thousands(int64(e.Redelivered)))
	}
	if e != nil {
		e.writeUsage(b, r.Machine.CPUs)
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

// writeText writes a typed run's part of the text report: the rows
// stored per table, what the spec made of the lines, how the end was
// taken, the latency and the checks.
func (t *typedResult) writeText(b *strings.Builder, e *e2eResult, conns int) {
	x := t.Expected
	if len(t.Tables) == 1 {
		fmt.Fprintf(b, "%-18s %10s rows/s   (%s rows in %.1fs)\n", "rows stored", thousands(int64(t.RowsPerSec)), thousands(t.Rows), e.EndToEnd.Seconds)
	} else {
		fmt.Fprintf(b, "%-18s %10s rows/s   (%s rows in %.1fs, %d tables)\n", "rows stored", thousands(int64(t.RowsPerSec)), thousands(t.Rows), e.EndToEnd.Seconds, len(t.Tables))
		for _, tr := range t.Tables {
			fmt.Fprintf(b, "  %-24s %10s rows/s   (%s rows)\n", tr.Table, thousands(int64(tr.RowsPerSec)), thousands(tr.Rows))
		}
	}
	fmt.Fprintf(b, "\n%-18s %s → %s\n", "pipeline", x.Spec, x.tablesText())
	fmt.Fprintf(b, "%-18s %s kept, %s filtered, %s rejected (%s); worked out in-process with worker/pipeline\n", "lines",
		thousands(int64(x.Kept)), thousands(int64(x.Filtered)), thousands(int64(x.Rejected)), x.rejectedText())
	fmt.Fprintf(b, "%-18s %s (the consumer was seen drained %s after the last commit, polling every %s)\n", "end of run", t.EndBasis,
		seconds(t.DrainedAfterCommit), drainPoll)
	if t.LatencySamples > 0 {
		fmt.Fprintf(b, "%-18s p50 %s, p99 %s over %s rows of %s (%s; includes the wait behind the backlog)\n",
			"line→row latency", seconds(e.LatencyP50), seconds(e.LatencyP99), thousands(int64(t.LatencySamples)), x.Tables[0].Table, t.Latency)
	} else {
		fmt.Fprintf(b, "%-18s %s\n", "line→row latency", t.Latency)
	}
	for i, tr := range t.Tables {
		name := ""
		if len(t.Tables) > 1 {
			name = tr.Table + ": "
		}
		fmt.Fprintf(b, "%-18s %scount(*) %s = count(DISTINCT %s) %s = expected %s\n", "exactly once",
			name, thousands(tr.Rows), strings.Join(x.Tables[i].Key, ", "), thousands(tr.DistinctKeys), thousands(x.Tables[i].Rows))
	}
	fmt.Fprintf(b, "%-18s %d receipts ok, %s redelivered\n", "", conns, thousands(int64(e.Redelivered)))
}

// writeUsage writes the table of each process's CPU and memory, and what
// they add up to.
func (e *e2eResult) writeUsage(b *strings.Builder, cpus int) {
	fmt.Fprintf(b, "\n%-24s %8s %7s %10s %10s   (first byte → last row, %.1fs)\n", "process", "CPU s", "cores", "µs/line", "peak RSS", e.WindowSeconds)
	var total, most float64
	var top string
	for _, p := range e.Processes {
		rss := "-"
		if p.PeakRSS > 0 {
			rss = mib(p.PeakRSS)
		}
		total += p.CPUSeconds
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

func defaultMark(d bool) string {
	if d {
		return " (default)"
	}
	return ""
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
