package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// bareCopyTable is the fresh table the bare COPY fills. It is stored like
// the raw landing's events (line_id text primary key, payload jsonb
// COMPRESSION lz4), so that the two differ only in what comes before
// Postgres, not in what Postgres does with a row.
const bareCopyTable = "bench_bare_copy"

// bareCopy COPYs every line of the corpus as (line_id, payload jsonb) into
// a fresh [bareCopyTable] over the run's connection, with pgx's binary
// CopyFrom as the workers use, and times it from the start of the COPY to
// its commit, with the CPU time of Postgres's processes. It checkpoints
// first, so that the COPY, like the end-to-end run before it, starts with
// no WAL pending a checkpoint.
func (r *e2eRun) bareCopy(ctx context.Context) (*rate, error) {
	b := r.b
	c := b.corpus
	if _, err := r.db.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (line_id text PRIMARY KEY, payload jsonb COMPRESSION lz4 NOT NULL)`,
		pgx.Identifier{bareCopyTable}.Sanitize())); err != nil {
		return nil, fmt.Errorf("create %s: %w", bareCopyTable, err)
	}
	if _, err := r.db.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, fmt.Errorf("checkpoint before the bare copy: %w", err)
	}
	settle()
	b.pr.step("bare COPY: %s lines (%s) as jsonb into %s over one connection", thousands(int64(c.Len())), mib(c.PayloadBytes()), bareCopyTable)
	pgBefore := postgresCPU(b.h.pgDir)
	row := make([]any, 2)
	start := time.Now()
	n, err := r.db.CopyFrom(ctx, pgx.Identifier{bareCopyTable}, []string{"line_id", "payload"},
		pgx.CopyFromSlice(c.Len(), func(i int) ([]any, error) {
			row[0], row[1] = "bench-copy."+strconv.Itoa(i+1), c.Line(i)
			return row, nil
		}))
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("bare copy into %s: %w", bareCopyTable, err)
	}
	if n != int64(c.Len()) {
		return nil, fmt.Errorf("bare copy stored %d rows of %d lines", n, c.Len())
	}
	res := newRate(c.Len(), c.PayloadBytes(), elapsed)
	res.CPUSeconds = (postgresCPU(b.h.pgDir) - pgBefore).Seconds()
	b.pr.step("bare COPY: %s lines/s, %.1f MiB/s in %.1fs", thousands(int64(res.LinesPerSec)), res.MiBPerSec, res.Seconds)
	return &res, nil
}
