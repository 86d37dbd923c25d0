package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// partitionedDDL is a table as a user declares it to keep a growing table
// manageable: range-partitioned by month of created_at, its primary key
// including the partition column. Only November and December 2026 have a
// partition.
const partitionedDDL = `
CREATE TABLE tweets (
	id bigint NOT NULL,
	created_at timestamptz NOT NULL,
	text text,
	PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE tweets_2026_11 PARTITION OF tweets FOR VALUES FROM ('2026-11-01 00:00Z') TO ('2026-12-01 00:00Z');
CREATE TABLE tweets_2026_12 PARTITION OF tweets FOR VALUES FROM ('2026-12-01 00:00Z') TO ('2027-01-01 00:00Z');`

// partitionedTable is the [Table] rows are written to partitionedDDL's
// table as, keyed by (id, created_at) as its primary key is.
var partitionedTable = Table{
	Name: "tweets",
	Columns: []Column{
		{Name: "id", Type: "bigint", NotNull: true},
		{Name: "created_at", Type: "timestamptz", NotNull: true},
		{Name: "text", Type: "text"},
	},
	Key: []string{"id", "created_at"},
}

// setupPartitioned creates partitionedDDL's table in a fresh database, as
// a user does before starting the worker, and returns a store writing to
// it whose start-up check passed.
func setupPartitioned(t testing.TB) *storeBundle {
	t.Helper()
	b := &storeBundle{pool: newPool(t, testenv.Postgres(t))}
	if _, err := b.pool.Exec(t.Context(), partitionedDDL); err != nil {
		t.Fatal(err)
	}
	store, err := NewPostgresStore(b.pool, []Table{partitionedTable}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(t.Context()); err != nil {
		t.Fatalf("start-up check refused the partitioned table: %v", err)
	}
	b.store = store
	return b
}

// tweetAt returns a row of partitionedTable.
func tweetAt(id int64, at string) []any {
	ts, err := time.Parse(time.RFC3339, at)
	if err != nil {
		panic(err)
	}
	return []any{id, ts, fmt.Sprintf("tweet %d", id)}
}

// partitionCounts returns how many rows each partition of tweets holds.
func (b *storeBundle) partitionCounts(t testing.TB) map[string]int {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT tableoid::regclass::text, count(*)::int FROM tweets GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var name string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error { got[name] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestPartitionedTable: a declaratively partitioned table whose key
// includes the partition column passes the start-up check; rows land in
// their month's partition; a redelivered batch, and a batch mixing stored
// and new rows, insert nothing twice; a row no partition takes is
// rejected with the database's message and the rest of its batch is
// committed, until a DEFAULT partition takes it.
func TestPartitionedTable(t *testing.T) {
	t.Parallel()
	b := setupPartitioned(t)
	ctx := t.Context()

	batch := [][]any{
		tweetAt(1, "2026-11-01T00:00:00Z"),
		tweetAt(2, "2026-11-30T23:59:59Z"),
		tweetAt(3, "2026-12-01T00:00:00Z"),
		tweetAt(4, "2026-12-31T12:00:00Z"),
	}
	res, err := b.store.Write(ctx, rowsOf(batch))
	if err != nil || res.Inserted != 4 || res.Duplicates != 0 || len(res.Rejected) != 0 {
		t.Fatalf("fresh batch: %+v, %v; want 4 inserted", res, err)
	}
	want := map[string]int{"tweets_2026_11": 2, "tweets_2026_12": 2}
	if got := b.partitionCounts(t); !maps.Equal(got, want) {
		t.Fatalf("partitions hold %v, want %v", got, want)
	}

	res, err = b.store.Write(ctx, rowsOf(batch))
	if err != nil || res.Inserted != 0 || res.Duplicates != 4 || len(res.Rejected) != 0 {
		t.Fatalf("redelivered batch: %+v, %v; want 4 duplicates", res, err)
	}
	// The same id at another time is another row of this key.
	res, err = b.store.Write(ctx, rowsOf([][]any{batch[0], tweetAt(1, "2026-12-02T00:00:00Z"), batch[3]}))
	if err != nil || res.Inserted != 1 || res.Duplicates != 2 {
		t.Fatalf("partly stored batch: %+v, %v; want 1 inserted, 2 duplicates", res, err)
	}
	want["tweets_2026_12"]++
	if got := b.partitionCounts(t); !maps.Equal(got, want) {
		t.Fatalf("partitions hold %v, want %v", got, want)
	}

	// January 2027 has no partition.
	orphan := tweetAt(5, "2027-01-15T00:00:00Z")
	res, err = b.store.Write(ctx, rowsOf([][]any{tweetAt(6, "2026-11-15T00:00:00Z"), orphan, tweetAt(7, "2026-12-15T00:00:00Z"), batch[1]}))
	if err != nil {
		t.Fatalf("batch with a row outside every partition: %v", err)
	}
	if res.Inserted != 2 || res.Duplicates != 1 || len(res.Rejected) != 1 || res.Rejected[0].Index != 1 {
		t.Fatalf("batch with a row outside every partition: %+v, want rows 6 and 7 inserted, row 2 a duplicate, index 1 rejected", res)
	}
	code, msg := pgMessage(res.Rejected[0].Err)
	if Classify(res.Rejected[0].Err) != RowData || code != "23514" || !strings.Contains(msg, `no partition of relation "tweets" found for row`) {
		t.Fatalf("rejected row: %s %q (%s), want 23514 no partition found, a row data error", code, msg, Classify(res.Rejected[0].Err))
	}
	want["tweets_2026_11"]++
	want["tweets_2026_12"]++
	if got := b.partitionCounts(t); !maps.Equal(got, want) {
		t.Fatalf("partitions hold %v, want %v", got, want)
	}

	// A DEFAULT partition takes what no other does; the table still
	// passes the check.
	if _, err := b.pool.Exec(ctx, `CREATE TABLE tweets_default PARTITION OF tweets DEFAULT`); err != nil {
		t.Fatal(err)
	}
	if err := b.store.CreateTables(ctx); err != nil {
		t.Fatalf("start-up check with a default partition: %v", err)
	}
	res, err = b.store.Write(ctx, rowsOf([][]any{orphan, batch[2]}))
	if err != nil || res.Inserted != 1 || res.Duplicates != 1 || len(res.Rejected) != 0 {
		t.Fatalf("with a default partition: %+v, %v; want 1 inserted, 1 duplicate", res, err)
	}
	want["tweets_default"] = 1
	if got := b.partitionCounts(t); !maps.Equal(got, want) {
		t.Fatalf("partitions hold %v, want %v", got, want)
	}
}

// TestPartitionedTableMismatch: a partitioned table is refused at start,
// saying what to change, when its unique index cannot keep redelivered
// lines from being stored twice: the pipeline's key leaves out the
// partition column, or the index on the key is not valid yet.
func TestPartitionedTableMismatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ddl string
		key       []string
		want      string
	}{
		{
			name: "key without the partition column",
			ddl:  partitionedDDL,
			key:  []string{"id"},
			want: "has no primary key or unique index on exactly (id), which keeps redelivered lines from being stored twice; " +
				"it is partitioned by RANGE (created_at), and a unique index of a partitioned table must include the partition key's columns",
		},
		{
			// Indexing a big partitioned table without locking it: the
			// parent's index is valid only once every partition's index
			// is attached; until then ON CONFLICT cannot use it and
			// tweets_2026_12 takes duplicates.
			name: "index on only the parent, one partition attached",
			ddl: `CREATE TABLE tweets (id bigint NOT NULL, created_at timestamptz NOT NULL, text text) PARTITION BY RANGE (created_at);
				CREATE TABLE tweets_2026_11 PARTITION OF tweets FOR VALUES FROM ('2026-11-01 00:00Z') TO ('2026-12-01 00:00Z');
				CREATE TABLE tweets_2026_12 PARTITION OF tweets FOR VALUES FROM ('2026-12-01 00:00Z') TO ('2027-01-01 00:00Z');
				CREATE UNIQUE INDEX tweets_key ON ONLY tweets (id, created_at);
				CREATE UNIQUE INDEX tweets_2026_11_key ON tweets_2026_11 (id, created_at);
				ALTER INDEX tweets_key ATTACH PARTITION tweets_2026_11_key;`,
			key:  []string{"id", "created_at"},
			want: "its unique index tweets_key on (id, created_at) is not valid",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool := newPool(t, testenv.Postgres(t))
			if _, err := pool.Exec(t.Context(), tt.ddl); err != nil {
				t.Fatal(err)
			}
			table := partitionedTable
			table.Key = tt.key
			store, err := NewPostgresStore(pool, []Table{table}, testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			err = store.CreateTables(t.Context())
			if !errors.Is(err, ErrTableMismatch) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CreateTable = %v\nwant a mismatch containing %q", err, tt.want)
			}
		})
	}
}

// partitionTransform turns {"id": n, "at": "RFC 3339 time"} into a row of
// partitionedTable.
type partitionTransform struct{}

func (partitionTransform) Tables() []Table { return []Table{partitionedTable} }

func (partitionTransform) Transform(line *Line, rows *Rows) Result {
	var v struct {
		ID int64     `json:"id"`
		At time.Time `json:"at"`
	}
	if err := json.Unmarshal(line.Data, &v); err != nil {
		return Result{Outcome: Reject, Reason: "invalid_json", Detail: err.Error()}
	}
	row := rows.Add(0)
	row[0], row[1], row[2] = v.ID, v.At, "line "+line.ID
	return Result{Outcome: Insert}
}

// TestPartitionedDeadLetter: through the worker, lines whose row falls
// outside every partition are dead-lettered once each with reason
// pg_23514 and the database's message, without retrying the batch; every
// other line of the frame is stored in its partition and the frame is
// acknowledged.
func TestPartitionedDeadLetter(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupPartitioned(t)
	const n, first = 200, 1
	orphans := []int{17, 150} // positions in the frame, from 1
	lines := make([][]byte, n)
	for k := 1; k <= n; k++ {
		at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(k) * 6 * time.Hour) // into December
		if slices.Contains(orphans, k) {
			at = time.Date(2027, 2, k%28+1, 0, 0, 0, 0, time.UTC)
		}
		lines[k-1] = fmt.Appendf(nil, `{"id":%d,"at":%q}`, k, at.Format(time.RFC3339))
	}
	nb.publishFrame(t, "tweets", first, lines)

	router, err := NewRouter(Route{Transform: partitionTransform{}, Store: sb.store})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.BatchSize, opts.Concurrency = n, 1
	opts.DeadLetters, opts.Instance = nb.js, "w-partitions"
	w, stop := runWorker(t, nb.cons, router, opts)
	testenv.Eventually(t, 30*time.Second, "all lines settled", func() error {
		if got := w.Stats().Lines; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	var stored int
	if err := sb.pool.QueryRow(t.Context(), `SELECT count(*) FROM tweets`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if got := sb.partitionCounts(t); stored != n-len(orphans) || got["tweets_2026_11"] == 0 || got["tweets_2026_12"] == 0 {
		t.Fatalf("stored %d rows in %v, want %d across both partitions", stored, got, n-len(orphans))
	}
	var got []string
	for _, e := range nb.deadLetters(t) {
		id := e.Header.Get(topology.HeaderLineID)
		got = append(got, id)
		if e.Reason != "pg_23514" || e.Class != deadletter.ClassPermanent ||
			!strings.Contains(e.Error, `no partition of relation "tweets" found for row`) || e.By != "w-partitions" {
			t.Errorf("dead letter %s: reason %q, class %q, error %q", id, e.Reason, e.Class, e.Error)
		}
	}
	var want []string
	for _, k := range orphans {
		want = append(want, fmt.Sprintf("gw.1.%d", first+k-1))
	}
	slices.Sort(want)
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Fatalf("dead letters for %v, want %v", got, want)
	}
	s := w.Stats()
	if s.Inserted != uint64(n-len(orphans)) || s.DeadLetteredBy["pg_23514"] != uint64(len(orphans)) || s.Retried != 0 || s.Frames != 1 {
		t.Fatalf("stats %+v", s)
	}
	testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })
}
