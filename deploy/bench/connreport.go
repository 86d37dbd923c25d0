package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// connectionsResult is what the connections mode found and what with.
type connectionsResult struct {
	IdleConns       int     `json:"idle_conns"`
	Clients         int     `json:"clients"`
	DurationSeconds float64 `json:"duration_seconds"`
	// SourceAddrs are the clients' local addresses.
	SourceAddrs string `json:"source_addrs"`
	// MaxConnections is the GATEWAY_MAX_CONNECTIONS the gateway ran with
	// unless -env overrode it.
	MaxConnections int `json:"max_connections"`
	// OpenFiles and OpenFilesHard are the bench's limits on open files
	// (the soft one raised to the hard one), GatewayOpenFiles the
	// gateway's soft limit.
	OpenFiles        uint64 `json:"open_files"`
	OpenFilesHard    uint64 `json:"open_files_hard"`
	GatewayOpenFiles uint64 `json:"gateway_open_files"`
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute load when the mode
	// started.
	LoadAvg string `json:"load_avg"`
	// GatewayPeakRSS is the gateway's VmHWM at the end.
	GatewayPeakRSS int64 `json:"gateway_peak_rss_bytes"`

	Idle  idleResult  `json:"idle"`
	Plain *rateResult `json:"plain,omitempty"`
	// TLS is nil when the run ended before its TLS rate.
	TLS *rateResult `json:"tls,omitempty"`

	Goals []connGoal `json:"goals"`
}

// connGoal is one goal of a run and how the run did: each of the
// connections mode's, or the one of a mode that sends lines.
type connGoal struct {
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

func newGoal(text string, goal float64, atMost bool, unit func(float64) string) connGoal {
	return connGoal{Text: text, Goal: goal, AtMost: atMost, unit: unit}
}

// measure records the measured value v.
func (g *connGoal) measure(v float64) {
	g.Measured, g.Ratio = v, v/g.Goal
	g.Met = v >= g.Goal
	if g.AtMost {
		g.Met = v <= g.Goal
	}
}

func (g connGoal) verdict() string {
	switch {
	case g.Note != "":
		return "not measured (" + g.Note + ")"
	case g.Met:
		return "met"
	}
	return "missed"
}

func kib(v float64) string      { return fmt.Sprintf("%.1f KiB", v/1024) }
func perSec(v float64) string   { return thousands(int64(v)) + "/s" }
func millis(s float64) string   { return fmt.Sprintf("%.1fms", s*1000) }
func cores(c float64) string    { return fmt.Sprintf("%.2f cores", c) }
func perConn(us float64) string { return fmt.Sprintf("%.0f µs/conn", us) }

// setConnections records the connections mode's result and checks it
// against the goals.
func (r *Report) setConnections(res connectionsResult) {
	idle := newGoal("gateway RSS per idle connection ≤ 16 KiB", goalIdleBytes, true, kib)
	idle.measure(res.Idle.BytesPerConn)
	plain := newGoal("plain connections ≥ 5,000/s", goalPlainPerSec, false, perSec)
	if res.Plain != nil {
		plain.measure(res.Plain.PerSec)
	} else {
		plain.Note = "not run"
	}
	secure := newGoal("TLS handshakes ≥ 1,000/s (ECDSA P-256, full)", goalTLSPerSec, false, perSec)
	if res.TLS != nil {
		secure.measure(res.TLS.PerSec)
	} else {
		secure.Note = "not run"
	}
	res.Goals = []connGoal{idle, plain, secure}
	r.Connections = &res
	r.Goal = connGoal{Text: connGoalText, Met: idle.Met && plain.Met && secure.Met}
}

// writeConnectionsText writes the report of the connections mode as
// aligned text.
func (r *Report) writeConnectionsText(w io.Writer) error {
	c := r.Connections
	var b strings.Builder
	fmt.Fprintf(&b, "\njetline bench — mode %s — %s\n\n", r.Mode, r.Started.Format(time.RFC3339))

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
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

	i := c.Idle
	fmt.Fprintf(&b, "\n%-18s %s held open, accepted in %.1fs; gateway RSS %s → %s: %s per connection\n",
		"idle connections", thousands(int64(i.Conns)), i.AcceptSeconds, mib(i.RSSBefore), mib(i.RSSAfter), kib(i.BytesPerConn))
	if i.GoroutinesBefore >= 0 && i.GoroutinesAfter >= 0 {
		fmt.Fprintf(&b, "%-18s gateway goroutines %s → %s (%.1f per connection)\n", "",
			thousands(int64(i.GoroutinesBefore)), thousands(int64(i.GoroutinesAfter)), float64(i.GoroutinesAfter-i.GoroutinesBefore)/float64(i.Conns))
	} else {
		fmt.Fprintf(&b, "%-18s gateway goroutines not known (the gateway serves no go_goroutines on /metrics)\n", "")
	}
	fmt.Fprintf(&b, "%-18s all closed: every session ended in %.1fs, RSS %s, gateway still serving; peak RSS of the run %s\n", "",
		i.CloseSeconds, mib(i.RSSClosed), mib(c.GatewayPeakRSS))

	rates := []*rateResult{}
	for _, rr := range []*rateResult{c.Plain, c.TLS} {
		if rr != nil {
			rates = append(rates, rr)
		}
	}
	if len(rates) > 0 {
		fmt.Fprintf(&b, "\n%-10s %10s %10s %8s %9s %9s   (%d clients; connect → one line → half-close → receipt → close)\n",
			"rate", "conns/s", "ok", "failed", "p50", "p99", c.Clients)
		for _, rr := range rates {
			extra := ""
			if rr.HandshakeP50 > 0 {
				extra = fmt.Sprintf("   handshake p50 %s, p99 %s", millis(rr.HandshakeP50), millis(rr.HandshakeP99))
			}
			fmt.Fprintf(&b, "%-10s %10s %10s %8s %9s %9s%s\n", rr.Name, thousands(int64(rr.PerSec)), thousands(rr.OK),
				thousands(rr.Failed), millis(rr.P50), millis(rr.P99), extra)
		}
		for _, rr := range rates {
			fmt.Fprintf(&b, "%-10s %s: %s connections in %.1fs, the gateway numbered %s, %s receipts ok, %s lines stored\n",
				"checked", rr.Name, thousands(rr.Attempted), rr.Seconds, thousands(rr.Accepted), thousands(rr.OK), thousands(rr.StoredLines))
			for _, e := range rr.Errors {
				fmt.Fprintf(&b, "%-10s %s: %s × %s\n", "errors", rr.Name, thousands(e.Count), e.Kind)
			}
		}

		fmt.Fprintf(&b, "\n%-24s", "CPU")
		for _, rr := range rates {
			fmt.Fprintf(&b, " %24s", rr.Name)
		}
		b.WriteString("\n")
		cpuRow := func(name string, cell func(*rateResult) string) {
			fmt.Fprintf(&b, "%-24s", name)
			for _, rr := range rates {
				fmt.Fprintf(&b, " %24s", cell(rr))
			}
			b.WriteString("\n")
		}
		cpuRow("gateway", func(rr *rateResult) string {
			return cores(rr.GatewayCores) + ", " + perConn(rr.gatewayCPUPerConn())
		})
		cpuRow("bench (clients + NATS)", func(rr *rateResult) string {
			return cores(rr.BenchCores) + ", " + perConn(perLine(rr.BenchCPUSeconds, int(rr.OK)))
		})
		cpuRow("other (not these two)", func(rr *rateResult) string { return cores(rr.OtherCores) })
		cpuRow("machine busy", func(rr *rateResult) string { return fmt.Sprintf("%.0f%% of %d CPUs", rr.BusyPct, r.Machine.CPUs) })
		for _, rr := range rates {
			if us := rr.gatewayCPUPerConn(); us > 0 {
				fmt.Fprintf(&b, "CPU ceiling: the gateway alone, at %.0f µs per %s connection, would carry %s connections/s on %d CPUs; here the clients and NATS share them\n",
					us, rr.Name, thousands(int64(float64(r.Machine.CPUs)*1e6/us)), r.Machine.CPUs)
			}
			if rr.OtherCores > backgroundWarn {
				fmt.Fprintf(&b, "WARNING: %.2f cores went to other processes or the kernel (its share of loopback TCP included) during %s; its rate is skewed low\n", rr.OtherCores, rr.Name)
			}
		}
	}

	fmt.Fprintf(&b, "\n%-46s %14s %8s   %s\n", "goal", "measured", "/goal", "verdict")
	for _, g := range c.Goals {
		if g.Note != "" {
			fmt.Fprintf(&b, "%-46s %14s %8s   %s\n", g.Text, "-", "-", g.verdict())
			continue
		}
		fmt.Fprintf(&b, "%-46s %14s %7.2f×   %s\n", g.Text, g.unit(g.Measured), g.Ratio, g.verdict())
	}
	fmt.Fprintf(&b, "run time %s\n", (time.Duration(r.RunSeconds*10) * time.Second / 10).String())
	_, err := io.WriteString(w, b.String())
	return err
}
