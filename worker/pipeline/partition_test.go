package pipeline_test

import (
	"bytes"
	"maps"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// TestTweetsPartitioned: deploy/pipelines/tweets.yaml keyed by
// [id, created_at] stores into a tweets table the user partitioned by
// month of created_at before starting the worker, as the README shows:
// the start-up check takes it, the sample's rows land in their month's
// partition, and the sample written again adds none.
func TestTweetsPartitioned(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `
		CREATE TABLE tweets (
			id bigint NOT NULL, created_at timestamptz NOT NULL, author text NOT NULL, lang text, text text,
			retweet_count integer, favorite_count integer, hashtags text[], followers bigint,
			PRIMARY KEY (id, created_at)
		) PARTITION BY RANGE (created_at);
		CREATE TABLE tweets_2018_03 PARTITION OF tweets FOR VALUES FROM ('2018-03-01 00:00Z') TO ('2018-04-01 00:00Z');
		CREATE TABLE tweets_2018_04 PARTITION OF tweets FOR VALUES FROM ('2018-04-01 00:00Z') TO ('2018-05-01 00:00Z');`)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../../deploy/pipelines/tweets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src = bytes.Replace(src, []byte("\nkey: id\n"), []byte("\nkey: [id, created_at]\n"), 1)
	spec, err := pipeline.ParseSpec("tweets.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if key := p.Tables()[0].Key; len(key) != 2 || key[0] != "id" || key[1] != "created_at" {
		t.Fatalf("table key %v, want [id created_at]", key)
	}
	store, err := worker.NewPostgresStore(pool, p.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(ctx); err != nil {
		t.Fatalf("start-up check refused the partitioned table: %v", err)
	}

	sample, err := os.ReadFile("../../deploy/samples/tweets.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	rows := worker.NewRows(p.Tables())
	keys := map[[2]any]bool{} // the sample repeats a status
	for i, data := range bytes.Split(bytes.TrimSuffix(sample, []byte("\n")), []byte("\n")) {
		line := worker.Line{ID: "sample." + strconv.Itoa(i+1), Seq: uint64(i + 1), Source: p.Source(), Data: data}
		rows.Transform(p, &line, i)
	}
	for _, row := range rows.Table(0).Rows {
		keys[[2]any{row[0], row[1]}] = true
	}
	if rows.Len() < 50 {
		t.Fatalf("the sample gave %d rows; want a batch of them", rows.Len())
	}
	res, err := store.Write(ctx, rows)
	if err != nil || res.Inserted != len(keys) || res.Duplicates != rows.Len()-len(keys) || len(res.Rejected) != 0 {
		t.Fatalf("sample: %+v, %v; want %d inserted, %d duplicates", res, err, len(keys), rows.Len()-len(keys))
	}
	res, err = store.Write(ctx, rows)
	if err != nil || res.Inserted != 0 || res.Duplicates != rows.Len() {
		t.Fatalf("sample again: %+v, %v; want %d duplicates", res, err, rows.Len())
	}
	want := map[string]int{}
	for k := range keys {
		want["tweets_"+k[1].(time.Time).UTC().Format("2006_01")]++
	}
	got := map[string]int{}
	byPartition, err := pool.Query(ctx, `SELECT tableoid::regclass::text, count(*)::int FROM tweets GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var n int
	if _, err := pgx.ForEachRow(byPartition, []any{&name, &n}, func() error { got[name] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) || len(want) != 2 {
		t.Fatalf("partitions hold %v, want %v (rows of both months)", got, want)
	}
}
