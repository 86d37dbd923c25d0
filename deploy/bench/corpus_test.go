package main

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestCorpus(t *testing.T) {
	t.Parallel()
	const n = 2*chunkLines + 7 // several chunks and a short last one
	c := newCorpus(3, n)
	if c.Len() != n {
		t.Fatalf("Len = %d, want %d", c.Len(), n)
	}
	if !bytes.Equal(c.data, newCorpus(3, n).data) {
		t.Fatal("the same seed gave different lines")
	}
	if bytes.Equal(c.data, newCorpus(4, n).data) {
		t.Fatal("another seed gave the same lines")
	}
	ids := map[int64]bool{}
	var payload int64
	for i := range n {
		l := c.Line(i)
		payload += int64(len(l))
		var st struct{ ID int64 }
		if err := json.Unmarshal(l, &st); err != nil {
			t.Fatalf("line %d is not JSON: %v", i, err)
		}
		if ids[st.ID] {
			t.Fatalf("line %d repeats status id %d", i, st.ID)
		}
		ids[st.ID] = true
	}
	if payload != c.PayloadBytes() {
		t.Fatalf("PayloadBytes = %d, lines add up to %d", c.PayloadBytes(), payload)
	}
	if avg := payload / n; avg < 4000 || avg > 8000 {
		t.Fatalf("average line is %d bytes, want about 6 KB", avg)
	}
}

func TestCorpusSplit(t *testing.T) {
	t.Parallel()
	c := newCorpus(1, 103)
	for _, k := range []int{1, 2, 4, 103} {
		spans := c.Split(k)
		if len(spans) != k {
			t.Fatalf("Split(%d) gave %d spans", k, len(spans))
		}
		var joined []byte
		var payload int64
		next := 0
		for _, s := range spans {
			if s.First != next || s.N < 103/k || s.N > 103/k+1 {
				t.Fatalf("Split(%d): span %+v after line %d", k, s, next)
			}
			next += s.N
			b := c.Bytes(s)
			if bytes.Count(b, []byte("\n")) != s.N || b[len(b)-1] != '\n' {
				t.Fatalf("Split(%d): span %+v bytes do not hold %d whole lines", k, s, s.N)
			}
			joined = append(joined, b...)
			payload += c.SpanPayloadBytes(s)
		}
		if !bytes.Equal(joined, c.data) || payload != c.PayloadBytes() {
			t.Fatalf("Split(%d): spans do not cover the corpus exactly once", k)
		}
	}
}
