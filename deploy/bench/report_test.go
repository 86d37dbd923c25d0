package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestThousands(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -45000: "-45,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func sampleReport(t *testing.T, e2eLinesPerSec float64) *Report {
	t.Helper()
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newReport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawResult{rate: rate{Lines: 1000, PayloadBytes: 6 << 20, Seconds: 0.05, LinesPerSec: 20000, MiBPerSec: 120}, CPUSeconds: 0.04}
	r.Raw = &raw
	r.setE2E(e2eResult{
		EndToEnd:      rate{Lines: 1000, LinesPerSec: e2eLinesPerSec, MiBPerSec: 60, Seconds: 0.1},
		Ingest:        rate{Lines: 1000, LinesPerSec: 15000},
		LatencyP50:    0.25,
		LatencyP99:    1.5,
		DistinctLines: 1000,
		Processes:     []procUsage{{Name: "gateway", PID: 1, CPUSeconds: 0.5, Cores: 0.4, PeakRSS: 50 << 20}, {Name: "postgres", CPUSeconds: 1, Cores: 0.9}},
		OtherCores:    0.5,
	})
	return r
}

func TestReportText(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleReport(t, 8000).writeText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"raw publish", "20,000", "end to end", "8,000", "0.40×", "p50 250ms, p99 1.50s",
		"1,000 distinct lines", "gateway", "50.0 MiB", "goal: end to end ≥ 0.5× raw publish: missed (0.40×)", "WARNING"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "bare COPY") {
		t.Errorf("report of a run without a bare COPY shows one:\n%s", out)
	}
	b.Reset()
	if err := sampleReport(t, 12000).writeText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "met (0.60×)") {
		t.Errorf("report of a run meeting the goal:\n%s", b.String())
	}
}

// TestReportCopy checks the raw landing is judged against its bare COPY,
// on both sides of the goal.
func TestReportCopy(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		e2e, copy float64
		want      string
	}{
		{e2e: 8000, copy: 5000, want: "goal: raw landing end to end ≥ 1.7× one bare COPY: missed (1.60×)"},
		{e2e: 12000, copy: 5000, want: "goal: raw landing end to end ≥ 1.7× one bare COPY: met (2.40×)"},
	} {
		r := sampleReport(t, tt.e2e)
		r.Copy = &copyResult{rate: rate{Lines: 1000, LinesPerSec: tt.copy, MiBPerSec: 30, Seconds: 0.2}, PostgresCPUSeconds: 0.15}
		r.judge()
		var b bytes.Buffer
		if err := r.writeText(&b); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{tt.want, "bare COPY", "5,000", "Postgres 150 µs CPU/line", "e2e / bare COPY", "goal: end to end ≥ 0.5× raw publish"} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("e2e %v, copy %v: report lacks %q:\n%s", tt.e2e, tt.copy, want, b.String())
			}
		}
	}
}

func TestReportJSON(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := sampleReport(t, 8000).writeJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Ratio float64  `json:"e2e_to_raw_ratio"`
		Goal  connGoal `json:"goal"`
		E2E   struct {
			EndToEnd rate `json:"end_to_end"`
		} `json:"e2e"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ratio != 0.4 || got.Goal.Met || got.E2E.EndToEnd.LinesPerSec != 8000 {
		t.Fatalf("JSON report = %+v", got)
	}
}
