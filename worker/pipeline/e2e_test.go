package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rivo/uniseg"
	"golang.org/x/text/unicode/norm"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// tweetRow is a row of the tweets table.
type tweetRow struct {
	ID            int64
	CreatedAt     time.Time
	Author        string
	Lang          *string
	Text          *string
	RetweetCount  int32
	FavoriteCount int32
	Hashtags      []string
	Followers     *int64
}

// TestTweetsPipeline runs a worker with deploy/pipelines/tweets.yaml on
// real NATS and Postgres: the sample (tweetgen lines and hand-written
// nasty ones) is published on ingest.tweets, twice, plus a few lines of
// another source; the tweets table must then hold exactly the rows
// computed here, independently of the pipeline's code, and the other
// source's lines must have landed raw in events.
func TestTweetsPipeline(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	logger := testenv.Logger(t)

	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	p, err := pipeline.Load("../../deploy/pipelines/tweets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Routed as the worker program routes.
	router, stores, err := worker.Routes(pool, "events", []worker.Pipeline{p}, logger)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		if err := s.CreateTables(ctx); err != nil {
			t.Fatal(err)
		}
	}

	js := testenv.JetStream(t)
	if _, err := topology.EnsureStream(ctx, js, topology.StreamConfig{MaxBytes: 1 << 30, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	cons, err := topology.EnsureConsumer(ctx, js, topology.ConsumerConfig{AckWait: 30 * time.Second, MaxAckPending: 10000, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(cons, router, worker.Options{
		BatchSize: 50, BatchBytes: 1 << 20, Concurrency: 3,
		RetryBackoff: 100 * time.Millisecond, RetryMaxBackoff: time.Second, ShutdownTimeout: 10 * time.Second,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(runCtx); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })

	sample, err := os.ReadFile("../../deploy/samples/tweets.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(sample, []byte("\n")), []byte("\n"))
	others := [][]byte{[]byte(`{"other": 1}`), []byte(`{"other": 2}`), []byte(`not json`)}
	// The sample twice: a re-sent archive must not add a row.
	publish(t, js, "tweets", lines)
	publish(t, js, "other", others)
	publish(t, js, "tweets", lines)
	total := uint64(2*len(lines) + len(others))
	testenv.Eventually(t, 60*time.Second, "every line settled", func() error {
		if s := w.Stats(); s.Lines < total {
			return fmt.Errorf("%+v of %d lines", s, total)
		}
		return nil
	})

	want, rejected := expectTweets(t, lines)
	rows, err := pool.Query(ctx, `SELECT id, created_at, author, lang, text, retweet_count, favorite_count, hashtags, followers FROM tweets ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[tweetRow])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d rows, want %d", len(got), len(want))
	}
	byID := map[int64]tweetRow{}
	for _, r := range got {
		byID[r.ID] = r
	}
	for _, wr := range want {
		if gr, ok := byID[wr.ID]; !ok {
			t.Errorf("no row for id %d", wr.ID)
		} else if d := diffRow(gr, wr); d != "" {
			t.Errorf("id %d: %s", wr.ID, d)
		}
	}

	// Values spelled out for the hand-written lines, so the independent
	// computation above cannot share a mistake with the pipeline.
	literal := map[int64]func(r tweetRow) bool{
		9000000001: func(r tweetRow) bool {
			return *r.Text == "Héllo Café world" && slices.Equal(r.Hashtags, []string{"nowplaying", "café"}) && r.Author == "nasty_case"
		},
		// NFC puts the horn (U+031B, class 216) before the class 220 marks.
		9000000002: func(r tweetRow) bool { return *r.Text == "Z\u0300\u0301a\u031b\u0316lgo text" },
		9000000003: func(r tweetRow) bool { return *r.Text == "family 👨‍👩‍👧‍👦 and flag 🇯🇵" },
		9000000004: func(r tweetRow) bool { return *r.Text == "nul and bell and del gone" },
		9000000005: func(r tweetRow) bool { return *r.Text == "read now" },
		9000000006: func(r tweetRow) bool { return r.Text == nil },
		9000000007: func(r tweetRow) bool { return *r.Text == strings.Repeat("👨‍👩‍👧‍👦", 280) },
		9000000008: func(r tweetRow) bool { return *r.Text == "lone surrogate \uFFFD here" },
		9000000011: func(r tweetRow) bool { return r.Author == "mixed" && *r.Followers == 1500 },
		9000000013: func(r tweetRow) bool { return r.RetweetCount == 0 && r.FavoriteCount == 0 },
	}
	for id, ok := range literal {
		if r, found := byID[id]; !found || !ok(r) {
			t.Errorf("hand-written line %d: row %+v (found %v)", id, r, found)
		}
	}
	for _, id := range []int64{9000000009, 9000000010, 9000000014, 9000000015} {
		if _, found := byID[id]; found {
			t.Errorf("id %d should have been rejected or filtered", id)
		}
	}

	s := w.Stats()
	var rejectedTotal uint64
	for _, n := range s.RejectedBy {
		rejectedTotal += n
	}
	wantRejected := uint64(2*rejected + 1) // + "not json" of the other source
	if s.Rejected != wantRejected || rejectedTotal != wantRejected || s.RejectedBy[pipeline.ReasonInvalidJSON] != 2*2+1 ||
		s.RejectedBy[pipeline.ReasonMissingField] != 2 || s.RejectedBy[pipeline.ReasonBadValue] != 2*2 {
		t.Errorf("rejected %d by %v, want %d", s.Rejected, s.RejectedBy, wantRejected)
	}
	if s.Inserted != uint64(len(want)+2) || s.Inserted+s.Duplicates+s.Filtered+s.Rejected != total {
		t.Errorf("stats %+v for %d rows and 2 raw lines", s, len(want))
	}
	var events int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE source = 'other'`).Scan(&events); err != nil || events != 2 {
		t.Errorf("events from source other: %d, %v; want 2", events, err)
	}
}

func publish(t *testing.T, js jetstream.JetStream, source string, lines [][]byte) {
	t.Helper()
	msgs := make([]*nats.Msg, len(lines))
	for i, l := range lines {
		msgs[i] = &nats.Msg{Subject: topology.Subject(source), Data: l}
	}
	testenv.Publish(t, js, msgs)
}

// expectTweets computes the rows the tweets spec should make of lines,
// with encoding/json and straightforward code, and counts the lines it
// should reject.
func expectTweets(t *testing.T, lines [][]byte) (map[int64]tweetRow, int) {
	t.Helper()
	type status struct {
		ID              json.RawMessage `json:"id"`
		CreatedAt       string          `json:"created_at"`
		Text            *string         `json:"text"`
		Lang            *string         `json:"lang"`
		RetweetedStatus json.RawMessage `json:"retweeted_status"`
		RetweetCount    *int32          `json:"retweet_count"`
		FavoriteCount   *int32          `json:"favorite_count"`
		User            *struct {
			ScreenName     *string  `json:"screen_name"`
			FollowersCount *float64 `json:"followers_count"`
		} `json:"user"`
		Entities struct {
			Hashtags []*struct {
				Text string `json:"text"`
			} `json:"hashtags"`
		} `json:"entities"`
	}
	url := regexp.MustCompile(`https?://\S+`)
	rows := map[int64]tweetRow{}
	rejected := 0
	for _, l := range lines {
		var s status
		if !json.Valid(l) || !utf8.Valid(l) || json.Unmarshal(l, &s) != nil {
			rejected++
			continue
		}
		if len(s.RetweetedStatus) > 0 && string(s.RetweetedStatus) != "null" || s.Lang != nil && *s.Lang == "und" {
			continue
		}
		id, err := strconv.ParseInt(strings.Trim(string(s.ID), `"`), 10, 64)
		created, terr := time.Parse(time.RubyDate, s.CreatedAt)
		if err != nil || terr != nil || s.User == nil || s.User.ScreenName == nil {
			rejected++
			continue
		}
		r := tweetRow{ID: id, CreatedAt: created, Author: strings.ToLower(strings.TrimSpace(*s.User.ScreenName)), Lang: s.Lang, Hashtags: []string{}}
		if s.Text != nil {
			text := strings.Map(func(r rune) rune {
				if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
					return -1
				}
				return r
			}, norm.NFC.String(*s.Text))
			text = strings.Join(strings.Fields(url.ReplaceAllString(limitMarks(text, 2), "")), " ")
			g := uniseg.NewGraphemes(text)
			var b strings.Builder
			for n := 0; n < 280 && g.Next(); n++ {
				b.WriteString(g.Str())
			}
			if b.Len() > 0 {
				text = b.String()
				r.Text = &text
			}
		}
		if s.RetweetCount != nil {
			r.RetweetCount = *s.RetweetCount
		}
		if s.FavoriteCount != nil {
			r.FavoriteCount = *s.FavoriteCount
		}
		for _, h := range s.Entities.Hashtags {
			if h != nil {
				if tag := strings.TrimSpace(strings.ToLower(norm.NFC.String(h.Text))); tag != "" {
					r.Hashtags = append(r.Hashtags, tag)
				}
			}
		}
		if s.User.FollowersCount != nil {
			f := int64(*s.User.FollowersCount)
			r.Followers = &f
		}
		if _, dup := rows[id]; !dup {
			rows[id] = r
		}
	}
	if len(rows) < 60 {
		t.Fatalf("only %d rows expected from the sample; is it the right file?", len(rows))
	}
	return rows, rejected
}

// limitMarks keeps at most n nonspacing or enclosing marks in a row.
func limitMarks(s string, n int) string {
	var b strings.Builder
	run := 0
	for _, r := range s {
		if unicode.In(r, unicode.Mn, unicode.Me) {
			if run++; run > n {
				continue
			}
		} else {
			run = 0
		}
		b.WriteRune(r)
	}
	return b.String()
}

func diffRow(got, want tweetRow) string {
	var diffs []string
	str := func(p *string) string {
		if p == nil {
			return "NULL"
		}
		return strconv.Quote(*p)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		diffs = append(diffs, "created_at "+got.CreatedAt.String()+" want "+want.CreatedAt.String())
	}
	if got.Author != want.Author {
		diffs = append(diffs, "author "+got.Author+" want "+want.Author)
	}
	if str(got.Lang) != str(want.Lang) {
		diffs = append(diffs, "lang "+str(got.Lang)+" want "+str(want.Lang))
	}
	if str(got.Text) != str(want.Text) {
		diffs = append(diffs, "text "+str(got.Text)+"\n want "+str(want.Text))
	}
	if got.RetweetCount != want.RetweetCount || got.FavoriteCount != want.FavoriteCount {
		diffs = append(diffs, "counts differ")
	}
	if !slices.Equal(got.Hashtags, want.Hashtags) {
		diffs = append(diffs, strings.Join(got.Hashtags, ",")+" want "+strings.Join(want.Hashtags, ","))
	}
	if (got.Followers == nil) != (want.Followers == nil) || got.Followers != nil && *got.Followers != *want.Followers {
		diffs = append(diffs, "followers differ")
	}
	return strings.Join(diffs, "; ")
}

// TestTableMismatch: an existing table that does not fit the spec stops
// the worker at start with the column named.
func TestTableMismatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	p, err := pipeline.Load("../../deploy/pipelines/tweets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store, err := worker.NewPostgresStore(pool, p.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ddl, want string
	}{
		{`ALTER TABLE tweets ALTER COLUMN followers TYPE integer`, `column "followers" is integer, not bigint`},
		{`ALTER TABLE tweets DROP COLUMN hashtags`, `has no column "hashtags" (text[])`},
		{`ALTER TABLE tweets ADD COLUMN extra text NOT NULL`, `column "extra" is NOT NULL without a default`},
		{`ALTER TABLE tweets DROP CONSTRAINT tweets_pkey`, `has no primary key or unique index on exactly (id)`},
	}
	for _, tt := range tests {
		if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS tweets`); err != nil {
			t.Fatal(err)
		}
		if err := store.CreateTables(ctx); err != nil {
			t.Fatalf("fresh table: %v", err)
		}
		if _, err := pool.Exec(ctx, tt.ddl); err != nil {
			t.Fatal(err)
		}
		err := store.CreateTables(ctx)
		if !errors.Is(err, worker.ErrTableMismatch) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("after %s: %v, want %q", tt.ddl, err, tt.want)
		}
	}
	// Extra nullable columns and a unique index instead of a primary key
	// are fine.
	if _, err := pool.Exec(ctx, `DROP TABLE tweets`); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE tweets ADD COLUMN note text, DROP CONSTRAINT tweets_pkey, ADD UNIQUE (id)`); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(ctx); err != nil {
		t.Errorf("compatible table refused: %v", err)
	}
}

// TestEveryTypeStored writes a row with a column of every type through
// the Postgres store and reads it back.
func TestEveryTypeStored(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	spec, err := pipeline.ParseSpec("types.yaml", []byte(`source: types
table: typed.everything
key: [k1, k2]
columns:
  - {name: k1, path: id, type: bigint, required: true}
  - {name: k2, path: name, type: text, default: none}
  - {name: i, path: n, type: integer}
  - {name: d, path: f, type: double precision}
  - {name: num, path: big, type: numeric}
  - {name: ok, path: ok, type: boolean}
  - {name: ts, path: ts, type: timestamptz, layout: unix_ms}
  - {name: day, path: day, type: date}
  - {name: j, path: obj, type: jsonb}
  - {name: tags, path: tags, type: 'text[]'}
  - {name: ids, path: ids, type: 'bigint[]'}
  - {name: empty, path: missing, type: text}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE SCHEMA typed`); err != nil {
		t.Fatal(err)
	}
	store, err := worker.NewPostgresStore(pool, p.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(ctx); err != nil {
		t.Fatal(err)
	}
	line := worker.Line{Seq: 1, Source: "types", Data: []byte(`{"id": 9007199254740993, "n": -7, "f": 0.5, "big": 123456789012345678901234567890.5,
		"ok": true, "ts": 1514764800123, "day": "2018-02-03", "obj": {"a": ["\u00e9", 1]}, "tags": ["x", "y z"], "ids": [1, 2]}`)}
	rows := worker.NewRows(p.Tables())
	if res := rows.Transform(p, &line, 0); res.Outcome != worker.Insert {
		t.Fatalf("%+v", res)
	}
	// Twice: the second write is a duplicate of the composite key.
	for range 2 {
		if _, err := store.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	var got string
	err = pool.QueryRow(ctx, `SELECT concat_ws('|', k1, k2, i, d, num, ok, ts AT TIME ZONE 'UTC', day, j, tags, ids, coalesce(empty, 'NULL'), count(*) OVER ())
		FROM typed.everything`).Scan(&got)
	if err != nil {
		t.Fatal(err)
	}
	want := `9007199254740993|none|-7|0.5|123456789012345678901234567890.5|t|2018-01-01 00:00:00.123|2018-02-03|{"a": ["é", 1]}|{x,"y z"}|{1,2}|NULL|1`
	if got != want {
		t.Errorf("stored %s\nwant   %s", got, want)
	}
}
