package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	ctx := context.Background()
	// seq 1-3 invalid_json/default, 4-5 pg_22003/tweets, 6 invalid_json/tweets, 7 too_long/default
	b.deadLetter(t,
		entry("default", "invalid_json", 11, "{"),
		entry("default", "invalid_json", 12, "{{"),
		entry("default", "invalid_json", 13, "{{{"),
		entry("tweets", "pg_22003", 14, `{"n":1e400}`),
		entry("tweets", "pg_22003", 15, `{"n":2e400}`),
		entry("tweets", "invalid_json", 16, "nope"),
		tooLong("default", 1<<20),
	)
	want := map[string]uint64{
		"invalid_json/default": 3, "invalid_json/tweets": 1,
		"pg_22003/tweets": 2, "too_long/default": 1,
	}

	sum, err := List(ctx, b.js, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Entries != 7 || sum.StreamMsgs != 7 || sum.FirstSeq != 1 || sum.LastSeq != 7 || sum.StreamBytes == 0 {
		t.Errorf("summary totals = %+v, want 7 entries, seq 1-7, some bytes", sum)
	}
	if got := counts(sum); !equalCounts(got, want) {
		t.Errorf("groups = %v, want %v", got, want)
	}
	for _, g := range sum.Groups {
		if g.Oldest.IsZero() || g.Newest.Before(g.Oldest) {
			t.Errorf("group %s/%s: oldest %s, newest %s", g.Reason, g.Source, g.Oldest, g.Newest)
		}
	}
	// The stream's own times of the first and last entry of the group.
	first, _ := b.dlq.GetMsg(ctx, 1)
	third, _ := b.dlq.GetMsg(ctx, 3)
	if g := sum.Groups[0]; g.Reason != "invalid_json" || g.Source != "default" || !g.Oldest.Equal(first.Time) || !g.Newest.Equal(third.Time) {
		t.Errorf("first group = %+v, want invalid_json/default from %s to %s", g, first.Time, third.Time)
	}

	var out bytes.Buffer
	if err := WriteSummary(&out, sum); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"INGEST_DLQ: 7 dead letters", "seq 1-7", "pg_22003", "tweets", "too_long"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("list output lacks %q:\n%s", s, out.String())
		}
	}

	filtered := []struct {
		name string
		f    Filter
		want map[string]uint64
	}{
		{"reason", Filter{Reason: "invalid_json"}, map[string]uint64{"invalid_json/default": 3, "invalid_json/tweets": 1}},
		{"source", Filter{Source: "tweets"}, map[string]uint64{"invalid_json/tweets": 1, "pg_22003/tweets": 2}},
		{"reason and source", Filter{Reason: "pg_22003", Source: "default"}, map[string]uint64{}},
		{"seq range", Filter{FromSeq: 3, ToSeq: 5}, map[string]uint64{"invalid_json/default": 1, "pg_22003/tweets": 2}},
		{"seq range and reason", Filter{FromSeq: 3, Reason: "invalid_json"}, map[string]uint64{"invalid_json/default": 1, "invalid_json/tweets": 1}},
		{"since the future", Filter{Since: time.Now().Add(time.Hour)}, map[string]uint64{}},
		{"until the past", Filter{Until: time.Now().Add(-time.Hour)}, map[string]uint64{}},
		{"until the 4th", Filter{Until: storedAt(t, b, 4)}, map[string]uint64{"invalid_json/default": 3, "pg_22003/tweets": 1}},
		{"since the 6th", Filter{Since: storedAt(t, b, 6)}, map[string]uint64{"invalid_json/tweets": 1, "too_long/default": 1}},
		{"beyond the end", Filter{FromSeq: 100}, map[string]uint64{}},
	}
	for _, tt := range filtered {
		sum, err := List(ctx, b.js, tt.f)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := counts(sum); !equalCounts(got, tt.want) {
			t.Errorf("%s: groups = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestListWithoutStream(t *testing.T) {
	t.Parallel()
	js := testenv.JetStream(t)
	_, err := List(context.Background(), js, Filter{})
	if !errors.Is(err, ErrNoDeadLetters) {
		t.Fatalf("List without the stream: %v, want ErrNoDeadLetters", err)
	}
	if !strings.Contains(err.Error(), "no dead letters yet: stream INGEST_DLQ does not exist") {
		t.Errorf("message %q does not say what is missing", err)
	}
}

func TestListEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	sum, err := List(context.Background(), b.js, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Entries != 0 || len(sum.Groups) != 0 {
		t.Errorf("empty stream: %+v", sum)
	}
	// A scan of an empty selection must end rather than wait for entries.
	if _, err := List(context.Background(), b.js, Filter{FromSeq: 1}); err != nil {
		t.Fatal(err)
	}
}

// counts returns sum's groups as "reason/source" → count.
func counts(sum Summary) map[string]uint64 {
	m := map[string]uint64{}
	for _, g := range sum.Groups {
		m[g.Reason+"/"+g.Source] = g.Count
	}
	return m
}

func equalCounts(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// storedAt returns when the dead-letter stream stored entry seq.
func storedAt(t *testing.T, b *bundle, seq uint64) time.Time {
	t.Helper()
	m, err := b.dlq.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return m.Time
}

// TestScanEndsWhenEntriesVanish purges the stream while a scan is on its
// first entry: the scan must end rather than wait for entries that are
// gone.
func TestScanEndsWhenEntriesVanish(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	entries := make([]deadletter.Entry, 3*scanBatch)
	for i := range entries {
		entries[i] = entry("default", "invalid_json", uint64(i+1), "{")
	}
	b.deadLetter(t, entries...)
	var seen int
	err := scan(context.Background(), b.dlq, Filter{}, true, func(letter) error {
		if seen++; seen == 1 {
			return b.dlq.Purge(context.Background())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen >= len(entries) {
		t.Errorf("scan saw %d entries after the purge; the test did not purge in time", seen)
	}
}

// Dead letters of named uploads are counted by upload, in a column of
// their own, and show prints the upload.
func TestListByUpload(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	ctx := context.Background()
	named := func(upload string, seq uint64) deadletter.Entry {
		e := entry("default", "invalid_json", seq, "{")
		e.Header.Set(topology.HeaderUpload, upload)
		return e
	}
	// invalid_json/default: one unnamed, then two of rc-2018-01 and one of
	// rc-2018-02; pg_22003/tweets: unnamed only.
	b.deadLetter(t, entry("default", "invalid_json", 1, "{"), named("rc-2018-01", 2), named("rc-2018-02", 3),
		named("rc-2018-01", 4), entry("tweets", "pg_22003", 5, `{"n":1e400}`))
	for _, f := range []Filter{{}, {FromSeq: 1}} {
		sum, err := List(ctx, b.js, f)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, g := range sum.Groups {
			got = append(got, fmt.Sprintf("%s/%s/%s=%d", g.Reason, g.Source, g.Upload, g.Count))
		}
		want := []string{"invalid_json/default/=1", "invalid_json/default/rc-2018-01=2", "invalid_json/default/rc-2018-02=1", "pg_22003/tweets/=1"}
		if !slices.Equal(got, want) || sum.Entries != 5 {
			t.Fatalf("%v: groups = %v (%d entries), want %v", f, got, sum.Entries, want)
		}
		var out bytes.Buffer
		if err := WriteSummary(&out, sum); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"UPLOAD", "rc-2018-01  2", "tweets   -"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("list output lacks %q:\n%s", s, out.String())
			}
		}
	}
	e, err := Show(ctx, b.js, 2)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteEntry(&out, e, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "upload:      rc-2018-01") {
		t.Errorf("show output lacks the upload:\n%s", out.String())
	}
}
