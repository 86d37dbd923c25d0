package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestCorpus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind          string
		minAvg, maxAv int64
	}{
		{"tweets", 4000, 8000},
		{"feed", 4000, 8000},
		{"archive", 3800, 4400},
		{"small", 150, 260},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			t.Parallel()
			testCorpus(t, corpusKinds[tt.kind], tt.minAvg, tt.maxAv)
		})
	}
}

func testCorpus(t *testing.T, k corpusKind, minAvg, maxAvg int64) {
	const n = 2*chunkLines + 7 // several chunks and a short last one
	c := newCorpus(k, 3, n)
	if c.Len() != n {
		t.Fatalf("Len = %d, want %d", c.Len(), n)
	}
	if !bytes.Equal(c.data, newCorpus(k, 3, n).data) {
		t.Fatal("the same seed gave different lines")
	}
	if bytes.Equal(c.data, newCorpus(k, 4, n).data) {
		t.Fatal("another seed gave the same lines")
	}
	ids := map[int64]bool{}
	var payload int64
	for i := range n {
		l := c.Line(i)
		payload += int64(len(l))
		var st struct {
			ID     int64
			Delete json.RawMessage // a feed's delete notice has no id
		}
		if err := json.Unmarshal(l, &st); err != nil {
			t.Fatalf("line %d is not JSON: %v", i, err)
		}
		if st.Delete != nil {
			continue
		}
		if ids[st.ID] {
			t.Fatalf("line %d repeats status id %d", i, st.ID)
		}
		ids[st.ID] = true
	}
	if payload != c.PayloadBytes() {
		t.Fatalf("PayloadBytes = %d, lines add up to %d", c.PayloadBytes(), payload)
	}
	if avg := payload / n; avg < minAvg || avg > maxAvg {
		t.Fatalf("average line is %d bytes, want %d to %d", avg, minAvg, maxAvg)
	}
	if k.keepEvery == 0 {
		return
	}
	// The kind's own pipeline keeps one line in keepEvery, and every kept
	// line is a row of its own.
	spec := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(spec, []byte(k.spec()), 0o644); err != nil {
		t.Fatal(err)
	}
	exp, err := expect(spec, c)
	if err != nil {
		t.Fatal(err)
	}
	if want := n / k.keepEvery; exp.Kept < want || exp.Kept > want+1 || exp.Rejected != 0 || exp.rows() != int64(exp.Kept) {
		t.Fatalf("the %s pipeline kept %d, rejected %d (%s), %d rows; want about %d kept, none rejected", k.name, exp.Kept, exp.Rejected, exp.linesText(), exp.rows(), want)
	}
}
