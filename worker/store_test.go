package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

type storeBundle struct {
	pool  *pgxpool.Pool
	store *PostgresStore
}

// setupStore returns a store writing the raw landing table "events" in a
// fresh database.
func setupStore(t testing.TB) *storeBundle {
	t.Helper()
	pool := newPool(t, testenv.Postgres(t))
	raw, err := NewRawLanding("events")
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewPostgresStore(pool, raw.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &storeBundle{pool: pool, store: store}
}

func newPool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var baseTime = time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)

// rawRows returns n raw landing rows with sequences first, first+1, …,
// each identified by a gateway-like message id ending in its sequence.
func rawRows(first, n int) [][]any {
	rows := make([][]any, n)
	for i := range rows {
		seq := first + i
		rows[i] = []any{rawLineID(seq), int64(seq), "tweets", baseTime.Add(time.Duration(seq) * time.Millisecond), tweetLine(seq)}
	}
	return rows
}

// rawLineID is the identity of the line rawRows gives sequence seq: a
// message id as a gateway sets it, "<instance>.<conn>.<line>".
func rawLineID(seq int) string { return "gw-0a1b2c3d.1." + strconv.Itoa(seq) }

// count returns the number of rows in events and the sum of their seqs.
func (b *storeBundle) count(t testing.TB) (n, sum int64) {
	t.Helper()
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*), coalesce(sum(seq), 0) FROM events`).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return n, sum
}

func TestStoreInsert(t *testing.T) {
	t.Parallel()
	b := setupStore(t)
	rows := rawRows(1, 500)
	res, err := b.store.Write(t.Context(), rowsOf(rows))
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 500 || res.Duplicates != 0 || len(res.Rejected) != 0 {
		t.Fatalf("Write = %+v, want 500 inserted", res)
	}
	if n, sum := b.count(t); n != 500 || sum != 500*501/2 {
		t.Fatalf("table has %d rows (seq sum %d), want 500 (%d)", n, sum, 500*501/2)
	}
	var (
		seq    int64
		source string
		at     time.Time
		same   bool
	)
	err = b.pool.QueryRow(t.Context(), `SELECT seq, source, received_at, payload = $2::jsonb FROM events WHERE line_id = $1`,
		rawLineID(42), string(tweetLine(42))).Scan(&seq, &source, &at, &same)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 42 || source != "tweets" || !at.Equal(rows[41][3].(time.Time)) || !same {
		t.Fatalf("row 42 = (%d, %q, %s, payload equal %v), want (42, tweets, %s, true)", seq, source, at, same, rows[41][3])
	}
}

func TestStoreRedelivery(t *testing.T) {
	t.Parallel()
	b := setupStore(t)
	if _, err := b.store.Write(t.Context(), rowsOf(rawRows(1, 500))); err != nil {
		t.Fatal(err)
	}
	res, err := b.store.Write(t.Context(), rowsOf(rawRows(1, 500)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 0 || res.Duplicates != 500 {
		t.Fatalf("redelivered batch: %+v, want 0 inserted, 500 duplicates", res)
	}
	// A batch that overlaps what is stored inserts only the new half.
	res, err = b.store.Write(t.Context(), rowsOf(rawRows(251, 500)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 250 || res.Duplicates != 250 {
		t.Fatalf("overlapping batch: %+v, want 250 inserted, 250 duplicates", res)
	}
	if n, sum := b.count(t); n != 750 || sum != 750*751/2 {
		t.Fatalf("table has %d rows (seq sum %d), want 750 (%d)", n, sum, 750*751/2)
	}
}

func TestStoreBisect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		bad       map[int]string // row index → payload Postgres refuses
		preloaded int            // rows 0..preloaded-1 are stored before
		wantCodes []string
	}{
		{
			name:      "one NUL escape",
			bad:       map[int]string{137: `{"text":"a\u0000b"}`},
			wantCodes: []string{"22P05"},
		},
		{
			name: "three bad rows",
			bad: map[int]string{
				0:   `{"text":"\ud83d"}`,
				250: `{"text":"x\u0000"}`,
				499: `{"text":`,
			},
			wantCodes: []string{"22P02", "22P05", "22P02"},
		},
		{
			name:      "bad row in a redelivered batch",
			bad:       map[int]string{400: `{"n":"\u0000"}`},
			preloaded: 300,
			wantCodes: []string{"22P05"},
		},
		{
			name:      "single bad row",
			bad:       map[int]string{0: `"\u0000"`},
			wantCodes: []string{"22P05"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupStore(t)
			n := 500
			if len(tt.bad) == 1 && tt.bad[0] != "" {
				n = 1
			}
			rows := rawRows(1, n)
			if tt.preloaded > 0 {
				if _, err := b.store.Write(t.Context(), rowsOf(rows[:tt.preloaded])); err != nil {
					t.Fatal(err)
				}
			}
			var badIdx []int
			for i, payload := range tt.bad {
				rows[i][4] = []byte(payload)
				badIdx = append(badIdx, i)
			}
			slices.Sort(badIdx)

			res, err := b.store.Write(t.Context(), rowsOf(rows))
			if err != nil {
				t.Fatal(err)
			}
			var gotIdx []int
			var gotCodes []string
			for _, re := range res.Rejected {
				gotIdx = append(gotIdx, re.Index)
				var pgErr *pgconn.PgError
				if !errors.As(re.Err, &pgErr) {
					t.Fatalf("row %d: error %v is not a PgError", re.Index, re.Err)
				}
				gotCodes = append(gotCodes, pgErr.Code)
			}
			if !slices.Equal(gotIdx, badIdx) || !slices.Equal(gotCodes, tt.wantCodes) {
				t.Fatalf("rejected rows %v with codes %v, want %v with %v", gotIdx, gotCodes, badIdx, tt.wantCodes)
			}
			wantNew := n - tt.preloaded - len(tt.bad)
			if res.Inserted != wantNew || res.Duplicates != tt.preloaded {
				t.Fatalf("Write = inserted %d, duplicates %d; want %d, %d", res.Inserted, res.Duplicates, wantNew, tt.preloaded)
			}
			stored, _ := b.count(t)
			if int(stored) != n-len(tt.bad) {
				t.Fatalf("table has %d rows, want %d", stored, n-len(tt.bad))
			}
			// Bisecting costs O(log n) attempts per bad row.
			if limit := len(tt.bad) * 2 * 10; res.Splits > limit {
				t.Fatalf("%d attempts to isolate %d rows, want at most %d", res.Splits, len(tt.bad), limit)
			}
		})
	}
}

func TestStoreDatabaseDown(t *testing.T) {
	t.Parallel()
	pool := newPool(t, "postgres://postgres@"+testenv.FreeAddr(t)+"/jetline?sslmode=disable&connect_timeout=2")
	raw, _ := NewRawLanding("events")
	store, err := NewPostgresStore(pool, raw.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Write(t.Context(), rowsOf(rawRows(1, 10)))
	if err == nil {
		t.Fatal("Write to a closed port succeeded")
	}
	if c := Classify(err); c != Transient {
		t.Fatalf("Classify(%v) = %s, want transient", err, c)
	}
}

func TestTableCreateSQL(t *testing.T) {
	t.Parallel()
	raw, err := NewRawLanding("ingest.events")
	if err != nil {
		t.Fatal(err)
	}
	want := "CREATE TABLE IF NOT EXISTS \"ingest\".\"events\" (\n" +
		"\t\"line_id\" text NOT NULL,\n\t\"seq\" bigint NOT NULL,\n\t\"source\" text NOT NULL,\n\t\"received_at\" timestamptz NOT NULL,\n\t\"payload\" jsonb COMPRESSION lz4 NOT NULL,\n" +
		"\tPRIMARY KEY (\"line_id\")\n)"
	if got := raw.Tables()[0].CreateSQL(); got != want {
		t.Fatalf("CreateSQL() =\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{"", "1events", "a.b.c", "ev ents", "events;drop", fmt.Sprintf("%065d", 0)} {
		if _, err := NewRawLanding(bad); err == nil {
			t.Errorf("NewRawLanding(%q) succeeded", bad)
		}
	}
}

// TestStoreCreateTableConcurrently is workers starting together on a fresh
// database: every CreateTable must succeed.
func TestStoreCreateTableConcurrently(t *testing.T) {
	t.Parallel()
	pool := newPool(t, testenv.Postgres(t))
	raw, err := NewRawLanding("events")
	if err != nil {
		t.Fatal(err)
	}
	const workers = 8
	errs := make(chan error, workers)
	for range workers {
		go func() {
			store, err := NewPostgresStore(pool, raw.Tables(), testenv.Logger(t))
			if err == nil {
				err = store.CreateTables(t.Context())
			}
			errs <- err
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Errorf("CreateTable: %v", err)
		}
	}
}

// TestStoreSeqKeyedTable: a raw landing table of an earlier version, keyed
// by stream sequence, stops the worker with what to do about it, and the
// table is left alone.
func TestStoreSeqKeyedTable(t *testing.T) {
	t.Parallel()
	pool := newPool(t, testenv.Postgres(t))
	if _, err := pool.Exec(t.Context(), `CREATE TABLE events (seq bigint PRIMARY KEY, source text NOT NULL,
		received_at timestamptz NOT NULL, payload jsonb NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	raw, err := NewRawLanding("events")
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewPostgresStore(pool, raw.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = store.CreateTables(t.Context())
	if !errors.Is(err, ErrTableMismatch) || !strings.Contains(err.Error(), `no column "line_id" (text)`) ||
		!strings.Contains(err.Error(), `ALTER TABLE "events" RENAME TO "events_by_seq"`) {
		t.Fatalf("CreateTable over a table keyed by seq: %v; want a mismatch naming line_id and saying how to rename the table", err)
	}
	if _, err := pool.Exec(t.Context(), `ALTER TABLE "events" RENAME TO "events_by_seq"`); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTables(t.Context()); err != nil {
		t.Fatalf("CreateTable after renaming the old table as told: %v", err)
	}
}

// rowsOf holds rows as the rows of one table, each of a line of its own,
// as a batch of single-row lines gives them to a store.
func rowsOf(rows [][]any) *Rows {
	r := &Rows{tables: make([]TableRows, 1), marks: make([]int, 1)}
	if len(rows) > 0 {
		r.tables[0].columns = len(rows[0])
	}
	for i, row := range rows {
		r.begin(i)
		copy(r.Add(0), row)
	}
	return r
}

// transformOne runs tf on line alone and returns the first row it made in
// its first table (nil for none) and its result.
func transformOne(tf Transform, line *Line) ([]any, Result) {
	rows := NewRows(tf.Tables())
	res := rows.Transform(tf, line, 0)
	if tr := rows.Table(0); len(tr.Rows) > 0 {
		return tr.Rows[0], res
	}
	return nil, res
}

// TestStorePickOneLinesDuplicates: of the rows one line makes in a table
// filled by plain COPY, a second with the same key is left out and counted
// as a duplicate, so that the COPY does not fail and send the batch through
// the staging tables; rows of other lines with that key are kept (the
// COPY's fallback deals with them); in a table with Update, one row per key
// is kept, the newest by version.
func TestStorePickOneLinesDuplicates(t *testing.T) {
	tags := Table{Name: "tags", Key: []string{"tweet_id", "tag"},
		Columns: []Column{{Name: "tweet_id", Type: "bigint"}, {Name: "tag", Type: "text"}}}
	users := Table{Name: "users", Key: []string{"id"}, Update: true, Version: "followers",
		Columns: []Column{{Name: "id", Type: "bigint"}, {Name: "followers", Type: "bigint"}}}
	s, err := NewPostgresStore(nil, []Table{tags, users}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rows := NewRows([]Table{tags, users})
	for line, made := range [][][]any{
		{{int64(1), "go"}, {int64(1), "sql"}, {int64(1), "go"}, {int64(1), "go"}},
		{{int64(1), "go"}, {int64(2), "go"}},
		{{int64(3), "sql"}},
	} {
		rows.begin(line)
		for _, vals := range made {
			copy(rows.Add(0), vals)
		}
		copy(rows.Add(1), []any{int64(7), int64(10 - line)})
	}
	sel, dropped := s.pick(rows, nil)
	if want := []int{0, 1, 4, 5, 6}; !slices.Equal(sel[0], want) {
		t.Errorf("tags: picked rows %v, want %v", sel[0], want)
	}
	if want := []int{0}; !slices.Equal(sel[1], want) {
		t.Errorf("users: picked rows %v, want %v (the greatest version)", sel[1], want)
	}
	if want := []TableCounts{{Duplicates: 2}, {Unchanged: 2}}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %+v, want %+v", dropped, want)
	}
	if sel, dropped := s.pick(rows, map[int]bool{0: true}); !slices.Equal(sel[0], []int{4, 5, 6}) || dropped[0].Duplicates != 0 {
		t.Errorf("with line 0 skipped: picked %v, dropped %+v; want [4 5 6] and no duplicates", sel[0], dropped[0])
	}
}
