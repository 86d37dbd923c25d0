package main

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestRunTyped runs the typed mode on a few hundred lines with the tweets
// spec, building the programs from source, and checks that the table
// holds exactly the rows the spec keeps.
func TestRunTyped(t *testing.T) {
	r, stdout, stderr := runReport(t, "-mode", "typed", "-spec", "../pipelines/tweets.yaml",
		"-lines", "500", "-conns", "2", "-workers", "2", "-batch", "100")
	if r.Raw == nil || r.Raw.Lines != 500 || r.Ratio <= 0 {
		t.Errorf("raw publish = %+v, ratio %v", r.Raw, r.Ratio)
	}
	e, x := r.E2E, r.Typed
	if e == nil || x == nil || x.Expected == nil {
		t.Fatalf("no typed result:\n%s", stdout)
	}
	if x.Expected.Kept+x.Expected.Filtered+x.Expected.Rejected != 500 || x.Expected.Kept == 0 || x.Expected.Filtered == 0 {
		t.Errorf("expected outcomes = %+v; the tweets spec keeps some lines and filters others", x.Expected)
	}
	if x.Rows != x.Expected.Rows || x.DistinctKeys != x.Expected.Rows || e.DistinctLines != x.Expected.Rows {
		t.Errorf("rows %d, distinct keys %d, want %d", x.Rows, x.DistinctKeys, x.Expected.Rows)
	}
	if e.EndToEnd.Lines != 500 || e.EndToEnd.LinesPerSec <= 0 || x.RowsPerSec <= 0 || e.Ingest.Seconds > e.EndToEnd.Seconds+drainPoll.Seconds() {
		t.Errorf("end to end = %+v, ingest %+v, rows/s %v", e.EndToEnd, e.Ingest, x.RowsPerSec)
	}
	if x.EndBasis != "last commit" && x.EndBasis != "consumer drained" {
		t.Errorf("end basis %q", x.EndBasis)
	}
	if x.LatencySamples != int(x.Rows) || e.LatencyP50 <= 0 || e.LatencyP99 < e.LatencyP50 {
		t.Errorf("latency p50 %v, p99 %v over %d rows (%s)", e.LatencyP50, e.LatencyP99, x.LatencySamples, x.Latency)
	}
	for _, want := range []string{"rows stored", "kept", "filtered", "exactly once", "count(DISTINCT id)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("text report lacks %q:\n%s", want, stderr)
		}
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
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

func TestKeyText(t *testing.T) {
	t.Parallel()
	row := []any{int64(-42), "x", int32(7)}
	if got := keyText(row, []int{0}); got != "-42" {
		t.Errorf("keyText = %q", got)
	}
	if got := keyText(row, []int{1, 2}); got != "x"+keySep+"7" {
		t.Errorf("keyText = %q", got)
	}
}
