package main

import (
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestRunTyped runs the typed mode on a few hundred lines with the tweets
// spec, the multi-table tweets-full spec and the small corpus's own, and
// checks that every table holds exactly the rows the spec makes.
func TestRunTyped(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		tables int
		goal   string
	}{
		{"tweets", []string{"-spec", "../pipelines/tweets.yaml"}, 1, "through a pipeline end to end ≥ 1.0× raw publish"},
		{"tweets-full", []string{"-spec", "../pipelines/tweets-full.yaml"}, 5, "through a pipeline end to end ≥ 1.0× raw publish"},
		{"small", []string{"-corpus", "small"}, 1, "end to end ≥ 400,000 lines/s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, stdout, stderr := runReport(t, append(tt.args, "-mode", "typed", "-lines", "500", "-conns", "2", "-workers", "2", "-env", "WORKER_BATCH_SIZE=100")...)
			if r.Raw == nil || r.Raw.Lines != 500 || r.Ratio <= 0 {
				t.Errorf("raw publish = %+v, ratio %v", r.Raw, r.Ratio)
			}
			e := r.E2E
			if e == nil || len(e.Expected.Tables) != tt.tables {
				t.Fatalf("no typed result of %d tables:\n%s", tt.tables, stdout)
			}
			x := e.Expected
			if x.Kept+x.Filtered+x.Rejected != 500 || x.Kept == 0 {
				t.Errorf("expected outcomes = %+v", x)
			}
			if tt.tables == 1 && x.Filtered == 0 {
				t.Errorf("expected outcomes = %+v; the spec keeps some lines and filters others", x)
			}
			for _, tr := range x.Tables {
				if tr.Rows != tr.Want || tr.DistinctKeys != tr.Want || tr.RowsPerSec <= 0 && tr.Want > 0 {
					t.Errorf("table %s: %d rows, %d distinct keys, %v rows/s; want %d rows", tr.Table, tr.Rows, tr.DistinctKeys, tr.RowsPerSec, tr.Want)
				}
			}
			if e.Rows != x.rows() || e.EndToEnd.Lines != 500 || e.EndToEnd.LinesPerSec <= 0 || e.RowsPerSec <= 0 || e.Ingest.Seconds > e.EndToEnd.Seconds+drainPoll.Seconds() {
				t.Errorf("rows %d of %d; end to end = %+v, ingest %+v, rows/s %v", e.Rows, x.rows(), e.EndToEnd, e.Ingest, e.RowsPerSec)
			}
			if e.EndBasis != "last commit" && e.EndBasis != "consumer drained" {
				t.Errorf("end basis %q", e.EndBasis)
			}
			if e.LatencySamples != int(x.Tables[0].Rows) || e.LatencyP50 <= 0 || e.LatencyP99 < e.LatencyP50 {
				t.Errorf("latency p50 %v, p99 %v over %d rows (%s)", e.LatencyP50, e.LatencyP99, e.LatencySamples, e.Latency)
			}
			if r.Goal.Text != tt.goal || r.Goal.Measured <= 0 {
				t.Errorf("goal = %+v, want %q", r.Goal, tt.goal)
			}
			for _, want := range []string{"rows stored", "kept", "filtered", "exactly once", "count(DISTINCT id)", x.Tables[tt.tables-1].Table} {
				if !strings.Contains(stderr, want) {
					t.Errorf("text report lacks %q:\n%s", want, stderr)
				}
			}
			if kids := children(t); len(kids) > 0 {
				t.Errorf("processes left behind: %v", kids)
			}
		})
	}
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
	if exp.Tables[0].Table != "live.tweets" || exp.keys[0] != "1001" || exp.keys[3] != "" {
		t.Errorf("first table %s, line keys %q", exp.Tables[0].Table, exp.keys)
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
