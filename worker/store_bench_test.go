package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// insertStrategy is one way to insert a batch skipping stored keys, or, for
// copyDirect, failing on them. It returns the rows inserted.
type insertStrategy func(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error)

var eventColumns = []string{"line_id", "seq", "source", "received_at", "payload"}

// The alternatives BenchmarkStore compares. PostgresStore uses copyDirect,
// falling back to stagedReuse.
var insertStrategies = []struct {
	name string
	fn   insertStrategy
	// skipsDuplicates is false when the strategy fails on stored keys.
	skipsDuplicates bool
}{
	{"copy_direct", benchCopyDirect, false},
	{"staged_on_commit_drop", benchStagedDrop, true},
	{"staged_reused_delete_rows", benchStagedReuse, true},
	{"staged_reused_truncate", benchStagedTruncate, true},
	{"unnest_arrays", benchUnnest, true},
	{"insert_values", benchValues, true},
}

func inBenchTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) (int64, error)) (int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	n, err := fn(tx)
	if err != nil {
		return 0, err
	}
	return n, tx.Commit(ctx)
}

func benchCopyDirect(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error) {
	return inBenchTx(ctx, pool, func(tx pgx.Tx) (int64, error) {
		return tx.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, pgx.CopyFromRows(rows))
	})
}

func benchStagedDrop(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error) {
	return inBenchTx(ctx, pool, func(tx pgx.Tx) (int64, error) {
		if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE stage_drop (LIKE events INCLUDING COMPRESSION INCLUDING STORAGE) ON COMMIT DROP`); err != nil {
			return 0, err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage_drop"}, eventColumns, pgx.CopyFromRows(rows)); err != nil {
			return 0, err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO events SELECT * FROM stage_drop ON CONFLICT (line_id) DO NOTHING`)
		return tag.RowsAffected(), err
	})
}

func benchStagedReuse(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error) {
	return inBenchTx(ctx, pool, func(tx pgx.Tx) (int64, error) {
		if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE IF NOT EXISTS stage_reuse (LIKE events INCLUDING COMPRESSION INCLUDING STORAGE) ON COMMIT DELETE ROWS`); err != nil {
			return 0, err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage_reuse"}, eventColumns, pgx.CopyFromRows(rows)); err != nil {
			return 0, err
		}
		// As PostgresStore does: moving the rows empties the stage for
		// the next attempt in the same transaction.
		tag, err := tx.Exec(ctx, `WITH staged AS (DELETE FROM stage_reuse RETURNING *) INSERT INTO events SELECT * FROM staged ON CONFLICT (line_id) DO NOTHING`)
		return tag.RowsAffected(), err
	})
}

func benchStagedTruncate(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error) {
	return inBenchTx(ctx, pool, func(tx pgx.Tx) (int64, error) {
		if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE IF NOT EXISTS stage_truncate (LIKE events INCLUDING COMPRESSION INCLUDING STORAGE)`); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `TRUNCATE stage_truncate`); err != nil {
			return 0, err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage_truncate"}, eventColumns, pgx.CopyFromRows(rows)); err != nil {
			return 0, err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO events SELECT * FROM stage_truncate ON CONFLICT (line_id) DO NOTHING`)
		return tag.RowsAffected(), err
	})
}

func benchUnnest(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error) {
	ids := make([]string, len(rows))
	seqs := make([]int64, len(rows))
	sources := make([]string, len(rows))
	times := make([]time.Time, len(rows))
	payloads := make([][]byte, len(rows))
	for i, r := range rows {
		ids[i], seqs[i], sources[i], times[i], payloads[i] = r[0].(string), r[1].(int64), r[2].(string), r[3].(time.Time), r[4].([]byte)
	}
	tag, err := pool.Exec(ctx, `INSERT INTO events (line_id, seq, source, received_at, payload)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::jsonb[])
		ON CONFLICT (line_id) DO NOTHING`, ids, seqs, sources, times, payloads)
	return tag.RowsAffected(), err
}

func benchValues(ctx context.Context, pool *pgxpool.Pool, rows [][]any) (int64, error) {
	var sql strings.Builder
	sql.WriteString(`INSERT INTO events (line_id, seq, source, received_at, payload) VALUES `)
	args := make([]any, 0, len(rows)*5)
	for i, r := range rows {
		if i > 0 {
			sql.WriteByte(',')
		}
		fmt.Fprintf(&sql, "($%d,$%d,$%d,$%d,$%d)", i*5+1, i*5+2, i*5+3, i*5+4, i*5+5)
		args = append(args, r...)
	}
	sql.WriteString(` ON CONFLICT (line_id) DO NOTHING`)
	tag, err := pool.Exec(ctx, sql.String(), args...)
	return tag.RowsAffected(), err
}

// BenchmarkStore compares ways to insert 500-row batches of ~6 KB
// tweet-shaped JSON into the raw landing table of the private Postgres:
// "fresh" batches have new keys, "redelivered" batches are all stored
// already. The store's own Write (copy_direct with fallback) is "store".
// Run with -benchtime=60x for comparable table sizes; the results are in
// the doc comment of [PostgresStore].
func BenchmarkStore(b *testing.B) {
	const batchSize = 500
	type strategy struct {
		name            string
		fn              insertStrategy
		skipsDuplicates bool
	}
	all := []strategy{{"store", nil, true}}
	for _, s := range insertStrategies {
		all = append(all, strategy(s))
	}
	for _, s := range all {
		for _, scenario := range []string{"fresh", "redelivered"} {
			if scenario == "redelivered" && !s.skipsDuplicates {
				continue
			}
			b.Run(s.name+"/"+scenario, func(b *testing.B) {
				sb := setupStore(b)
				fn := s.fn
				if fn == nil {
					fn = func(ctx context.Context, _ *pgxpool.Pool, rows [][]any) (int64, error) {
						res, err := sb.store.Write(ctx, rowsOf(rows))
						return int64(res.Inserted), err
					}
				}
				// Batches are built before timing: only the insert counts.
				const distinct = 20
				batches := make([][][]any, distinct)
				var payloadBytes int
				for i := range batches {
					batches[i] = rawRows(1+i*batchSize, batchSize)
				}
				for _, r := range batches[0] {
					payloadBytes += len(r[4].([]byte))
				}
				ctx := context.Background()
				if scenario == "redelivered" {
					if _, err := fn(ctx, sb.pool, batches[0]); err != nil {
						b.Fatal(err)
					}
				}
				next := distinct * batchSize
				i := 0
				b.ResetTimer()
				for b.Loop() {
					rows := batches[0]
					if scenario == "fresh" {
						rows = batches[i%distinct]
						if i >= distinct {
							// Renumber to keep keys new.
							for j := range rows {
								rows[j][0], rows[j][1] = rawLineID(next+1+j), int64(next+1+j)
							}
							next += batchSize
						}
					}
					n, err := fn(ctx, sb.pool, rows)
					if err != nil {
						b.Fatal(err)
					}
					want := int64(batchSize)
					if scenario == "redelivered" {
						want = 0
					}
					if n != want {
						b.Fatalf("inserted %d rows, want %d", n, want)
					}
					i++
				}
				secs := b.Elapsed().Seconds()
				b.ReportMetric(float64(b.N*batchSize)/secs, "rows/s")
				b.ReportMetric(float64(b.N*payloadBytes)/secs/(1<<20), "MiB/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
