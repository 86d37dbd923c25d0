package tweetgen

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestLinesAreTweetShaped(t *testing.T) {
	t.Parallel()
	g := New(1, 1000)
	const n = 2000
	data := g.Lines(n)
	if !bytes.Equal(data, New(1, 1000).Lines(n)) {
		t.Fatal("same seed gave different output")
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("got %d lines, want %d", len(lines), n)
	}
	retweets, escaped := 0, 0
	for i, l := range lines {
		var st struct {
			ID        int64           `json:"id"`
			Text      string          `json:"text"`
			Lang      string          `json:"lang"`
			Retweeted json.RawMessage `json:"retweeted_status"`
			User      struct {
				ScreenName string `json:"screen_name"`
				Followers  int64  `json:"followers_count"`
			} `json:"user"`
		}
		if err := json.Unmarshal(l, &st); err != nil {
			t.Fatalf("line %d is not valid JSON: %v\n%s", i, err, l)
		}
		if st.ID != int64(1000+i) || st.Lang == "" || st.User.ScreenName == "" {
			t.Fatalf("line %d: unexpected fields %+v", i, st)
		}
		if st.Retweeted != nil {
			retweets++
		}
		if bytes.Contains(l, []byte(`\u`)) {
			escaped++
		}
		if bytes.ContainsFunc(l, func(r rune) bool { return r >= 0x80 }) {
			t.Fatalf("line %d has raw non-ASCII; want \\uXXXX escapes", i)
		}
	}
	avg := len(data) / n
	if avg < 4000 || avg > 8000 {
		t.Errorf("average line is %d bytes, want about 6 KB", avg)
	}
	if share := retweets * 100 / n; share < 60 || share > 80 {
		t.Errorf("retweet share %d%%, want about 70%%", share)
	}
	if escaped < n/2 {
		t.Errorf("only %d of %d lines have escapes", escaped, n)
	}
}

func BenchmarkLine(b *testing.B) {
	g := New(1, 1)
	var buf []byte
	for b.Loop() {
		buf, _ = g.Line(buf[:0])
		b.SetBytes(int64(len(buf)))
	}
}
