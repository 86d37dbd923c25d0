package pipeline

import (
	"slices"
	"testing"

	"github.com/jetline/jetline/worker"
)

func TestFilter(t *testing.T) {
	t.Parallel()
	doc := `{"id": 7, "lang": "en", "n": 3, "f": 2.5, "big": 12345678901234567890, "ok": true, "nothing": null,
		"user": {"name": "Ann", "followers_count": 120, "tags": ["a", "b"], "a.b": 1},
		"retweeted_status": {"id": 1, "user": {"name": "Bob"}},
		"entities": {"hashtags": [{"text": "go"}, {"text": "nats"}]}}`
	tests := []struct {
		filter string
		want   worker.Outcome
		vars   []string // the gjson paths the filter reads
	}{
		{`retweeted_status == nil`, worker.Filter, []string{"retweeted_status"}},
		{`retweeted_status != nil && lang in ["en", "ja"]`, worker.Insert, []string{"retweeted_status", "lang"}},
		{`missing == nil && nothing == nil`, worker.Insert, []string{"missing", "nothing"}},
		{`missing.deeper.still == nil`, worker.Insert, []string{"missing.deeper.still"}},
		{`user.followers_count > 100 && n == 3 && f > 2`, worker.Insert, []string{"user.followers_count", "n", "f"}},
		{`user["followers_count"] >= 121`, worker.Filter, []string{"user.followers_count"}},
		{`retweeted_status.user.name == "Bob"`, worker.Insert, []string{"retweeted_status.user.name"}},
		{`entities.hashtags[1].text == "nats"`, worker.Insert, []string{"entities.hashtags.1.text"}},
		{`any(entities.hashtags, .text == "go")`, worker.Insert, []string{"entities.hashtags"}},
		{`len(user.tags) == 2 && "b" in user.tags`, worker.Insert, []string{"user.tags"}},
		{`user["a.b"] == 1`, worker.Insert, []string{`user.a\.b`}},
		{`lower(user.name) startsWith "an"`, worker.Insert, []string{"user.name"}},
		{`let l = lang; l == "en"`, worker.Insert, []string{"lang"}},
		{`ok`, worker.Insert, []string{"ok"}},
		{`not ok || id % 2 == 0`, worker.Filter, []string{"ok", "id"}},
		{`big > 1e19`, worker.Insert, []string{"big"}},
		{`retweeted_status == nil || retweeted_status.id == 1`, worker.Insert, []string{"retweeted_status", "retweeted_status.id"}},
		{`lang + 1 > 0`, worker.Reject, []string{"lang"}},
		{`lang`, worker.Reject, []string{"lang"}},
	}
	for _, tt := range tests {
		spec, err := ParseSpec("f.yaml", []byte("source: s\ntable: t\nfilter: '"+tt.filter+"'\ncolumns: [{name: id, path: id, type: bigint}]\n"))
		if err != nil {
			t.Errorf("filter %s: %v", tt.filter, err)
			continue
		}
		p, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, v := range p.filter.vars {
			if !slices.Contains(paths, v.path) {
				paths = append(paths, v.path)
			}
		}
		if !slices.Equal(paths, tt.vars) {
			t.Errorf("filter %s reads %q, want %q", tt.filter, paths, tt.vars)
		}
		res, _ := transformOne(p, doc)
		if res.Outcome != tt.want {
			t.Errorf("filter %s: %v %s (%s), want %v", tt.filter, res.Outcome, res.Reason, res.Detail, tt.want)
		}
		if res.Outcome == worker.Reject && res.Reason != ReasonFilterError {
			t.Errorf("filter %s: reason %s, want %s", tt.filter, res.Reason, ReasonFilterError)
		}
	}
}
