package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store writes the rows of one batch. [PostgresStore] is the real one; tests
// of the consumer may use a fake.
//
// Write is called from several goroutines at once and must be safe for
// concurrent use. It either commits once and returns a nil error, or commits
// nothing and returns an error; the worker acknowledges a batch only after a
// nil error. rows[i] has one value per column of the table, and Write must
// not keep rows after it returns.
type Store interface {
	Write(ctx context.Context, rows [][]any) (WriteResult, error)
}

// WriteResult is what a committed [Store.Write] did.
type WriteResult struct {
	// Inserted counts rows that are new.
	Inserted int
	// Duplicates counts rows whose key was already stored (a redelivered
	// batch) or that repeat a key within the batch; they were skipped.
	Duplicates int
	// Rejected lists the rows the database refused, in row order. The
	// other rows were stored.
	Rejected []RowError
	// Splits counts the extra insert attempts made to isolate rejected
	// rows; 0 when there were none.
	Splits int
}

// RowError is one row the database refused.
type RowError struct {
	// Index is the row's index in the rows passed to Write.
	Index int
	// Err is the database's error, usually a *pgconn.PgError.
	Err error
}

// PostgresStore writes rows into one PostgreSQL table, described by a
// [Table], so that a redelivered batch inserts nothing twice: rows whose key
// is already stored are skipped.
//
// A batch is written in one transaction, first with a plain binary COPY
// into the table, the cheapest way in. Only when that fails does it fall
// back:
//
//   - on a unique violation (the batch, or part of it, was stored before and
//     redelivered), the batch is COPYed into a temporary staging table and
//     moved with INSERT … SELECT … ON CONFLICT (key) DO NOTHING;
//   - on a data error (SQLSTATE class 22, 23 or 54: a value Postgres will not
//     take), the batch is split in halves, each tried under a savepoint,
//     recursively, until the offending rows are alone; they are reported in
//     [WriteResult.Rejected] and every other row is committed. Each bad row
//     costs O(log n) extra round trips.
//
// Why this order: BenchmarkStore measured the alternatives on 500-row
// batches of ~6.2 KB tweet-shaped JSON against a private PostgreSQL 15
// (fsync on, payload jsonb with lz4) on a shared 2-core machine, in rows/s
// and MiB/s of JSON (±15 % run to run):
//
//	                                          fresh batch        redelivered batch
//	plain COPY into the table                 11,000   66 MiB/s   fails (unique violation)
//	COPY to temp table ON COMMIT DROP, move    9,200   54 MiB/s   13,200   78 MiB/s
//	COPY to reused temp table, move (chosen)   9,000   53 MiB/s   12,500   74 MiB/s
//	COPY to reused temp table + TRUNCATE       6,700   40 MiB/s   14,200   84 MiB/s
//	INSERT … SELECT FROM unnest($1::bigint[]…) 8,700   52 MiB/s   10,100   59 MiB/s
//	INSERT … VALUES (…),(…) 2,000 parameters   7,400   43 MiB/s   13,900   82 MiB/s
//	this store (COPY, fallback on conflict)   10,300   61 MiB/s    4,700   28 MiB/s
//
// Fresh batches are the steady state and plain COPY wins; redelivery only
// follows a crash or an AckWait expiry. Of the fallbacks, the reused staging
// table avoids creating and dropping a relation per transaction (catalog
// churn) and, unlike unnest or VALUES, needs no per-type arrays or
// parameter limits, so it works for any [Table]. What bounds all of them is
// PostgreSQL parsing jsonb (~60 µs per row: the same rows as text go in at
// 23,000 rows/s) and compressing it (pglz instead of lz4 halves the rate).
// The table above was keyed by a bigint sequence; keyed by a text line id
// such as the gateway's (~20 bytes), this store measured the same within
// the spread (-benchtime=60x, four runs each, bigint → text: fresh 12,700
// → 12,400 rows/s, redelivered 6,400 → 7,000 rows/s).
//
// PostgresStore is safe for concurrent use; each Write holds one pooled
// connection for its transaction.
type PostgresStore struct {
	pool   *pgxpool.Pool
	table  Table
	logger *slog.Logger

	ident   pgx.Identifier
	columns []string

	// stage is the per-connection temporary staging table's name.
	stage       pgx.Identifier
	createStage string
	moveStaged  string
}

// NewPostgresStore returns a store writing to table through pool. It does
// not touch the database; call [PostgresStore.CreateTable] before writing.
func NewPostgresStore(pool *pgxpool.Pool, table Table, logger *slog.Logger) (*PostgresStore, error) {
	if err := table.Validate(); err != nil {
		return nil, err
	}
	s := &PostgresStore{
		pool:    pool,
		table:   table,
		logger:  logger.With("component", "store", "table", table.Ident().Sanitize()),
		ident:   table.Ident(),
		columns: table.ColumnNames(),
	}
	// One staging table per target table per connection, created on first
	// use and emptied at every commit. A hash keeps the name short and
	// distinct for every target.
	s.stage = pgx.Identifier{fmt.Sprintf("jetline_stage_%08x", crc32.ChecksumIEEE([]byte(s.ident.Sanitize())))}
	s.createStage = fmt.Sprintf("CREATE TEMPORARY TABLE IF NOT EXISTS %s (LIKE %s INCLUDING COMPRESSION INCLUDING STORAGE) ON COMMIT DELETE ROWS",
		s.stage.Sanitize(), s.ident.Sanitize())
	cols := quoteList(s.columns)
	// Moving the rows out of the stage (DELETE … RETURNING) leaves it empty
	// for the next attempt within the same transaction.
	s.moveStaged = fmt.Sprintf("WITH staged AS (DELETE FROM %[1]s RETURNING %[2]s) INSERT INTO %[3]s (%[2]s) SELECT %[2]s FROM staged ON CONFLICT (%[4]s) DO NOTHING",
		s.stage.Sanitize(), cols, s.ident.Sanitize(), quoteList(table.Key))
	return s, nil
}

// Table returns the table the store writes to.
func (s *PostgresStore) Table() Table { return s.table }

// CreateTable creates the table if it does not exist, then checks that the
// table (new or not) fits: every column exists with the type the [Table]
// says, columns the table has beyond those can be left NULL or have a
// default, and a valid unique index covers exactly the key. An existing
// table may be declaratively partitioned, its key (and so the pipeline's)
// including the partition key's columns. It does not alter an existing
// table; a mismatch is an error naming the column. On a server built
// without lz4 the columns get the default compression instead.
//
// Workers starting together all call it: CREATE TABLE IF NOT EXISTS is not
// safe against itself (the loser fails on pg_type's unique index), so the
// DDL runs under a transaction-scoped advisory lock.
func (s *PostgresStore) CreateTable(ctx context.Context) error {
	err := s.execDDL(ctx, s.table.CreateSQL())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "0A000" && strings.Contains(pgErr.Message, "lz4") {
		s.logger.WarnContext(ctx, "postgres was built without lz4; creating the table with default compression, which is slower", "err", err)
		plain := s.table
		plain.Columns = slices.Clone(plain.Columns)
		for i := range plain.Columns {
			plain.Columns[i].Compression = ""
		}
		err = s.execDDL(ctx, plain.CreateSQL())
	}
	if err != nil {
		return fmt.Errorf("create table %s: %w", s.ident.Sanitize(), err)
	}
	return s.checkTable(ctx)
}

// ErrTableMismatch is returned (wrapped) by [PostgresStore.CreateTable]
// when an existing table does not fit the [Table] rows are written as.
var ErrTableMismatch = errors.New("table does not match")

// checkTable compares the table in the database with s.table.
func (s *PostgresStore) checkTable(ctx context.Context) error {
	name := s.ident.Sanitize()
	mismatch := func(format string, args ...any) error {
		return fmt.Errorf("%w: table %s exists but %s; alter or drop the table, or change the pipeline to match", ErrTableMismatch, name, fmt.Sprintf(format, args...))
	}
	types := make([]string, len(s.table.Columns))
	for i, c := range s.table.Columns {
		types[i] = c.Type
	}
	// The server spells types its own way (timestamptz is "timestamp with
	// time zone"); let it canonicalise what the Table says.
	rows, err := s.pool.Query(ctx, `SELECT format_type(t::regtype, NULL) FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n`, types)
	if err != nil {
		return fmt.Errorf("check table %s: %w", name, err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("check table %s: resolve column types: %w", name, err)
	}
	type attr struct {
		name, typ string
		mustFill  bool
	}
	have := map[string]attr{}
	var order []string
	rows, err = s.pool.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, name)
	if err != nil {
		return fmt.Errorf("check table %s: %w", name, err)
	}
	var a attr
	_, err = pgx.ForEachRow(rows, []any{&a.name, &a.typ, &a.mustFill}, func() error {
		have[a.name] = a
		order = append(order, a.name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("check table %s: read columns: %w", name, err)
	}
	for i, c := range s.table.Columns {
		got, ok := have[c.Name]
		switch {
		case !ok && c.Name == LineIDColumn && slices.Equal(s.table.Key, []string{LineIDColumn}):
			old := pgx.Identifier{s.table.Name + "_by_seq"}.Sanitize()
			return fmt.Errorf("%w: table %s exists but has no column %q (%s), which rows are keyed by: it was made by an earlier version that keyed rows "+
				"by stream sequence, which stores a line twice when JetStream holds two copies of it (a publish retried across a NATS restart). "+
				"Rename it (ALTER TABLE %s RENAME TO %s) and start the worker again: it creates %s anew, and the old rows stay in %s",
				ErrTableMismatch, name, c.Name, want[i], name, old, name, old)
		case !ok:
			return mismatch("has no column %q (%s)", c.Name, want[i])
		case got.typ != want[i]:
			return mismatch("its column %q is %s, not %s", c.Name, got.typ, want[i])
		}
	}
	for _, n := range order {
		if have[n].mustFill && !slices.Contains(s.columns, n) {
			return mismatch("its column %q is NOT NULL without a default, and rows do not fill it", n)
		}
	}
	// A partitioned table (relkind 'p') is checked like a plain one: its
	// columns and its unique indexes are its own rows of pg_attribute and
	// pg_index, and COPY, the staging table's LIKE and ON CONFLICT all
	// work on it. What differs is that an index made ON ONLY the parent
	// stays invalid until every partition's index is attached, and until
	// then ON CONFLICT cannot use it (42P10, for every redelivered batch)
	// while the partitions without one take duplicates: only a valid index
	// counts.
	type index struct {
		Name    string
		Columns []string
		Valid   bool
	}
	rows, err = s.pool.Query(ctx, `SELECT i.indexrelid::regclass::text, array_agg(a.attname::text ORDER BY a.attname), i.indisvalid
		FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
		GROUP BY i.indexrelid, i.indisvalid`, name)
	if err != nil {
		return fmt.Errorf("check table %s: %w", name, err)
	}
	indexes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[index])
	if err != nil {
		return fmt.Errorf("check table %s: read unique indexes: %w", name, err)
	}
	key := slices.Sorted(slices.Values(s.table.Key))
	keyList := strings.Join(s.table.Key, ", ")
	invalid := ""
	for _, idx := range indexes {
		switch {
		case slices.Equal(idx.Columns, key) && idx.Valid:
			return nil
		case slices.Equal(idx.Columns, key):
			invalid = idx.Name
		}
	}
	if invalid != "" {
		return mismatch("its unique index %s on (%s) is not valid, so it cannot keep redelivered lines from being stored twice "+
			"(an index created ON ONLY a partitioned table becomes valid once each partition's index is attached to it: ALTER INDEX %s ATTACH PARTITION …)",
			invalid, keyList, invalid)
	}
	var partKey *string
	if err := s.pool.QueryRow(ctx, `SELECT pg_get_partkeydef(to_regclass($1))`, name).Scan(&partKey); err != nil {
		return fmt.Errorf("check table %s: read partition key: %w", name, err)
	}
	if partKey != nil {
		return mismatch("has no primary key or unique index on exactly (%s), which keeps redelivered lines from being stored twice; "+
			"it is partitioned by %s, and a unique index of a partitioned table must include the partition key's columns, so the pipeline's key must too",
			keyList, *partKey)
	}
	return mismatch("has no primary key or unique index on exactly (%s), which keeps redelivered lines from being stored twice", keyList)
}

// ddlLockKey is the advisory lock key that serialises jetline's DDL across
// worker processes.
const ddlLockKey = 0x6a65746c696e65 // "jetline"

func (s *PostgresStore) execDDL(ctx context.Context, sql string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(ddlLockKey)); err != nil {
			return fmt.Errorf("take ddl lock: %w", err)
		}
		_, err := tx.Exec(ctx, sql)
		return err
	})
}

// Write stores rows in one transaction; see [PostgresStore] for how. A
// non-nil error means nothing was committed; [Classify] tells whether it is
// worth retrying.
func (s *PostgresStore) Write(ctx context.Context, rows [][]any) (WriteResult, error) {
	if len(rows) == 0 {
		return WriteResult{}, nil
	}
	n, err := s.inTx(ctx, func(tx pgx.Tx) (int64, error) { return s.copyDirect(ctx, tx, rows) })
	if err == nil {
		return WriteResult{Inserted: int(n)}, nil
	}
	if isUniqueViolation(err) {
		n, err = s.inTx(ctx, func(tx pgx.Tx) (int64, error) { return s.copyStaged(ctx, tx, rows) })
		if err == nil {
			return WriteResult{Inserted: int(n), Duplicates: len(rows) - int(n)}, nil
		}
	}
	if Classify(err) != RowData {
		return WriteResult{}, err
	}
	if len(rows) == 1 {
		// Nothing to split: the row is the culprit.
		return WriteResult{Rejected: []RowError{{Index: 0, Err: err}}}, nil
	}
	var res WriteResult
	_, err = s.inTx(ctx, func(tx pgx.Tx) (int64, error) {
		res = WriteResult{}
		if _, err := tx.Exec(ctx, s.createStage); err != nil {
			return 0, fmt.Errorf("create staging table: %w", err)
		}
		mid := len(rows) / 2
		if err := s.bisect(ctx, tx, rows[:mid], 0, &res); err != nil {
			return 0, err
		}
		return 0, s.bisect(ctx, tx, rows[mid:], mid, &res)
	})
	if err != nil {
		return WriteResult{}, err
	}
	return res, nil
}

// bisect stores rows (which start at index offset of the batch) under a
// savepoint, splitting them in halves on a data error until the offending
// rows are alone.
func (s *PostgresStore) bisect(ctx context.Context, tx pgx.Tx, rows [][]any, offset int, res *WriteResult) error {
	res.Splits++
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create savepoint: %w", err)
	}
	n, err := s.stageAndMove(ctx, sp, rows)
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return fmt.Errorf("release savepoint: %w", err)
		}
		res.Inserted += int(n)
		res.Duplicates += len(rows) - int(n)
		return nil
	}
	if rbErr := sp.Rollback(ctx); rbErr != nil {
		return fmt.Errorf("roll back to savepoint after %w: %w", err, rbErr)
	}
	if Classify(err) != RowData {
		return err
	}
	if len(rows) == 1 {
		res.Rejected = append(res.Rejected, RowError{Index: offset, Err: err})
		return nil
	}
	mid := len(rows) / 2
	if err := s.bisect(ctx, tx, rows[:mid], offset, res); err != nil {
		return err
	}
	return s.bisect(ctx, tx, rows[mid:], offset+mid, res)
}

// inTx runs fn in a transaction and commits it.
func (s *PostgresStore) inTx(ctx context.Context, fn func(pgx.Tx) (int64, error)) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin transaction: %w", err)
	}
	// Rollback after Commit is a no-op; it covers every early return.
	defer tx.Rollback(context.WithoutCancel(ctx))
	n, err := fn(tx)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// copyDirect COPYs rows straight into the table. It fails with a unique
// violation if any key is already stored.
func (s *PostgresStore) copyDirect(ctx context.Context, tx pgx.Tx, rows [][]any) (int64, error) {
	n, err := tx.CopyFrom(ctx, s.ident, s.columns, pgx.CopyFromRows(rows))
	if err != nil {
		return 0, fmt.Errorf("copy into %s: %w", s.ident.Sanitize(), err)
	}
	return n, nil
}

// copyStaged inserts rows skipping stored keys: COPY into the staging
// table, then move.
func (s *PostgresStore) copyStaged(ctx context.Context, tx pgx.Tx, rows [][]any) (int64, error) {
	if _, err := tx.Exec(ctx, s.createStage); err != nil {
		return 0, fmt.Errorf("create staging table: %w", err)
	}
	return s.stageAndMove(ctx, tx, rows)
}

func (s *PostgresStore) stageAndMove(ctx context.Context, tx pgx.Tx, rows [][]any) (int64, error) {
	if _, err := tx.CopyFrom(ctx, s.stage, s.columns, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("copy into staging table: %w", err)
	}
	tag, err := tx.Exec(ctx, s.moveStaged)
	if err != nil {
		return 0, fmt.Errorf("insert staged rows into %s: %w", s.ident.Sanitize(), err)
	}
	return tag.RowsAffected(), nil
}

// pgMessage returns the server's message for a rejected row, with its
// SQLSTATE, or the error text.
func pgMessage(err error) (code, msg string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg = pgErr.Message
		if pgErr.Detail != "" {
			msg += ": " + pgErr.Detail
		}
		return pgErr.Code, msg
	}
	return "", err.Error()
}
