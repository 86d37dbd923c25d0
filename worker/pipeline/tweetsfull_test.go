package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// tweetsFull is deploy/pipelines/tweets-full.yaml loaded beside
// tweets.yaml, as compose and make run load them, with its tables on a
// fresh database and workers on one consumer of a fresh stream.
type tweetsFull struct {
	*feed
	js      jetstream.JetStream
	dlq     jetstream.Stream
	workers []*worker.Worker
}

// startTweetsFull creates the tables, then calls prepare (if not nil) and
// starts n workers sharing the consumer, each taking batches of batch lines.
func startTweetsFull(t *testing.T, n, batch int, prepare func(*pgxpool.Pool)) *tweetsFull {
	t.Helper()
	ctx := t.Context()
	var ps []worker.Pipeline
	for _, f := range []string{"tweets-full.yaml", "tweets.yaml"} {
		p, err := pipeline.Load("../../deploy/pipelines/" + f)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	logger := testenv.Logger(t)
	router, stores, err := worker.Routes(pool, "events", ps, logger)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		if err := s.CreateTables(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if prepare != nil {
		prepare(pool)
	}
	js := testenv.JetStream(t)
	if _, err := topology.EnsureStream(ctx, js, topology.StreamConfig{MaxBytes: 1 << 30, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	dlq, err := deadletter.EnsureStream(ctx, js, deadletter.Config{MaxAge: time.Hour, MaxBytes: 64 << 20}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := topology.EnsureConsumer(ctx, js, topology.ConsumerConfig{AckWait: 30 * time.Second, MaxAckPending: 10000, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	tf := &tweetsFull{feed: &feed{pool: pool}, js: js, dlq: dlq}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	for i := range n {
		w, err := worker.New(cons, router, worker.Options{
			BatchSize: batch, BatchBytes: 1 << 20, Concurrency: 2, DeadLetters: js,
			RetryBackoff: 100 * time.Millisecond, RetryMaxBackoff: time.Second, ShutdownTimeout: 10 * time.Second,
		}, logger.With("worker", i))
		if err != nil {
			t.Fatal(err)
		}
		tf.workers = append(tf.workers, w)
		wg.Go(func() {
			if err := w.Run(runCtx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	// Each worker keeps one pull request open. Until all are, the first
	// may take the whole of what is published next.
	testenv.Eventually(t, 10*time.Second, "every worker pulling", func() error {
		info, err := cons.Info(ctx)
		if err == nil && info.NumWaiting < n {
			err = fmt.Errorf("%d pull requests waiting, want %d", info.NumWaiting, n)
		}
		return err
	})
	return tf
}

// settle waits until the workers have settled (stored, rejected or
// dead-lettered) total lines in all.
func (tf *tweetsFull) settle(t *testing.T, total uint64) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, "every line settled", func() error {
		var n uint64
		for _, w := range tf.workers {
			s := w.Stats()
			n += s.Lines + s.DeadLettered
		}
		if n < total {
			return fmt.Errorf("%d lines settled of %d", n, total)
		}
		return nil
	})
}

// dumps are the full contents of the tweets-full tables, in a fixed order.
var dumps = []string{
	`SELECT id, extract(epoch FROM created_at)::bigint, user_id, lang, text, retweet_count FROM live.tweets ORDER BY id`,
	`SELECT id, screen_name, followers FROM live.users ORDER BY id`,
	`SELECT tweet_id, tag FROM live.tweet_hashtags ORDER BY tweet_id, tag COLLATE "C"`,
	`SELECT tweet_id, user_id, screen_name FROM live.tweet_mentions ORDER BY tweet_id, user_id`,
	`SELECT id FROM live.tweets_tombstones ORDER BY id`,
}

func (tf *tweetsFull) dump(t *testing.T) []string {
	t.Helper()
	out := make([]string, len(dumps))
	for i, sql := range dumps {
		out[i] = tf.query(t, sql)
	}
	return out
}

// fullCorpus is a generated live feed: tweets seen up to three times with
// growing retweet counts (in any order), users in many tweets with
// distinct follower counts, hashtags repeated within a tweet in other
// cases and spacing, mentions, and delete notices, half before the first
// copy of their tweet and half after the last.
type fullCorpus struct {
	lines [][]byte
	// want holds the expected dumps, in the order of dumps, computed from
	// what was generated, not by the pipeline.
	want []string
}

func genFullCorpus(seed uint64, minLines int) fullCorpus {
	r := rand.New(rand.NewPCG(seed, 1))
	tagWords := []string{"go", "rain", "data", "night", "music", "news"}
	type tweet struct {
		id, user, created int64
		lang, text        string
		tags              []string
		mentions          []int64
	}
	type copyLine struct {
		tw      *tweet
		rt      int64
		follows int64
	}
	const users = 500
	var (
		lines     [][]byte
		tweets    []*tweet
		deleted   = map[int64]bool{}
		followers = map[int64]int64{}
		retweets  = map[int64]int64{}
		followSeq int64
	)
	line := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		lines = append(lines, b)
	}
	notice := func(id, user int64) {
		line(map[string]any{"delete": map[string]any{"status": map[string]any{"id": id, "id_str": fmt.Sprint(id), "user_id": user}, "timestamp_ms": "1522764801000"}})
		deleted[id] = true
	}
	send := func(c copyLine) {
		tags := []any{}
		for _, tg := range c.tw.tags {
			tags = append(tags, map[string]any{"text": tg, "indices": []int{0, 1}})
		}
		ments := []any{}
		for _, m := range c.tw.mentions {
			ments = append(ments, map[string]any{"id": m, "screen_name": fmt.Sprintf("U%d", m)})
		}
		line(map[string]any{
			"created_at":    time.Unix(c.tw.created, 0).UTC().Format(time.RubyDate),
			"id":            c.tw.id,
			"text":          c.tw.text,
			"lang":          c.tw.lang,
			"retweet_count": c.rt,
			"user":          map[string]any{"id": c.tw.user, "screen_name": fmt.Sprintf(" U%d ", c.tw.user), "followers_count": c.follows},
			"entities":      map[string]any{"hashtags": tags, "user_mentions": ments},
		})
		followers[c.tw.user] = max(followers[c.tw.user], c.follows)
		retweets[c.tw.id] = max(retweets[c.tw.id], c.rt)
	}
	for id := int64(1); len(lines) < minLines; id++ {
		tw := &tweet{id: id, user: 1 + r.Int64N(users), created: 1514764800 + id*7, lang: []string{"en", "ja", "es"}[r.IntN(3)], text: fmt.Sprintf("tweet %d", id)}
		for range r.IntN(4) {
			w := tagWords[r.IntN(len(tagWords))]
			tw.tags = append(tw.tags, w)
			if r.IntN(3) == 0 { // the same tag again, as #Go and #go
				tw.tags = append(tw.tags, " "+strings.ToUpper(w))
			}
		}
		for range r.IntN(3) {
			if m := 1 + r.Int64N(users); !slices.Contains(tw.mentions, m) {
				tw.mentions = append(tw.mentions, m)
			}
		}
		tweets = append(tweets, tw)
		var copies []copyLine
		for k := range 1 + r.IntN(3) {
			followSeq++ // a follower count no other line has, so the newest is one line
			copies = append(copies, copyLine{tw: tw, rt: int64(10*k) + r.Int64N(10), follows: followSeq})
		}
		r.Shuffle(len(copies), func(i, j int) { copies[i], copies[j] = copies[j], copies[i] })
		switch r.IntN(20) {
		case 0:
			notice(id, tw.user)
			for _, c := range copies {
				send(c)
			}
		case 1:
			for _, c := range copies {
				send(c)
			}
			notice(id, tw.user)
		default:
			for _, c := range copies {
				send(c)
			}
		}
	}
	var want [5][]string
	for _, tw := range tweets {
		if !deleted[tw.id] {
			want[0] = append(want[0], fmt.Sprintf("%d|%d|%d|%s|%s|%d", tw.id, tw.created, tw.user, tw.lang, tw.text, retweets[tw.id]))
		} else {
			want[4] = append(want[4], fmt.Sprint(tw.id))
		}
		// A tweet's hashtags and mentions stay when it is deleted: a
		// tombstone keeps out rows of its own table only.
		var tags []string
		for _, tg := range tw.tags {
			tags = append(tags, strings.ToLower(strings.TrimSpace(tg)))
		}
		slices.Sort(tags)
		for _, tg := range slices.Compact(tags) {
			want[2] = append(want[2], fmt.Sprintf("%d|%s", tw.id, tg))
		}
		ments := slices.Clone(tw.mentions)
		slices.Sort(ments)
		for _, m := range ments {
			want[3] = append(want[3], fmt.Sprintf("%d|%d|u%d", tw.id, m, m))
		}
	}
	ids := make([]int64, 0, len(followers))
	for u := range followers {
		ids = append(ids, u)
	}
	slices.Sort(ids)
	for _, u := range ids {
		want[1] = append(want[1], fmt.Sprintf("%d|u%d|%d", u, u, followers[u]))
	}
	c := fullCorpus{lines: lines}
	for _, w := range want {
		c.want = append(c.want, strings.Join(w, ", "))
	}
	return c
}

// frames joins lines into messages of up to n lines each, as a program
// other than the gateway may publish them.
func frames(lines [][]byte, n int) [][]byte {
	var out [][]byte
	for chunk := range slices.Chunk(lines, n) {
		var b []byte
		for _, l := range chunk {
			b = append(append(b, l...), '\n')
		}
		out = append(out, b)
	}
	return out
}

// TestTweetsFullSentTwice sends a generated feed of 20,000 lines through
// the shipped spec, then the same again: the tables equal what the test
// computed from the feed itself (newest retweet count and follower count,
// deleted tweets gone whether the notice came before or after them, each
// distinct hashtag and mention once) and do not change the second time.
func TestTweetsFullSentTwice(t *testing.T) {
	t.Parallel()
	c := genFullCorpus(7, 20_000)
	tf := startTweetsFull(t, 1, 500, nil)
	publish(t, tf.js, "tweets_full", frames(c.lines, 250))
	tf.settle(t, uint64(len(c.lines)))
	first := tf.dump(t)
	for i, sql := range dumps {
		if first[i] != c.want[i] {
			t.Errorf("%s after the first send: %s", sql, firstDiff(first[i], c.want[i]))
		}
	}
	publish(t, tf.js, "tweets_full", frames(c.lines, 250))
	tf.settle(t, 2*uint64(len(c.lines)))
	for i, got := range tf.dump(t) {
		if got != first[i] {
			t.Errorf("%s changed when the feed was sent again: %s", dumps[i], firstDiff(got, first[i]))
		}
	}
	if s := tf.workers[0].Stats(); s.DeadLettered != 0 || s.Lines != 2*uint64(len(c.lines)) {
		t.Errorf("stats %+v, want %d lines and no dead letters", s, 2*len(c.lines))
	}
}

// firstDiff describes where two dumps of [feed.query] first differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, ", "), strings.Split(want, ", ")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("row %d is %s, want %s (%d rows, want %d)", i, g[i], w[i], len(g), len(w))
		}
	}
	return fmt.Sprintf("%d rows, want %d", len(g), len(w))
}

// TestTweetsFullUsersOutOfOrder: two workers on one consumer store copies
// of three users whose follower counts come in ascending, descending and
// shuffled order, in small batches committed in whatever order the
// workers reach them; each user ends at its highest count.
func TestTweetsFullUsersOutOfOrder(t *testing.T) {
	t.Parallel()
	const copies = 400
	r := rand.New(rand.NewPCG(3, 4))
	shuffled := r.Perm(copies)
	var lines [][]byte
	for i := range copies {
		for u, follows := range []int{i, copies - 1 - i, shuffled[i]} {
			id := int64(u*copies + i + 1)
			lines = append(lines, fmt.Appendf(nil, `{"created_at":"Tue Apr 03 14:13:20 +0000 2018","id":%d,"text":"t","user":{"id":%d,"screen_name":"u%d","followers_count":%d},"entities":{"hashtags":[],"user_mentions":[]}}`, id, 100+u, u, 1000+follows))
		}
	}
	tf := startTweetsFull(t, 2, 10, nil)
	publish(t, tf.js, "tweets_full", lines)
	tf.settle(t, uint64(len(lines)))
	want := fmt.Sprintf("100|u0|%d, 101|u1|%d, 102|u2|%d", 1000+copies-1, 1000+copies-1, 1000+copies-1)
	if got := tf.query(t, `SELECT id, screen_name, followers FROM live.users ORDER BY id`); got != want {
		t.Errorf("users: %s, want %s", got, want)
	}
	if got := tf.query(t, `SELECT count(*) FROM live.tweets`); got != fmt.Sprint(len(lines)) {
		t.Errorf("%s tweets, want %d", got, len(lines))
	}
	for i, w := range tf.workers {
		if s := w.Stats(); s.Lines == 0 {
			t.Errorf("worker %d stored no line; the test needs both to commit", i)
		}
	}
}

// TestTweetsFullPoisonHashtag: a tag holding a NUL, which Postgres text
// cannot store, takes its whole line out (the tweet, its user and its
// other hashtag too) into the dead letters, with the table and column in
// the reason, while the other lines of its frame, one batch, are stored.
func TestTweetsFullPoisonHashtag(t *testing.T) {
	t.Parallel()
	const n, poison = 50, 25
	var lines [][]byte
	for id := 1; id <= n; id++ {
		tag := "ok"
		if id == poison {
			tag = `bad\u0000tag`
		}
		lines = append(lines, fmt.Appendf(nil, `{"created_at":"Tue Apr 03 14:13:20 +0000 2018","id":%d,"text":"t","user":{"id":%d,"screen_name":"u"},"entities":{"hashtags":[{"text":"fine"},{"text":"%s"}]}}`, id, 1000+id, tag))
	}
	tf := startTweetsFull(t, 1, 100, nil)
	publish(t, tf.js, "tweets_full", frames(lines, n))
	tf.settle(t, n)
	for sql, want := range map[string]string{
		`SELECT count(*), count(*) FILTER (WHERE id = 25) FROM live.tweets`:               fmt.Sprintf("%d|0", n-1),
		`SELECT count(*), count(*) FILTER (WHERE id = 1025) FROM live.users`:              fmt.Sprintf("%d|0", n-1),
		`SELECT count(*), count(*) FILTER (WHERE tweet_id = 25) FROM live.tweet_hashtags`: fmt.Sprintf("%d|0", 2*(n-1)),
	} {
		if got := tf.query(t, sql); got != want {
			t.Errorf("%s: %s, want %s", sql, got, want)
		}
	}
	info, err := tf.dlq.Info(t.Context())
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("dead-letter stream: %+v, %v; want the poison line alone", info.State, err)
	}
	m, err := tf.dlq.GetMsg(t.Context(), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	e, err := deadletter.Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if e.Reason != pipeline.ReasonBadValue || !strings.Contains(e.Error, "live.tweet_hashtags: column tag") || string(e.Data) != string(lines[poison-1]) {
		t.Errorf("dead letter %s %q of %s, want %s naming live.tweet_hashtags and column tag, of line %d", e.Reason, e.Error, e.Data, pipeline.ReasonBadValue, poison)
	}
}
