package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/shared/devkit/privatepg"
)

// runReport runs the bench with args on the programs `make build` made,
// and returns its JSON report and its output. It skips in -short mode, and
// where Postgres or the programs are missing outside CI.
func runReport(t *testing.T, args ...string) (r Report, stdout, stderr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the programs and real servers")
	}
	bin := filepath.Join("..", "..", ".data", "bin")
	cfg, err := parseFlags(append(args, "-gateway-bin", filepath.Join(bin, "gateway"), "-worker-bin", filepath.Join(bin, "worker"), "-json"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = run(t.Context(), cfg, &out, &errOut)
	if _, statErr := os.Stat(cfg.WorkerBin); (errors.Is(err, privatepg.ErrNoBinaries) || statErr != nil) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, out.String())
	}
	return r, out.String(), errOut.String()
}

// TestRunE2E runs the raw landing on a few hundred lines and checks the
// report, the bare COPY, and that nothing is left behind.
func TestRunE2E(t *testing.T) {
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "jetline-bench-*"))
	r, stdout, stderr := runReport(t, "-lines", "600", "-conns", "3", "-workers", "2", "-env", "WORKER_BATCH_SIZE=100")
	if r.Raw == nil || r.Raw.Lines != 600 || r.Raw.LinesPerSec <= 0 || r.Raw.CPUSeconds <= 0 {
		t.Errorf("raw publish = %+v", r.Raw)
	}
	e := r.E2E
	if e == nil {
		t.Fatalf("no end-to-end result:\n%s", stdout)
	}
	if e.EndToEnd.Lines != 600 || e.EndToEnd.LinesPerSec <= 0 || e.Expected.Tables[0].DistinctKeys != 600 || e.Ingest.Seconds > e.EndToEnd.Seconds {
		t.Errorf("end to end = %+v, ingest %+v, tables %+v", e.EndToEnd, e.Ingest, e.Expected.Tables)
	}
	if e.LatencyP50 <= 0 || e.LatencyP99 < e.LatencyP50 || e.Frames <= 0 {
		t.Errorf("latency p50 %v, p99 %v, frames %d", e.LatencyP50, e.LatencyP99, e.Frames)
	}
	if c := r.Copy; c == nil || c.Lines != 600 || c.LinesPerSec <= 0 || c.CPUSeconds <= 0 ||
		r.CopyGoal == nil || r.CopyGoal.Measured != r.CopyRatio || r.CopyRatio <= 0 {
		t.Errorf("bare copy = %+v, ratio %v, goal %+v", r.Copy, r.CopyRatio, r.CopyGoal)
	}
	if r.Ratio <= 0 || r.Goal.Measured != r.Ratio || r.Setup.BatchSize != 100 || !filepath.IsAbs(r.Binaries.Worker.Path) {
		t.Errorf("report = %+v", r)
	}
	names := map[string]bool{}
	for _, p := range e.Processes {
		names[p.Name] = true
		if p.Name != "postgres" && p.Name != benchProcName && p.PeakRSS <= 0 {
			t.Errorf("%s: no peak RSS", p.Name)
		}
	}
	for _, want := range []string{"gateway", "worker-1", "worker-2", "postgres"} {
		if !names[want] {
			t.Errorf("process table lacks %s: %+v", want, e.Processes)
		}
	}
	for _, s := range []string{"fsync=on", "synchronous_commit=on", "track_commit_timestamp=on"} {
		if !strings.Contains(r.Postgres.settingsLine(), s) {
			t.Errorf("postgres settings %q lack %s", r.Postgres.settingsLine(), s)
		}
	}
	for _, want := range []string{"goal: end to end ≥ 0.5× raw publish", "e2e / bare COPY", "600 rows, 600 distinct lines, 3 receipts ok", "WORKER_BATCH_SIZE 100,"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("text report lacks %q:\n%s", want, stderr)
		}
	}

	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "jetline-bench-*"))
	if len(after) > len(before) {
		t.Errorf("temporary directories left behind: %v (before: %v)", after, before)
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}

// TestRunDump sends an xz-compressed archive corpus through its own
// pipeline and checks the floor, the receipt of the dump and the goal.
func TestRunDump(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // where the dump is kept
	r, _, stderr := runReport(t, "-mode", "typed", "-corpus", "archive", "-compress", "xz", "-lines", "1500", "-workers", "1")
	d := r.Dump
	if d == nil || d.Bytes <= 0 || d.Floor.Seconds <= 0 || d.Floor.Lines != 1500 || d.Floor.CPUSeconds <= 0 || d.Cached {
		t.Fatalf("dump = %+v", d)
	}
	if r.E2E == nil || r.E2E.Rows != r.E2E.Expected.rows() || r.E2E.Rows < 2 || r.Setup.Conns != 1 {
		t.Fatalf("end to end = %+v", r.E2E)
	}
	if r.Goal.Text != "end to end ≥ 0.8× the xz -dc floor" || r.Goal.Measured != d.Floor.Seconds/r.E2E.EndToEnd.Seconds {
		t.Errorf("goal = %+v", r.Goal)
	}
	for _, want := range []string{"xz -dc floor", "e2e / xz floor", "frames/s"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("text report lacks %q:\n%s", want, stderr)
		}
	}
}

// TestRunLone sends lone lines and checks their latency is reported and
// judged.
func TestRunLone(t *testing.T) {
	r, _, stderr := runReport(t, "-latency", "-lines", "5", "-workers", "1")
	l := r.Lone
	if l == nil || l.Lines != 5 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 || r.Raw != nil {
		t.Fatalf("lone = %+v, raw %+v", l, r.Raw)
	}
	if r.Goal.Measured != l.P99 || r.Goal.Note != "" || !strings.Contains(stderr, "lone-line latency") {
		t.Errorf("goal = %+v\n%s", r.Goal, stderr)
	}
}

// children returns the live processes whose parent is this one.
func children(t *testing.T) []string {
	t.Helper()
	procs, err := procfs.AllProcs()
	if err != nil {
		t.Skip("no /proc")
	}
	var out []string
	for _, p := range procs {
		st, err := p.Stat()
		if err == nil && st.PPID == os.Getpid() && st.State != "Z" {
			out = append(out, fmt.Sprintf("%d (%s)", p.PID, st.Comm))
		}
	}
	return out
}
