package main

import (
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRunTyped runs the typed mode on a few hundred lines with the tweets
// spec and with the multi-table tweets-full spec, building the programs
// from source, and checks that every table holds exactly the rows the
// spec makes.
func TestRunTyped(t *testing.T) {
	for _, tt := range []struct {
		spec   string
		tables int
	}{
		{"../pipelines/tweets.yaml", 1},
		{"../pipelines/tweets-full.yaml", 5},
	} {
		t.Run(filepath.Base(tt.spec), func(t *testing.T) {
			r, stdout, stderr := runReport(t, "-mode", "typed", "-spec", tt.spec,
				"-lines", "500", "-conns", "2", "-workers", "2", "-batch", "100")
			if r.Raw == nil || r.Raw.Lines != 500 || r.Ratio <= 0 {
				t.Errorf("raw publish = %+v, ratio %v", r.Raw, r.Ratio)
			}
			e, x := r.E2E, r.Typed
			if e == nil || x == nil || x.Expected == nil || len(x.Tables) != tt.tables || len(x.Expected.Tables) != tt.tables {
				t.Fatalf("no typed result of %d tables:\n%s", tt.tables, stdout)
			}
			if x.Expected.Kept+x.Expected.Filtered+x.Expected.Rejected != 500 || x.Expected.Kept == 0 {
				t.Errorf("expected outcomes = %+v", x.Expected)
			}
			if tt.tables == 1 && x.Expected.Filtered == 0 {
				t.Errorf("expected outcomes = %+v; the tweets spec keeps some lines and filters others", x.Expected)
			}
			for i, tr := range x.Tables {
				want := x.Expected.Tables[i]
				if tr.Table != want.Table || tr.Rows != want.Rows || tr.DistinctKeys != want.Rows || tr.RowsPerSec <= 0 && want.Rows > 0 {
					t.Errorf("table %s: %d rows, %d distinct keys, %v rows/s; want %s with %d rows", tr.Table, tr.Rows, tr.DistinctKeys, tr.RowsPerSec, want.Table, want.Rows)
				}
			}
			if e.DistinctLines != x.Expected.Tables[0].Rows || x.Rows != x.Expected.rows() {
				t.Errorf("distinct lines %d, rows %d; want %d and %d", e.DistinctLines, x.Rows, x.Expected.Tables[0].Rows, x.Expected.rows())
			}
			if e.EndToEnd.Lines != 500 || e.EndToEnd.LinesPerSec <= 0 || x.RowsPerSec <= 0 || e.Ingest.Seconds > e.EndToEnd.Seconds+drainPoll.Seconds() {
				t.Errorf("end to end = %+v, ingest %+v, rows/s %v", e.EndToEnd, e.Ingest, x.RowsPerSec)
			}
			if x.EndBasis != "last commit" && x.EndBasis != "consumer drained" {
				t.Errorf("end basis %q", x.EndBasis)
			}
			if x.LatencySamples != int(x.Tables[0].Rows) || e.LatencyP50 <= 0 || e.LatencyP99 < e.LatencyP50 {
				t.Errorf("latency p50 %v, p99 %v over %d rows (%s)", e.LatencyP50, e.LatencyP99, x.LatencySamples, x.Latency)
			}
			for _, want := range []string{"rows stored", "kept", "filtered", "exactly once", "count(DISTINCT id)", x.Expected.Tables[tt.tables-1].Table} {
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
		t.Errorf("kept %d, rejected %d (%s), filtered %d; want 7, 1, 0", exp.Kept, exp.Rejected, exp.rejectedText(), exp.Filtered)
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
		got[x.Table] = counts{x.Rows, x.Most}
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
