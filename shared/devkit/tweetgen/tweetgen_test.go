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

func TestFeed(t *testing.T) {
	t.Parallel()
	o := FeedOptions{Users: 300, DeleteEvery: 20}
	const n = 4000
	data := NewFeed(7, 5000, o).Lines(n)
	if !bytes.Equal(data, NewFeed(7, 5000, o).Lines(n)) {
		t.Fatal("same seed gave different output")
	}
	var deletes, before, mentions int
	authors := map[int64]int{}
	next := int64(5000)
	for i, l := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		var st struct {
			ID     *int64 `json:"id"`
			Delete *struct {
				Status struct {
					ID int64 `json:"id"`
				} `json:"status"`
			} `json:"delete"`
			User struct {
				ID int64 `json:"id"`
			} `json:"user"`
			Entities struct {
				Mentions []struct {
					ID int64 `json:"id"`
				} `json:"user_mentions"`
			} `json:"entities"`
		}
		if err := json.Unmarshal(l, &st); err != nil {
			t.Fatalf("line %d is not valid JSON: %v\n%s", i, err, l)
		}
		switch {
		case st.Delete != nil:
			deletes++
			if d := st.Delete.Status.ID - next; d < -1000 || d >= 1000 {
				t.Fatalf("line %d deletes status %d, %d from the next id", i, st.Delete.Status.ID, d)
			} else if d >= 0 {
				before++
			}
		case st.ID == nil || *st.ID != next:
			t.Fatalf("line %d: status id %v, want %d (one more per status)", i, st.ID, next)
		default:
			next++
			authors[st.User.ID]++
			for _, m := range st.Entities.Mentions {
				if m.ID < poolBase || m.ID >= poolBase+int64(o.Users) {
					t.Fatalf("line %d mentions user %d, outside the pool", i, m.ID)
				}
				mentions++
			}
		}
	}
	if deletes < n/40 || deletes > n/10 || before == 0 || before == deletes {
		t.Errorf("%d delete notices (%d before their status), want about %d, some before and some after", deletes, before, n/o.DeleteEvery)
	}
	if len(authors) > o.Users || len(authors) < o.Users/2 {
		t.Errorf("%d authors, want most of the pool of %d and no more", len(authors), o.Users)
	}
	for uid := range authors {
		if uid < poolBase || uid >= poolBase+int64(o.Users) {
			t.Fatalf("author %d is outside the pool", uid)
		}
	}
	if mentions < n/2 {
		t.Errorf("%d mentions in %d lines, want about one a status", mentions, n)
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
