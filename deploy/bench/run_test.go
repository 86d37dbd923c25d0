package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/shared/devkit/privatepg"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// binDir holds the gateway and the worker TestMain builds for the runs.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jetline-bench-bin-")
	if err == nil {
		err = testenv.Build(dir, nil, "github.com/jetline/jetline/gateway/cmd/gateway", "github.com/jetline/jetline/worker/cmd/worker")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: build the programs: %v\n", err)
		os.Exit(1)
	}
	binDir = dir
	testenv.Main(m, func() { os.RemoveAll(dir) })
}

// runReport runs the bench with args on the programs TestMain built, in a
// temporary directory of its own, and returns its JSON report and its
// output; it fails if the run leaves a file behind there. It skips in
// -short mode, and where Postgres is missing outside CI.
func runReport(t *testing.T, args ...string) (r Report, stdout, stderr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the programs and real servers")
	}
	cfg, err := parseFlags(append(args, "-gateway-bin", filepath.Join(binDir, "gateway"), "-worker-bin", filepath.Join(binDir, "worker"), "-json"))
	if err != nil {
		t.Fatal(err)
	}
	// Postgres, run as an unprivileged user when we are root, must reach
	// its data directory inside.
	tmp, err := os.MkdirTemp("", "jetline-bench-test-")
	if err == nil {
		err = os.Chmod(tmp, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	t.Setenv("TMPDIR", tmp)
	var out, errOut bytes.Buffer
	err = run(t.Context(), cfg, &out, &errOut)
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the run left %d files behind in %s", len(left), tmp)
	}
	if errors.Is(err, privatepg.ErrNoBinaries) && os.Getenv("CI") != "true" {
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

// TestRun runs every workload that sends lines through the real programs
// and servers, a few hundred lines each, and checks the report: every
// table holds exactly the rows its pipeline makes, the rates, latency and
// goal are measured, and nothing is left behind.
func TestRun(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // where the dump is kept
	typed := []string{"-mode", "typed", "-lines", "500", "-conns", "2", "-workers", "2"}
	for _, tt := range []struct {
		name   string
		args   []string
		goal   string
		tables int
		text   []string
		check  func(t *testing.T, r Report)
	}{
		{"raw", []string{"-lines", "600", "-conns", "3", "-workers", "2", "-env", "WORKER_BATCH_SIZE=100"}, "end to end ≥ 0.5× raw publish", 1,
			[]string{"e2e / bare COPY", "600 rows, 600 distinct lines, 3 receipts ok", "WORKER_BATCH_SIZE 100,"}, func(t *testing.T, r Report) {
				if c := r.Copy; c == nil || c.Lines != 600 || c.LinesPerSec <= 0 || c.CPUSeconds <= 0 || r.CopyGoal == nil || r.CopyGoal.Measured != r.CopyRatio || r.CopyRatio <= 0 {
					t.Errorf("bare copy = %+v, ratio %v, goal %+v", r.Copy, r.CopyRatio, r.CopyGoal)
				}
				if r.Goal.Measured != r.Ratio || r.Setup.BatchSize != 100 || r.E2E.Expected.Tables[0].DistinctKeys != 600 {
					t.Errorf("goal %+v, ratio %v, setup %+v", r.Goal, r.Ratio, r.Setup)
				}
				for _, s := range []string{"fsync=on", "synchronous_commit=on", "track_commit_timestamp=on"} {
					if !strings.Contains(r.Postgres.settingsLine(), s) {
						t.Errorf("postgres settings %q lack %s", r.Postgres.settingsLine(), s)
					}
				}
			}},
		{"tweets", append([]string{"-spec", "../pipelines/tweets.yaml"}, typed...), "through a pipeline end to end ≥ 1.0× raw publish", 1,
			[]string{"rows stored", "filtered", "exactly once", "count(DISTINCT id)"}, nil},
		// The live feed: users who come again, mentions, delete notices;
		// then the same lines through tweets.yaml, for the ratio.
		{"tweets-full", append([]string{"-spec", "../pipelines/tweets-full.yaml", "-corpus", "feed", "-against", "../pipelines/tweets.yaml"}, typed...),
			"end to end ≥ 0.8× the same lines through -against ../pipelines/tweets.yaml", 5, []string{"rows stored", "e2e / against"}, func(t *testing.T, r Report) {
				tables := map[string]int64{}
				for _, tr := range r.E2E.Expected.Tables {
					tables[tr.Table] = tr.Want
				}
				if tables["live.tweet_mentions"] == 0 || tables["live.tweets_tombstones"] == 0 || tables["live.users"] >= tables["live.tweets"] {
					t.Errorf("the feed made %v rows: want mentions, tombstones, and fewer users than tweets", tables)
				}
				a := r.Against
				if a == nil || a.Expected.Tables[0].Rows != a.Expected.Tables[0].Want || a.EndToEnd.Lines != r.Corpus.Lines || r.AgainstRatio <= 0 || r.Goal.Measured != r.AgainstRatio {
					t.Errorf("against = %+v, ratio %v, goal %+v", a, r.AgainstRatio, r.Goal)
				}
			}},
		{"small", append([]string{"-corpus", "small"}, typed...), "end to end ≥ 400,000 lines/s", 1, []string{"rows stored"}, func(t *testing.T, r Report) {
			if r.Goal.Measured != r.E2E.EndToEnd.LinesPerSec {
				t.Errorf("goal %+v, end to end %+v", r.Goal, r.E2E.EndToEnd)
			}
		}},
		{"dump", []string{"-mode", "typed", "-corpus", "archive", "-compress", "xz", "-lines", "1500", "-workers", "1"}, "end to end ≥ 0.8× the xz -dc floor", 1,
			[]string{"xz -dc floor", "e2e / xz floor"}, func(t *testing.T, r Report) {
				if d := r.Dump; d == nil || d.Bytes <= 0 || d.Floor.Lines != 1500 || d.Floor.CPUSeconds <= 0 || d.Cached || r.Setup.Conns != 1 ||
					r.Goal.Measured != d.Floor.Seconds/r.E2E.EndToEnd.Seconds {
					t.Errorf("dump = %+v, goal %+v", d, r.Goal)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, stdout, stderr := runReport(t, tt.args...)
			e := r.E2E
			if e == nil || len(e.Expected.Tables) != tt.tables {
				t.Fatalf("no result of %d tables:\n%s", tt.tables, stdout)
			}
			x, n := e.Expected, r.Corpus.Lines
			if r.Raw == nil || r.Raw.Lines != n || r.Raw.LinesPerSec <= 0 || r.Ratio <= 0 || x.Kept+x.Filtered+x.Rejected != n || x.Kept == 0 {
				t.Errorf("raw publish = %+v, ratio %v, expected %+v", r.Raw, r.Ratio, x)
			}
			for _, tr := range x.Tables {
				if tr.Rows != tr.Want || tr.DistinctKeys != tr.Want || tr.RowsPerSec <= 0 && tr.Want > 0 {
					t.Errorf("table %s: %d rows, %d distinct keys, %v rows/s; want %d rows", tr.Table, tr.Rows, tr.DistinctKeys, tr.RowsPerSec, tr.Want)
				}
			}
			if e.Rows != x.rows() || e.EndToEnd.Lines != n || e.RowsPerSec <= 0 || e.Ingest.Seconds > e.EndToEnd.Seconds+drainPoll.Seconds() || e.Frames <= 0 {
				t.Errorf("rows %d of %d; end to end %+v, ingest %+v, frames %d", e.Rows, x.rows(), e.EndToEnd, e.Ingest, e.Frames)
			}
			if int64(e.LatencySamples) < e.Frames || int64(e.LatencySamples) > e.Frames+int64(e.Redelivered) || e.LatencyP50 <= 0 || e.LatencyP99 < e.LatencyP50 {
				t.Errorf("latency p50 %v, p99 %v over %d frames of %d (%s)", e.LatencyP50, e.LatencyP99, e.LatencySamples, e.Frames, e.Latency)
			}
			names := map[string]bool{}
			for _, p := range e.Processes {
				names[p.Name] = true
				if p.Name != "postgres" && p.Name != benchProcName && p.PeakRSS <= 0 {
					t.Errorf("%s: no peak RSS", p.Name)
				}
			}
			if !names["gateway"] || !names["worker-1"] || !names["postgres"] || !filepath.IsAbs(r.Binaries.Worker.Path) {
				t.Errorf("processes %+v, programs %+v", e.Processes, r.Binaries)
			}
			if r.Goal.Text != tt.goal || r.Goal.Measured <= 0 {
				t.Errorf("goal = %+v, want %q", r.Goal, tt.goal)
			}
			for _, want := range append(tt.text, "goal: "+tt.goal, "frames/s") {
				if !strings.Contains(stderr, want) {
					t.Errorf("text report lacks %q:\n%s", want, stderr)
				}
			}
			if tt.check != nil {
				tt.check(t, r)
			}
			if kids := children(t); len(kids) > 0 {
				t.Errorf("processes left behind: %v", kids)
			}
		})
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

// TestExpectTweetsFull works out what the tweets-full spec makes of its
// sample: a tweet sent twice, users in several tweets, a hashtag twice in
// a tweet, deletes before and after their tweets, a line rejected.
func TestExpectTweetsFull(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../samples/tweets-full.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	c := &corpus{data: data}
	for i, b := range data {
		if b == '\n' {
			c.ends = append(c.ends, i+1)
		}
	}
	exp, err := expect("../pipelines/tweets-full.yaml", c)
	if err != nil {
		t.Fatal(err)
	}
	if exp.Kept != 7 || exp.Rejected != 1 || exp.Filtered != 0 {
		t.Errorf("kept %d, rejected %d (%s), filtered %d; want 7, 1, 0", exp.Kept, exp.Rejected, exp.linesText(), exp.Filtered)
	}
	type counts struct{ rows, most int64 }
	want := map[string]counts{
		"live.tweets":            {2, 4}, // 1001 and 1006; 1002 and 1005 deleted
		"live.users":             {2, 2},
		"live.tweet_hashtags":    {3, 3}, // Go and go are one tag
		"live.tweet_mentions":    {2, 2},
		"live.tweets_tombstones": {2, 2},
	}
	got := map[string]counts{}
	for _, x := range exp.Tables {
		got[x.Table] = counts{x.Want, x.Most}
	}
	if !maps.Equal(got, want) {
		t.Errorf("tables = %v, want %v", got, want)
	}
	if exp.Tables[0].Table != "live.tweets" {
		t.Errorf("first table %s, want live.tweets", exp.Tables[0].Table)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		xs   []float64
		p    float64
		want float64
	}{
		{[]float64{3}, 0.99, 3},
		{[]float64{4, 1, 3, 2}, 0.5, 2.5},
		{[]float64{10, 0}, 0.99, 9.9},
		{[]float64{5, 1, 9}, 0, 1},
	}
	for _, tt := range tests {
		if got := percentile(slices.Clone(tt.xs), tt.p); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("percentile(%v, %v) = %v, want %v", tt.xs, tt.p, got, tt.want)
		}
	}
}

// TestSettleLatency reads quantiles from the bucket counts the run added,
// interpolated within a bucket, and the largest finite bound for a
// quantile in the last.
func TestSettleLatency(t *testing.T) {
	t.Parallel()
	inf := math.Inf(1)
	before := map[float64]float64{0.5: 5, 1: 5, 2: 10, inf: 10}
	after := map[float64]float64{0.5: 15, 1: 55, 2: 110, inf: 110}
	var e e2eResult
	e.settleLatency(before, after)
	if e.LatencySamples != 100 || math.Abs(e.LatencyP50-1) > 1e-9 || math.Abs(e.LatencyP99-1.98) > 1e-9 {
		t.Errorf("p50 %v, p99 %v over %d frames; want 1 and 1.98 over 100", e.LatencyP50, e.LatencyP99, e.LatencySamples)
	}
	after[inf] = 120 // ten frames above 2 s
	e.settleLatency(before, after)
	if e.LatencySamples != 110 || e.LatencyP99 != 2 {
		t.Errorf("p99 %v over %d frames; want 2 over 110", e.LatencyP99, e.LatencySamples)
	}
}
