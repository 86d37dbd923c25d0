package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// feedSpec is a live feed's spec: tweets and their authors upserted by
// version, hashtags exploded into a child table, and delete notices that
// stick.
const feedSpec = `source: feed
tables:
  - table: tweets
    key: id
    filter: delete == nil
    on_conflict: update
    version: retweets
    columns:
      - {name: id, path: id, type: bigint, required: true}
      - {name: text, path: text, type: text}
      - {name: retweets, path: retweet_count, type: bigint, default: 0}
  - table: users
    key: id
    filter: delete == nil
    on_conflict: update
    version: followers
    columns:
      - {name: id, path: user.id, type: bigint, required: true}
      - {name: name, path: user.name, type: text}
      - {name: followers, path: user.followers_count, type: bigint, required: true}
  - table: tweet_hashtags
    key: [tweet_id, tag]
    filter: delete == nil
    explode: entities.hashtags
    columns:
      - {name: tweet_id, path: id, type: bigint, required: true}
      - {name: tag, element: text, type: text, required: true, clean: [lower]}
      - {name: pos, element: "indices.0", type: integer}
  - table: tweets
    action: delete
    filter: delete != nil
    columns:
      - {name: id, path: delete.status.id, type: bigint, required: true}
`

// feed is a pipeline of feedSpec with its store on a fresh database.
type feed struct {
	p     *pipeline.Pipeline
	store *worker.PostgresStore
	pool  *pgxpool.Pool
	seq   int
}

func newFeed(t *testing.T) *feed {
	t.Helper()
	return newFeedConns(t, 0)
}

// newFeedConns is newFeed with a pool of at most conns connections (0:
// pgxpool's default).
func newFeedConns(t *testing.T, conns int32) *feed {
	t.Helper()
	spec, err := pipeline.ParseSpec("feed.yaml", []byte(feedSpec))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	if conns > 0 {
		cfg.MaxConns = conns
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store, err := worker.NewPostgresStore(pool, p.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &feed{p: p, store: store, pool: pool}
}

// write transforms lines as one batch and stores it, returning what the
// store did and each line's result.
func (f *feed) write(t *testing.T, lines ...string) (worker.WriteResult, []worker.Result) {
	t.Helper()
	rows, results := f.transform(lines...)
	res, err := f.store.Write(t.Context(), rows)
	if err != nil {
		t.Fatal(err)
	}
	return res, results
}

// transform transforms lines as one batch, returning its rows and each
// line's result.
func (f *feed) transform(lines ...string) (*worker.Rows, []worker.Result) {
	rows := worker.NewRows(f.p.Tables())
	var results []worker.Result
	for i, data := range lines {
		f.seq++
		line := worker.Line{ID: fmt.Sprintf("gw.1.%d", f.seq), Seq: uint64(f.seq), Source: "feed", Data: []byte(data)}
		results = append(results, rows.Transform(f.p, &line, i))
	}
	return rows, results
}

// writeAtOnce stores each batch in a goroutine of its own, all at the
// same time, as concurrent workers would, and returns their errors.
func (f *feed) writeAtOnce(t *testing.T, batches ...*worker.Rows) error {
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for i, rows := range batches {
		wg.Go(func() { _, errs[i] = f.store.Write(t.Context(), rows) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// query returns the rows of sql, each as its columns joined by "|",
// joined by ", ".
func (f *feed) query(t *testing.T, sql string) string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		var cols []string
		for _, v := range vals {
			cols = append(cols, fmt.Sprint(v))
		}
		out = append(out, strings.Join(cols, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, ", ")
}

// tweet is a status line; its user's id is the sum of the bytes of their
// name.
func tweet(id, retweets int, user string, followers int, tags ...string) string {
	uid := 0
	for _, c := range []byte(user) {
		uid += int(c)
	}
	var hs []string
	for i, tag := range tags {
		hs = append(hs, fmt.Sprintf(`{"text":%q,"indices":[%d,%d]}`, tag, i*10, i*10+len(tag)))
	}
	return fmt.Sprintf(`{"id":%d,"text":"tweet %d","retweet_count":%d,"user":{"id":%d,"name":%q,"followers_count":%d},"entities":{"hashtags":[%s]}}`,
		id, id, retweets, uid, user, followers, strings.Join(hs, ","))
}

// TestTablesOneLineSeveralTables: a line makes a row in each table and one
// per hashtag, all stored together; a hashtag twice in a line makes one
// row; a redelivered batch inserts nothing twice; an empty or missing
// array makes no rows.
func TestTablesOneLineSeveralTables(t *testing.T) {
	t.Parallel()
	f := newFeed(t)
	lines := []string{
		tweet(1, 5, "ann", 10, "Go", "go", "sql"),
		tweet(2, 0, "bob", 7),
		`{"id":3,"text":"no entities","user":{"id":9,"name":"cy","followers_count":1}}`,
	}
	res, results := f.write(t, lines...)
	for i, r := range results {
		if r.Outcome != worker.Insert {
			t.Fatalf("line %d: %+v", i+1, r)
		}
	}
	// tweets 3, users 3, hashtags 2 of 3 (go twice), no deletes.
	want := []worker.TableCounts{{Inserted: 3}, {Inserted: 3}, {Inserted: 2, Duplicates: 1}, {}}
	for i, c := range want {
		if res.Tables[i] != c {
			t.Errorf("table %d: %+v, want %+v", i, res.Tables[i], c)
		}
	}
	if got := f.query(t, `SELECT tweet_id, tag, pos FROM tweet_hashtags ORDER BY tag`); got != "1|go|0, 1|sql|20" {
		t.Errorf("hashtags: %s", got)
	}
	res, _ = f.write(t, lines...)
	if res.Inserted != 0 || res.Tables[0].Unchanged != 3 || res.Tables[2].Duplicates != 3 {
		t.Errorf("the batch again: %+v, want nothing new", res)
	}
	if got := f.query(t, `SELECT (SELECT count(*) FROM tweets), (SELECT count(*) FROM users), (SELECT count(*) FROM tweet_hashtags)`); got != "3|3|2" {
		t.Errorf("counts after a redelivery: %s", got)
	}
}

// TestTablesBadValueTakesTheLine: a value the database refuses in one
// table's row dead-letters the whole line, naming the table and column:
// none of its rows is stored, in any table, and the rest of the batch is.
func TestTablesBadValueTakesTheLine(t *testing.T) {
	t.Parallel()
	f := newFeed(t)
	// A hashtag too long for the table's own CHECK: Postgres says so only
	// when the row reaches it, after the line's tweet and user.
	if _, err := f.pool.Exec(t.Context(), `ALTER TABLE tweet_hashtags ADD CHECK (length(tag) <= 10)`); err != nil {
		t.Fatal(err)
	}
	bad := tweet(2, 1, "bob", 7, "ok", "much-too-long-a-tag")
	res, results := f.write(t, tweet(1, 1, "ann", 10, "a"), bad, tweet(3, 1, "cy", 3, "c"))
	for i, r := range results {
		if r.Outcome != worker.Insert {
			t.Fatalf("line %d: transform %+v; the refusal must come from the database", i+1, r)
		}
	}
	if len(res.Rejected) != 1 || res.Rejected[0].Line != 1 {
		t.Fatalf("rejected %+v, want line 2's hashtag row", res.Rejected)
	}
	if got := f.query(t, `SELECT string_agg(id::text, ',' ORDER BY id) FROM tweets`); got != "1,3" {
		t.Errorf("tweets %s, want 1,3: line 2's tweet must go with its hashtag", got)
	}
	if got := f.query(t, `SELECT string_agg(name, ',' ORDER BY name) FROM users`); got != "ann,cy" {
		t.Errorf("users %s, want ann,cy", got)
	}
	if got := f.query(t, `SELECT string_agg(tag, ',' ORDER BY tag) FROM tweet_hashtags`); got != "a,c" {
		t.Errorf("hashtags %s, want a,c", got)
	}
}

// TestTablesUpsertByVersion: a newer version updates, an older one leaves
// the row as it is, whatever order the batches come in; a user in
// hundreds of lines of one batch makes one row, the newest.
func TestTablesUpsertByVersion(t *testing.T) {
	t.Parallel()
	f := newFeed(t)
	f.write(t, tweet(1, 5, "ann", 100))
	res, _ := f.write(t, tweet(1, 3, "ann", 90)) // older: retweets 3 < 5
	if res.Tables[0].Unchanged != 1 || res.Tables[0].Updated != 0 || res.Tables[1].Unchanged != 1 {
		t.Errorf("older versions: %+v, want unchanged", res.Tables)
	}
	res, _ = f.write(t, tweet(1, 8, "ann", 120))
	if res.Tables[0].Updated != 1 || res.Tables[1].Updated != 1 {
		t.Errorf("newer versions: %+v, want updated", res.Tables)
	}
	if got := f.query(t, `SELECT t.retweets, u.followers FROM tweets t, users u`); got != "8|120" {
		t.Errorf("stored %s, want 8|120", got)
	}

	// One batch: user "dee" in 300 lines with follower counts in no
	// order, the largest in the middle.
	var lines []string
	for i := range 300 {
		lines = append(lines, tweet(100+i, 0, "dee", (i*7919)%1000))
	}
	lines = append(lines[:150], append([]string{tweet(99, 0, "dee", 5000)}, lines[150:]...)...)
	res, _ = f.write(t, lines...)
	if res.Tables[1].Inserted != 1 || res.Tables[1].Unchanged != 300 {
		t.Errorf("users of one batch: %+v, want 1 inserted and 300 unchanged", res.Tables[1])
	}
	if got := f.query(t, `SELECT followers FROM users WHERE name = 'dee'`); got != "5000" {
		t.Errorf("dee's followers %s, want the greatest, 5000", got)
	}
}

// TestTablesUpsertsDoNotDeadlock: two batches that update the same 200
// users, one in the users' order and one in reverse, stored at the same
// time round after round, both commit every time: neither waits for a
// row the other holds while holding one the other wants.
func TestTablesUpsertsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	f := newFeed(t)
	const users = 200
	id := 0
	batch := func(round int, reverse bool) *worker.Rows {
		var lines []string
		for i := range users {
			u := i
			if reverse {
				u = users - 1 - i
			}
			id++
			lines = append(lines, tweet(id, 0, strings.Repeat("u", u+1), round*10+i%7)) // user id 117·(u+1)
		}
		rows, _ := f.transform(lines...)
		return rows
	}
	for round := range 20 {
		if err := f.writeAtOnce(t, batch(round, false), batch(round, true)); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	// Each user ends at the greater of its last round's two counts.
	var sum int
	for u := range users {
		sum += 190 + max(u%7, (users-1-u)%7)
	}
	if got, want := f.query(t, `SELECT count(*), sum(followers)::bigint FROM users`), fmt.Sprintf("%d|%d", users, sum); got != want {
		t.Errorf("users: count and sum of followers %s, want %s (the last round's)", got, want)
	}
}

// TestTablesDeletesStick: a delete removes the row and leaves a
// tombstone; the archive sent again does not bring it back; a delete
// that comes before its tweet still wins, in another batch or the same.
func TestTablesDeletesStick(t *testing.T) {
	t.Parallel()
	f := newFeed(t)
	archive := []string{tweet(1, 1, "ann", 1, "a"), tweet(2, 1, "bob", 1, "b")}
	f.write(t, archive...)
	res, results := f.write(t, `{"delete":{"status":{"id":1,"user_id":3}}}`)
	if results[0].Outcome != worker.Insert || res.Tables[3].Deleted != 1 || res.Tables[3].Tombstoned != 1 {
		t.Fatalf("delete: %+v %+v", results[0], res.Tables)
	}
	res, _ = f.write(t, archive...)
	if res.Tables[0].Suppressed != 1 || res.Tables[0].Inserted != 0 {
		t.Errorf("archive again: tweets %+v, want tweet 1 suppressed", res.Tables[0])
	}
	// Tweet 3's delete comes first; tweet 4's in the same batch, after it.
	f.write(t, `{"delete":{"status":{"id":3}}}`)
	f.write(t, tweet(3, 1, "cy", 1), tweet(4, 1, "dee", 1), `{"delete":{"status":{"id":4}}}`)
	if got := f.query(t, `SELECT string_agg(id::text, ',' ORDER BY id) FROM tweets`); got != "2" {
		t.Errorf("tweets %s, want only 2", got)
	}
	if got := f.query(t, `SELECT string_agg(id::text, ',' ORDER BY id) FROM tweets_tombstones`); got != "1,3,4" {
		t.Errorf("tombstones %s, want 1,3,4", got)
	}
	// A delete notice with no id is a bad line, not a delete of nothing.
	_, results = f.write(t, `{"delete":{"status":{}}}`)
	if results[0].Outcome != worker.Reject || !strings.Contains(results[0].Detail, "tweets: column id") {
		t.Errorf("delete without an id: %+v, want a reject naming the table and column", results[0])
	}
}

// TestTablesDeleteRacesItsRow: a batch storing tweets and another
// deleting the same tweets, stored at the same time round after round,
// leave no tweet that has a tombstone, whichever commits first. Each
// must see what the other committed, not miss it because neither had
// committed when it looked.
func TestTablesDeleteRacesItsRow(t *testing.T) {
	t.Parallel()
	f := newFeed(t)
	const perRound = 100
	for round := range 30 {
		var tweets, deletes []string
		for i := range perRound {
			id := round*perRound + i + 1
			tweets = append(tweets, tweet(id, 0, "ann", 1))
			deletes = append(deletes, fmt.Sprintf(`{"delete":{"status":{"id":%d}}}`, id))
		}
		a, _ := f.transform(tweets...)
		b, _ := f.transform(deletes...)
		if err := f.writeAtOnce(t, a, b); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if got := f.query(t, `SELECT count(*), (SELECT count(*) FROM tweets_tombstones) FROM tweets`); got != fmt.Sprintf("0|%d", 30*perRound) {
		t.Errorf("tweets and tombstones %s, want 0|%d: every tweet deleted", got, 30*perRound)
	}
}

// TestTablesDeletesProbeByKey: a batch with deletes finds each deleted
// key, and checks each stored row against the tombstones, through the
// tables' primary keys, never by reading the whole table: the tweets and
// tombstone tables, filled beforehand, are not scanned once.
//
// Postgres counts scans per table (pg_stat_user_tables.seq_scan) in the
// backend and publishes them up to a second later. The pool has one
// connection, and after the write that connection scans a table of its
// own, probe: once probe's scan shows, everything before it does too.
func TestTablesDeletesProbeByKey(t *testing.T) {
	t.Parallel()
	f := newFeedConns(t, 1)
	ctx := t.Context()
	for _, sql := range []string{
		`INSERT INTO tweets (id, text, retweets) SELECT g, 'tweet ' || g, 0 FROM generate_series(1, 50000) g`,
		`INSERT INTO tweets_tombstones (id) SELECT 1000000 + g FROM generate_series(1, 20000) g`,
		`CREATE TABLE probe (n int)`,
	} {
		if _, err := f.pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	probes := 0
	scans := func() (tweets, tombstones int64) {
		t.Helper()
		probes++
		if _, err := f.pool.Exec(ctx, `SELECT sum(n) FROM probe`); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "probe's scan to show in pg_stat_user_tables", func() error {
			var probe int64
			err := f.pool.QueryRow(ctx, `SELECT
				(SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'probe'::regclass),
				(SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'tweets'::regclass),
				(SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'tweets_tombstones'::regclass)`).Scan(&probe, &tweets, &tombstones)
			if err == nil && probe != int64(probes) {
				err = fmt.Errorf("probe scanned %d times, want %d", probe, probes)
			}
			return err
		})
		return tweets, tombstones
	}
	tweets0, tombs0 := scans()
	lines := []string{`{"delete":{"status":{"id":17}}}`, `{"delete":{"status":{"id":40001}}}`}
	for id := 60001; id <= 60200; id++ {
		lines = append(lines, tweet(id, 1, "ann", 1, "x"))
	}
	res, _ := f.write(t, append(lines, tweet(1000005, 1, "bob", 1))...)
	if res.Tables[3].Deleted != 2 || res.Tables[0].Inserted != 200 || res.Tables[0].Suppressed != 1 {
		t.Fatalf("deleted %d, inserted %d, suppressed %d; want 2, 200 and 1", res.Tables[3].Deleted, res.Tables[0].Inserted, res.Tables[0].Suppressed)
	}
	if tweets, tombs := scans(); tweets != tweets0 || tombs != tombs0 {
		t.Errorf("the write scanned tweets %d and tweets_tombstones %d times, want 0 and 0 (found by key)", tweets-tweets0, tombs-tombs0)
	}
}

// TestCheckTweetsFullSample: check-spec shows, for the shipped tweets-full spec and
// sample, the rows of each table a line makes, the delete a notice makes,
// and counts rows by table; the description has every CREATE TABLE, the
// tombstones' included.
func TestCheckTweetsFullSample(t *testing.T) {
	t.Parallel()
	p, err := pipeline.Load("../../deploy/pipelines/tweets-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	p.Describe(&out)
	sample, err := os.Open("../../deploy/samples/tweets-full.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer sample.Close()
	if err := p.Check(&out, sample); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CREATE TABLE IF NOT EXISTS "live"."tweets" (`,
		`CREATE TABLE IF NOT EXISTS "live"."tweets_tombstones" (`,
		`CREATE TABLE IF NOT EXISTS "live"."tweet_mentions" (`,
		`line 1: upsert live.tweets {"id": 1001, "created_at": "2018-04-03T14:13:20Z", "user_id": 7, "lang": "en", "text": "rain and #Go and #go", "retweet_count": 2}`,
		`line 1: insert live.tweet_hashtags {"tweet_id": 1001, "tag": "go"}`,
		`line 2: insert live.tweet_mentions {"tweet_id": 1002, "user_id": 9, "screen_name": "bob"}`,
		`line 3: upsert live.users {"id": 7, "screen_name": "ann", "followers": 125}`,
		`line 4: delete live.tweets {"id": 1002}`,
		`line 6: delete live.tweets {"id": 1005}`,
		`line 7: upsert live.users {"id": 8, "screen_name": "cy", "followers": 6}`,
		`line 8: insert live.tweet_mentions {"tweet_id": 1006, "user_id": 8, "screen_name": "cy"}`,
		`line 5: reject missing_field: live.tweets: column user_id: path user.id is missing or null`,
		`8 lines: 7 insert, 0 filtered, 1 rejected (missing_field 1); rows: upsert live.tweets 5, upsert live.users 5, insert live.tweet_hashtags 7, insert live.tweet_mentions 2, delete live.tweets 2`,
	} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("check-spec output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestTweetsFullThroughWorker runs a worker with deploy/pipelines/tweets-full.yaml on
// real NATS and Postgres. The sample goes in, then again as one frame (an
// archive re-sent), with a status the database refuses (a CHECK of the
// user's own on its hashtags): that line is dead-lettered whole, with the
// table in its reason, while every other line's rows in all four tables
// are stored once, upserts keep the newest versions and the deleted status
// stays deleted.
func TestTweetsFullThroughWorker(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tf := startTweetsFull(t, 1, 50, func(pool *pgxpool.Pool) {
		if _, err := pool.Exec(ctx, `ALTER TABLE live.tweet_hashtags ADD CHECK (tag <> 'forbidden')`); err != nil {
			t.Fatal(err)
		}
	})
	js, dlq, w := tf.js, tf.dlq, tf.workers[0]

	sample, err := os.ReadFile("../../deploy/samples/tweets-full.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	poison := `{"created_at":"Tue Apr 03 14:13:23 +0000 2018","id":1004,"text":"x","user":{"id":10,"screen_name":"eve"},"entities":{"hashtags":[{"text":"ok"},{"text":"forbidden"}]}}`
	lines := bytes.Split(bytes.TrimSuffix(sample, []byte("\n")), []byte("\n"))
	publish(t, js, "tweets_full", lines)
	// Again, as another program's frame of several lines, with the poison.
	publish(t, js, "tweets_full", [][]byte{append(append(bytes.Clone(sample), poison...), '\n')})
	total := uint64(2*len(lines) + 1)
	testenv.Eventually(t, 60*time.Second, "every line settled", func() error {
		if s := w.Stats(); s.Lines+s.DeadLettered < total {
			return fmt.Errorf("%d lines settled and %d dead-lettered of %d", s.Lines, s.DeadLettered, total)
		}
		return nil
	})

	f := tf.feed
	for sql, want := range map[string]string{
		`SELECT id, retweet_count FROM live.tweets ORDER BY id`:                            "1001|9, 1006|0",
		`SELECT id, screen_name, followers FROM live.users ORDER BY id`:                    "7|ann|125, 8|cy|6",
		`SELECT tweet_id, tag FROM live.tweet_hashtags ORDER BY tweet_id, tag`:             "1001|go, 1005|rain, 1006|rain",
		`SELECT tweet_id, user_id, screen_name FROM live.tweet_mentions ORDER BY tweet_id`: "1002|9|bob, 1006|8|cy",
		`SELECT id FROM live.tweets_tombstones ORDER BY id`:                                "1002, 1005",
		`SELECT count(*) FROM live.tweets WHERE id = 1004`:                                 "0",
		`SELECT count(*) FROM live.users WHERE id = 10`:                                    "0",
		// The join the README and make run's banner show.
		`SELECT u.screen_name, u.followers, h.tag, t.text FROM live.tweets t JOIN live.users u ON u.id = t.user_id JOIN live.tweet_hashtags h ON h.tweet_id = t.id ORDER BY h.tag`: "ann|125|go|rain and #Go and #go, ann|125|rain|@cy #rain here too",
		// tweets.yaml's table of the same name is another, still empty.
		`SELECT count(*) FROM public.tweets`: "0",
	} {
		if got := f.query(t, sql); got != want {
			t.Errorf("%s: %s, want %s", sql, got, want)
		}
	}
	s := w.Stats()
	if s.DeadLetteredBy["pg_23514"] != 1 || s.RejectedBy[pipeline.ReasonMissingField] != 2 {
		t.Errorf("dead-lettered %v, rejected %v; want the poison status once (pg_23514) and line 5 twice", s.DeadLetteredBy, s.RejectedBy)
	}
	// 1001 comes four times, 1002, 1005 and 1006 twice. Whether 1002 (its
	// notice after it) or 1005 (its notice before it) was stored before
	// its notice depends on how the lines fell into batches: in one batch
	// the delete goes first and the tweet is suppressed instead.
	c := s.Tables["live.tweets"]
	if c.Inserted+c.Updated+c.Unchanged+c.Suppressed != 10 || c.Inserted-c.Deleted != 2 || c.Suppressed < 1 || c.Tombstoned != 4 {
		t.Errorf("live.tweets: %+v, want 10 rows: 1001 and 1006 stored once, 1002 and 1005 deleted or suppressed and suppressed when sent again, 4 tombstones", c)
	}
	// Dead letters: line 5 (no user id) twice, and the poison once.
	info, err := dlq.Info(ctx)
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("dead-letter stream: %+v, %v; want 3 entries", info.State, err)
	}
	var poisoned int
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := deadletter.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		if e.Reason == "pg_23514" {
			poisoned++
			if !strings.Contains(e.Error, `"live"."tweet_hashtags"`) || !bytes.Equal(e.Data, []byte(poison)) {
				t.Errorf("poison dead letter %q: %s, want the poison status, its reason naming live.tweet_hashtags", e.Data, e.Error)
			}
		}
	}
	if poisoned != 1 {
		t.Errorf("%d dead letters for the poison status, want 1", poisoned)
	}
}
