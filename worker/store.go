package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store writes the rows of one batch. [PostgresStore] is the real one; tests
// of the consumer may use a fake.
//
// Write is called from several goroutines at once and must be safe for
// concurrent use. It either commits once and returns a nil error, or commits
// nothing and returns an error; the worker acknowledges a batch only after a
// nil error. rows holds, for each of the route's tables, rows with one value
// per column of the table; Write must not keep rows after it returns.
type Store interface {
	Write(ctx context.Context, rows *Rows) (WriteResult, error)
}

// WriteResult is what a committed [Store.Write] did.
type WriteResult struct {
	// Inserted counts rows that are new, in all tables.
	Inserted int
	// Duplicates counts rows whose key was already stored (a redelivered
	// batch) or that repeat a key within the batch, in all tables; they
	// were skipped.
	Duplicates int
	// Tables counts, table by table (in the order of the rows' tables),
	// what became of their rows.
	Tables []TableCounts
	// Rejected lists the rows the database refused. Each takes its whole
	// line with it: no row of a line with a rejected row was stored. The
	// other lines' rows were.
	Rejected []RowError
	// Splits counts the extra insert attempts made to isolate rejected
	// rows; 0 when there were none.
	Splits int
}

// TableCounts is what became of one table's rows in a [WriteResult].
type TableCounts struct {
	// Inserted rows are new.
	Inserted int
	// Duplicates repeated a stored key, or one of the same batch, and
	// were skipped (tables without Update).
	Duplicates int
	// Updated rows replaced the stored row of their key; Unchanged ones
	// did not, as its version was not older (tables with Update). Rows
	// of a key that a later or newer row of the same batch replaced count
	// as Unchanged too.
	Updated, Unchanged int
	// Suppressed rows had a tombstoned key and were dropped.
	Suppressed int
	// Deleted counts rows removed by a delete entry's keys; Tombstoned
	// its keys, new or not.
	Deleted, Tombstoned int
}

func (c *TableCounts) add(o TableCounts) {
	c.Inserted += o.Inserted
	c.Duplicates += o.Duplicates
	c.Updated += o.Updated
	c.Unchanged += o.Unchanged
	c.Suppressed += o.Suppressed
	c.Deleted += o.Deleted
	c.Tombstoned += o.Tombstoned
}

// RowError is one row the database refused.
type RowError struct {
	// Table is the index of the row's table, Index the row's index in its
	// [TableRows], and Line the line it came from (TableRows.Lines).
	Table, Index, Line int
	// Err is the database's error, usually a *pgconn.PgError.
	Err error
}

// PostgresStore writes the rows of a route's tables, each described by a
// [Table], so that a redelivered batch inserts nothing twice: rows whose key
// is already stored are skipped, or, in a table with Update, replace the
// stored row when they are newer.
//
// A batch is written in one transaction, all its tables together, so a
// line's rows are stored all or none. Each table goes in with a plain
// binary COPY, the cheapest way in. A table that updates or keeps
// tombstones tries it under a savepoint, and goes through a temporary
// staging table (below) when a key is stored already (see
// [tableWriter.copyFirst]); every table goes through it once a plain
// COPY failed. Only when the COPY fails does it fall back:
//
//   - on a unique violation (the batch, or part of it, was stored before and
//     redelivered), the batch is COPYed into a temporary staging table and
//     moved with INSERT … SELECT … ON CONFLICT (key) DO NOTHING;
//   - on a data error (SQLSTATE class 22, 23 or 54: a value Postgres will not
//     take), the batch is split in halves, each tried under a savepoint,
//     recursively, until the offending rows are alone; they are reported in
//     [WriteResult.Rejected] and every other row is committed. Each bad row
//     costs O(log n) extra round trips. A rejected row takes its line's
//     other rows with it: when the line has some, the transaction is rolled
//     back and tried again without the line.
//
// Keys deleted by a delete entry (a [Table] with Delete) are removed from
// their table and remembered in its tombstone table before the batch's
// rows go in, and rows of a tombstoned key are dropped, so a delete wins
// whether it comes before or after its row.
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
	tables []*tableWriter
	logger *slog.Logger
	// order lists the tables in the order a transaction writes them:
	// deletes first, so that rows of keys deleted in the same batch are
	// dropped.
	order []int
}

// tableWriter writes one table's rows: its statements, made once.
type tableWriter struct {
	table   Table
	ident   pgx.Identifier
	columns []string
	// direct is set when rows may be COPYed straight into the table.
	direct bool
	// target is the table a delete entry deletes from; tomb is its
	// tombstone table, or the table's own for a table with Tombstones.
	target *tableWriter
	tomb   pgx.Identifier
	// stage is the per-connection temporary staging table's name.
	stage       pgx.Identifier
	createStage string
	// move empties the stage into the table and returns how many rows it
	// held, how many were not tombstoned, and how many were inserted and
	// updated; for a delete entry, how many keys it held, how many rows it
	// deleted and how many tombstones it added.
	move string
	// probe, in a table with Tombstones, returns the ordinals (from 1) of
	// the keys, given as one array per key column, that are tombstoned.
	probe string
	// keyCols are the indices of the key's columns, whose values
	// [keyString] makes a map key of (see [PostgresStore.pick]) and
	// probe looks up; version is that of the version column, or -1.
	keyCols []int
	version int
}

// NewPostgresStore returns a store writing to tables, a [Transform]'s
// Tables, through pool. It does not touch the database; call
// [PostgresStore.CreateTables] before writing.
func NewPostgresStore(pool *pgxpool.Pool, tables []Table, logger *slog.Logger) (*PostgresStore, error) {
	if len(tables) == 0 {
		return nil, errors.New("a store needs at least one table")
	}
	s := &PostgresStore{pool: pool, logger: logger.With("component", "store", "table", tables[0].Ident().Sanitize())}
	byName := map[string]*tableWriter{}
	for _, t := range tables {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		w := newTableWriter(t)
		name := w.ident.Sanitize()
		if !t.Delete {
			if byName[name] != nil {
				return nil, fmt.Errorf("table %s is given twice", name)
			}
			byName[name] = w
		}
		s.tables = append(s.tables, w)
	}
	for i, w := range s.tables {
		if !w.table.Delete {
			continue
		}
		target := byName[w.ident.Sanitize()]
		switch {
		case target == nil:
			return nil, fmt.Errorf("delete entry for %s: no table of the store is %s", w.ident.Sanitize(), w.ident.Sanitize())
		case !target.table.Tombstones:
			return nil, fmt.Errorf("delete entry for %s: the table keeps no tombstones, so a deleted row would come back with the next copy of its line", w.ident.Sanitize())
		case !slices.Equal(w.table.Key, target.table.Key):
			return nil, fmt.Errorf("delete entry for %s: its key (%s) is not the table's (%s)", w.ident.Sanitize(), strings.Join(w.table.Key, ", "), strings.Join(target.table.Key, ", "))
		}
		w.target = target
		w.prepareDelete()
		s.order = append(s.order, i)
	}
	for i, w := range s.tables {
		if !w.table.Delete {
			w.prepareInsert()
			s.order = append(s.order, i)
		}
	}
	return s, nil
}

func newTableWriter(t Table) *tableWriter {
	w := &tableWriter{table: t, ident: t.Ident(), columns: t.ColumnNames(), version: -1}
	w.direct = !t.Update && !t.Tombstones && !t.Delete
	if t.Tombstones {
		w.tomb = t.TombstoneTable().Ident()
	}
	for _, k := range t.Key {
		w.keyCols = append(w.keyCols, slices.Index(w.columns, k))
	}
	if t.Version != "" {
		w.version = slices.Index(w.columns, t.Version)
	}
	return w
}

// stageFor names and creates the staging table of rows like source's, one
// per target per connection, created on first use and emptied at every
// commit. A hash keeps the name short and distinct for every target.
func (w *tableWriter) stageFor(kind string, like pgx.Identifier) {
	w.stage = pgx.Identifier{fmt.Sprintf("jetline_%s_%08x", kind, crc32.ChecksumIEEE([]byte(like.Sanitize())))}
	w.createStage = fmt.Sprintf("CREATE TEMPORARY TABLE IF NOT EXISTS %s (LIKE %s INCLUDING DEFAULTS INCLUDING COMPRESSION INCLUDING STORAGE) ON COMMIT DELETE ROWS",
		w.stage.Sanitize(), like.Sanitize())
}

// prepareInsert makes the statement that moves staged rows into the
// table: skipping tombstoned keys, then skipping or updating stored ones.
// Moving the rows out of the stage (DELETE … RETURNING) leaves it empty
// for the next attempt within the same transaction.
func (w *tableWriter) prepareInsert() {
	w.stageFor("stage", w.ident)
	cols := quoteList(w.columns)
	kept := "staged"
	if w.table.Tombstones {
		var match []string
		for _, k := range w.table.Key {
			q := pgx.Identifier{k}.Sanitize()
			match = append(match, "t."+q+" = s."+q)
		}
		kept = fmt.Sprintf("(SELECT s.* FROM staged s WHERE NOT EXISTS (SELECT 1 FROM %s t WHERE %s))", w.tomb.Sanitize(), strings.Join(match, " AND "))
		arrays := make([]string, len(w.keyCols))
		for i, c := range w.keyCols {
			arrays[i] = fmt.Sprintf("$%d::%s[]", i+1, w.table.Columns[c].Type)
		}
		w.probe = fmt.Sprintf("SELECT s.jetline_ord FROM unnest(%s) WITH ORDINALITY AS s(%s, jetline_ord) WHERE EXISTS (SELECT 1 FROM %s t WHERE %s)",
			strings.Join(arrays, ", "), quoteList(w.table.Key), w.tomb.Sanitize(), strings.Join(match, " AND "))
	}
	conflict := "DO NOTHING"
	if w.table.Update {
		var rest []string
		for _, c := range w.columns {
			if !slices.Contains(w.table.Key, c) {
				rest = append(rest, pgx.Identifier{c}.Sanitize())
			}
		}
		if len(rest) > 0 {
			excluded := make([]string, len(rest))
			for i, c := range rest {
				excluded[i] = "EXCLUDED." + c
			}
			conflict = fmt.Sprintf("DO UPDATE SET (%s) = ROW(%s)", strings.Join(rest, ", "), strings.Join(excluded, ", "))
			if v := w.table.Version; v != "" {
				q := pgx.Identifier{v}.Sanitize()
				conflict += fmt.Sprintf(" WHERE cur.%s < EXCLUDED.%s", q, q)
			}
		}
	}
	// xmax is 0 in a row version the INSERT made and set in one an UPDATE
	// made, which tells inserted rows from updated ones.
	fresh := "true"
	if w.table.Update {
		fresh = "xmax = 0"
	}
	w.move = fmt.Sprintf(`WITH staged AS (DELETE FROM %[1]s RETURNING %[2]s),
	kept AS (SELECT %[2]s FROM %[3]s k),
	ins AS (INSERT INTO %[4]s AS cur (%[2]s) SELECT %[2]s FROM kept ON CONFLICT (%[5]s) %[6]s RETURNING %[7]s AS fresh)
SELECT (SELECT count(*) FROM staged), (SELECT count(*) FROM kept), count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM ins`,
		w.stage.Sanitize(), cols, kept, w.ident.Sanitize(), quoteList(w.table.Key), conflict, fresh)
}

// prepareDelete makes the statement that takes staged keys, remembers
// them in the target's tombstone table and deletes their rows.
func (w *tableWriter) prepareDelete() {
	w.tomb = w.target.tomb
	w.stageFor("delete", w.tomb)
	cols := quoteList(w.columns)
	var match []string
	for _, k := range w.table.Key {
		q := pgx.Identifier{k}.Sanitize()
		match = append(match, "cur."+q+" = k."+q)
	}
	w.move = fmt.Sprintf(`WITH staged AS (DELETE FROM %[1]s RETURNING %[2]s),
	tomb AS (INSERT INTO %[3]s (%[2]s) SELECT DISTINCT %[2]s FROM staged ON CONFLICT (%[2]s) DO NOTHING),
	gone AS (DELETE FROM %[4]s cur USING staged k WHERE %[5]s RETURNING 1)
SELECT (SELECT count(*) FROM staged), (SELECT count(*) FROM gone), 0, 0`,
		w.stage.Sanitize(), cols, w.tomb.Sanitize(), w.target.ident.Sanitize(), strings.Join(match, " AND "))
}

// Tables returns the tables the store writes to.
func (s *PostgresStore) Tables() []Table {
	out := make([]Table, len(s.tables))
	for i, w := range s.tables {
		out[i] = w.table
	}
	return out
}

// pick lists, for each table, the indices of the rows to write: all of
// them but the rows of the lines in skip, and but these, which it counts
// in dropped:
//
//   - in a table with Update, of the rows of one key only the greatest by
//     version (else the last) is written; the others count as Unchanged;
//   - in a table filled by plain COPY, of the rows of one line with the
//     same key (an exploded array that holds one element twice) only the
//     first is written, and the others count as Duplicates, as ON CONFLICT
//     DO NOTHING would count them. A second row would fail the COPY, and
//     the whole batch would go again through the staging tables: with
//     tweets-full.yaml's hashtags, nearly every batch did, and took the
//     tombstone lock twice.
//
// An Update table's rows are listed in key order, and written in that
// order. Batches that update the same keys (a user in many lines, spread
// over concurrent workers) then lock those rows in the same order and
// wait for one another; in stream order, two of them could each hold a
// row the other wants next, and Postgres would break the deadlock after
// deadlock_timeout (1 s) by failing one, which the worker retries.
func (s *PostgresStore) pick(rows *Rows, skip map[int]bool) (sel [][]int, dropped []TableCounts) {
	sel = make([][]int, len(s.tables))
	dropped = make([]TableCounts, len(s.tables))
	for t, w := range s.tables {
		tr := rows.Table(t)
		if !w.table.Update {
			var lineKeys []string // of the rows picked of the line of row i
			for i := range tr.Rows {
				if skip[tr.Lines[i]] {
					continue
				}
				if w.direct && i > 0 && tr.Lines[i-1] == tr.Lines[i] {
					if len(lineKeys) == 0 {
						lineKeys = append(lineKeys, keyString(tr.Rows[i-1], w.keyCols))
					}
					k := keyString(tr.Rows[i], w.keyCols)
					if slices.Contains(lineKeys, k) {
						dropped[t].Duplicates++
						continue
					}
					lineKeys = append(lineKeys, k)
				} else {
					lineKeys = lineKeys[:0]
				}
				sel[t] = append(sel[t], i)
			}
			continue
		}
		best := map[string]int{}
		var order []string
		for i, row := range tr.Rows {
			if skip[tr.Lines[i]] {
				continue
			}
			k := keyString(row, w.keyCols)
			prev, seen := best[k]
			switch {
			case !seen:
				order = append(order, k)
				best[k] = i
			case w.version < 0 || compareValues(row[w.version], tr.Rows[prev][w.version]) >= 0:
				best[k] = i
			}
			if seen {
				dropped[t].Unchanged++
			}
		}
		slices.Sort(order)
		for _, k := range order {
			sel[t] = append(sel[t], best[k])
		}
	}
	return sel, dropped
}

// Write stores rows in one transaction; see [PostgresStore] for how. A
// non-nil error means nothing was committed; [Classify] tells whether it is
// worth retrying.
func (s *PostgresStore) Write(ctx context.Context, rows *Rows) (WriteResult, error) {
	if rows.Len() == 0 {
		return s.result(), nil
	}
	sel, dropped := s.pick(rows, nil)
	res, err := s.attempt(ctx, rows, sel, true)
	if isUniqueViolation(err) {
		res, err = s.attempt(ctx, rows, sel, false)
	}
	if err == nil {
		res.addDropped(dropped)
		return res, nil
	}
	if Classify(err) != RowData {
		return WriteResult{}, err
	}
	// Isolate the rows the database refuses. A refused row takes its
	// line with it; if the line had rows elsewhere, some may be stored
	// already in this transaction: roll back and go again without it.
	skip := map[int]bool{}
	var rejected []RowError
	splits := 0
	for {
		var found []RowError
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			res, found = s.result(), nil
			if err := s.lockTombstoned(ctx, tx, sel); err != nil {
				return err
			}
			for _, t := range s.order {
				if len(sel[t]) == 0 {
					continue
				}
				w := s.tables[t]
				if _, err := tx.Exec(ctx, w.createStage); err != nil {
					return fmt.Errorf("create staging table: %w", err)
				}
				if err := s.bisect(ctx, tx, rows, t, sel[t], &res, &found); err != nil {
					return err
				}
			}
			if spill := s.spills(rows, sel, found); spill {
				return errRetryWithout
			}
			return nil
		})
		splits += res.Splits
		rejected = append(rejected, found...)
		if errors.Is(err, errRetryWithout) {
			for _, re := range found {
				skip[re.Line] = true
			}
			sel, dropped = s.pick(rows, skip)
			continue
		}
		if err != nil {
			return WriteResult{}, err
		}
		res.Rejected, res.Splits = rejected, splits
		res.addDropped(dropped)
		return res, nil
	}
}

// errRetryWithout rolls back an isolating transaction whose refused rows
// belong to lines with other rows.
var errRetryWithout = errors.New("a refused row's line has other rows")

// spills reports whether a line of the found rows has a row among sel
// other than the found ones: one stored, or yet to be, that must go too.
func (s *PostgresStore) spills(rows *Rows, sel [][]int, found []RowError) bool {
	if len(found) == 0 {
		return false
	}
	lines := map[int]int{}
	for _, re := range found {
		lines[re.Line]++
	}
	for t := range sel {
		tr := rows.Table(t)
		for _, i := range sel[t] {
			if _, ok := lines[tr.Lines[i]]; ok {
				lines[tr.Lines[i]]--
			}
		}
	}
	for _, n := range lines {
		if n < 0 {
			return true
		}
	}
	return false
}

// result returns an empty result for s's tables.
func (s *PostgresStore) result() WriteResult {
	return WriteResult{Tables: make([]TableCounts, len(s.tables))}
}

// addDropped counts the rows [PostgresStore.pick] left out.
func (r *WriteResult) addDropped(dropped []TableCounts) {
	for t, c := range dropped {
		r.count(t, c)
	}
}

// attempt writes the picked rows of every table in one transaction: by
// plain COPY where direct allows it, else through the staging table.
func (s *PostgresStore) attempt(ctx context.Context, rows *Rows, sel [][]int, direct bool) (WriteResult, error) {
	var res WriteResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		res = s.result()
		if err := s.lockTombstoned(ctx, tx, sel); err != nil {
			return err
		}
		for _, t := range s.order {
			if len(sel[t]) == 0 {
				continue
			}
			w := s.tables[t]
			var c TableCounts
			var err error
			switch {
			case direct && w.direct:
				c, err = w.copyDirect(ctx, tx, rows.Table(t), sel[t])
			case direct && !w.table.Delete:
				c, err = w.copyFirst(ctx, tx, rows.Table(t), sel[t])
			default:
				c, err = w.viaStage(ctx, tx, rows.Table(t), sel[t])
			}
			if err != nil {
				return err
			}
			res.count(t, c)
		}
		return nil
	})
	return res, err
}

// tombLockClass is the first key of the advisory locks that order writes
// of a table with tombstones ([PostgresStore.lockTombstoned]); the second
// is hashtext of the table's name.
const tombLockClass = 0x6a6c7462 // "jltb"

// lockTombstoned takes, for each table with tombstones that the batch
// writes (rows sel), a transaction-scoped advisory lock on the table:
// exclusive when the batch deletes from it, shared when it only stores
// rows into it, in the order of s.tables, so two transactions never wait
// for each other in a circle. Without it, under READ COMMITTED, a batch
// storing a row and another deleting its key at the same time (two
// workers, or one worker's concurrent loops) each miss what the other has
// not committed: the delete finds no row, the insert finds no tombstone,
// and the deleted row is stored. With it, the later of the two runs after
// the earlier has committed and sees its row or its tombstone. Batches
// without deletes share the lock and do not wait for each other.
//
// The same statement turns hash and merge joins off for the rest of the
// transaction (set_config … true is SET LOCAL), so that the delete and the
// tombstone check find each staged key through the table's primary key.
// A temporary staging table has no statistics: the planner takes it for
// ~1,850 rows, whatever it holds, and would rather read the whole target
// (or tombstone) table into a hash than probe its index that often. That
// made every delete cost a scan of the target, growing with it: with
// 100,000 rows in live.tweets, 35 ms to delete 11 keys, against 0.4 ms by
// the index (EXPLAIN ANALYZE, PostgreSQL 15). The batch's other statements
// join nothing, so nothing else changes.
func (s *PostgresStore) lockTombstoned(ctx context.Context, tx pgx.Tx, sel [][]int) error {
	for _, target := range s.tables {
		if !target.table.Tombstones {
			continue
		}
		writes, deletes := false, false
		for t, w := range s.tables {
			if len(sel[t]) == 0 {
				continue
			}
			switch {
			case w == target:
				writes = true
			case w.table.Delete && w.target == target:
				deletes = true
			}
		}
		lock := "pg_advisory_xact_lock_shared"
		switch {
		case deletes:
			lock = "pg_advisory_xact_lock"
		case !writes:
			continue
		}
		sql := "SELECT " + lock + "($1::int4, hashtext($2)), set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
		if _, err := tx.Exec(ctx, sql, tombLockClass, target.ident.Sanitize()); err != nil {
			return fmt.Errorf("lock %s against concurrent deletes: %w", target.ident.Sanitize(), err)
		}
	}
	return nil
}

func (r *WriteResult) count(t int, c TableCounts) {
	r.Tables[t].add(c)
	r.Inserted += c.Inserted
	r.Duplicates += c.Duplicates
}

// bisect stores the rows sel of table t under a savepoint, splitting them
// in halves on a data error until the offending rows are alone.
func (s *PostgresStore) bisect(ctx context.Context, tx pgx.Tx, rows *Rows, t int, sel []int, res *WriteResult, found *[]RowError) error {
	res.Splits++
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create savepoint: %w", err)
	}
	tr := rows.Table(t)
	c, err := s.tables[t].stageAndMove(ctx, sp, tr, sel)
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return fmt.Errorf("release savepoint: %w", err)
		}
		res.count(t, c)
		return nil
	}
	if rbErr := sp.Rollback(ctx); rbErr != nil {
		return fmt.Errorf("roll back to savepoint after %w: %w", err, rbErr)
	}
	if Classify(err) != RowData {
		return err
	}
	if len(sel) == 1 {
		*found = append(*found, RowError{Table: t, Index: sel[0], Line: tr.Lines[sel[0]], Err: err})
		return nil
	}
	mid := len(sel) / 2
	if err := s.bisect(ctx, tx, rows, t, sel[:mid], res, found); err != nil {
		return err
	}
	return s.bisect(ctx, tx, rows, t, sel[mid:], res, found)
}

// inTx runs fn in a transaction and commits it.
func (s *PostgresStore) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	// Rollback after Commit is a no-op; it covers every early return.
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// picked feeds the rows sel of tr to COPY, in sel's order.
func picked(tr *TableRows, sel []int) pgx.CopyFromSource {
	i := -1
	return pgx.CopyFromFunc(func() ([]any, error) {
		if i++; i < len(sel) {
			return tr.Rows[sel[i]], nil
		}
		return nil, nil
	})
}

// copyDirect COPYs rows straight into the table. It fails with a unique
// violation if any key is already stored.
func (w *tableWriter) copyDirect(ctx context.Context, tx pgx.Tx, tr *TableRows, sel []int) (TableCounts, error) {
	n, err := tx.CopyFrom(ctx, w.ident, w.columns, picked(tr, sel))
	if err != nil {
		return TableCounts{}, fmt.Errorf("copy into %s: %w", w.ident.Sanitize(), err)
	}
	return TableCounts{Inserted: int(n)}, nil
}

// copyFirst stores the rows sel of a table with Update or Tombstones as
// [tableWriter.copyDirect] does when none of their keys is stored yet, as
// in a batch of new tweets, and through the staging table when one is: a
// plain COPY under a savepoint, rolled back on a unique violation. Rows of
// a tombstoned key are left out first, found with one probe of the
// tombstone table for all their keys; the tombstone lock keeps a delete
// from committing in between.
//
// With deploy/pipelines/tweets-full.yaml, whose tweets have both, this
// took live.tweets from 34 to 13 µs of statement time a line
// (pg_stat_statements), and the whole from 9,400 to 11,200 lines/s end to
// end (`go run ./deploy/bench -mode typed -corpus feed -lines 100000 -spec
// deploy/pipelines/tweets-full.yaml`). Its users, who come again in most
// batches, try the COPY in vain and go on through the staging table.
func (w *tableWriter) copyFirst(ctx context.Context, tx pgx.Tx, tr *TableRows, sel []int) (TableCounts, error) {
	var c TableCounts
	if w.table.Tombstones {
		kept, err := w.untombstoned(ctx, tx, tr, sel)
		if err != nil {
			return c, err
		}
		c.Suppressed, sel = len(sel)-len(kept), kept
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return c, fmt.Errorf("create savepoint: %w", err)
	}
	n, err := sp.CopyFrom(ctx, w.ident, w.columns, picked(tr, sel))
	if err == nil {
		if err := sp.Commit(ctx); err != nil {
			return c, fmt.Errorf("release savepoint: %w", err)
		}
		c.Inserted = int(n)
		return c, nil
	}
	if rbErr := sp.Rollback(ctx); rbErr != nil {
		return c, fmt.Errorf("roll back to savepoint after %w: %w", err, rbErr)
	}
	if !isUniqueViolation(err) {
		return c, fmt.Errorf("copy into %s: %w", w.ident.Sanitize(), err)
	}
	moved, err := w.viaStage(ctx, tx, tr, sel)
	moved.Suppressed += c.Suppressed
	return moved, err
}

// untombstoned returns the rows of sel whose key is not tombstoned.
func (w *tableWriter) untombstoned(ctx context.Context, tx pgx.Tx, tr *TableRows, sel []int) ([]int, error) {
	keys := make([]any, len(w.keyCols))
	for j, col := range w.keyCols {
		vals := make([]any, len(sel))
		for i, r := range sel {
			vals[i] = tr.Rows[r][col]
		}
		keys[j] = vals
	}
	rows, err := tx.Query(ctx, w.probe, keys...)
	if err != nil {
		return nil, fmt.Errorf("look for tombstoned keys in %s: %w", w.tomb.Sanitize(), err)
	}
	gone := map[int64]bool{}
	var ord int64
	if _, err := pgx.ForEachRow(rows, []any{&ord}, func() error {
		gone[ord-1] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("look for tombstoned keys in %s: %w", w.tomb.Sanitize(), err)
	}
	if len(gone) == 0 {
		return sel, nil
	}
	kept := make([]int, 0, len(sel)-len(gone))
	for i, r := range sel {
		if !gone[int64(i)] {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

// viaStage creates the connection's staging table unless it has it, and
// stores the rows sel through it.
func (w *tableWriter) viaStage(ctx context.Context, tx pgx.Tx, tr *TableRows, sel []int) (TableCounts, error) {
	if _, err := tx.Exec(ctx, w.createStage); err != nil {
		return TableCounts{}, fmt.Errorf("create staging table: %w", err)
	}
	return w.stageAndMove(ctx, tx, tr, sel)
}

// stageAndMove COPYs rows into the staging table, then moves them.
func (w *tableWriter) stageAndMove(ctx context.Context, tx pgx.Tx, tr *TableRows, sel []int) (TableCounts, error) {
	if _, err := tx.CopyFrom(ctx, w.stage, w.columns, picked(tr, sel)); err != nil {
		return TableCounts{}, fmt.Errorf("copy into staging table: %w", err)
	}
	var staged, kept, inserted, updated int
	if err := tx.QueryRow(ctx, w.move).Scan(&staged, &kept, &inserted, &updated); err != nil {
		if w.table.Delete {
			return TableCounts{}, fmt.Errorf("delete staged keys from %s: %w", w.ident.Sanitize(), err)
		}
		return TableCounts{}, fmt.Errorf("insert staged rows into %s: %w", w.ident.Sanitize(), err)
	}
	if w.table.Delete {
		// staged keys, kept = rows deleted, inserted = tombstones added.
		return TableCounts{Deleted: kept, Tombstoned: staged}, nil
	}
	c := TableCounts{Inserted: inserted, Suppressed: staged - kept}
	if w.table.Update {
		c.Updated, c.Unchanged = updated, kept-inserted-updated
	} else {
		c.Duplicates = kept - inserted
	}
	return c, nil
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

// keyString encodes the values of a row's key columns cols as a map key.
func keyString(row []any, cols []int) string {
	var b []byte
	for _, c := range cols {
		switch v := row[c].(type) {
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case int32:
			b = strconv.AppendInt(b, int64(v), 10)
		case time.Time:
			b = strconv.AppendInt(b, v.UnixNano(), 10)
		case pgtype.Numeric:
			if val, err := v.Value(); err == nil {
				b = fmt.Append(b, val)
			}
		default:
			b = fmt.Append(b, v)
		}
		b = append(b, 0)
	}
	return string(b)
}

// compareValues orders two version values of one column: -1, 0 or +1.
func compareValues(a, b any) int {
	switch x := a.(type) {
	case int64:
		if y, ok := b.(int64); ok {
			return cmp.Compare(x, y)
		}
	case int32:
		if y, ok := b.(int32); ok {
			return cmp.Compare(x, y)
		}
	case float64:
		if y, ok := b.(float64); ok {
			return cmp.Compare(x, y)
		}
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y)
		}
	case pgtype.Numeric:
		if y, ok := b.(pgtype.Numeric); ok {
			fx, errx := x.Float64Value()
			fy, erry := y.Float64Value()
			if errx == nil && erry == nil {
				return cmp.Compare(fx.Float64, fy.Float64)
			}
		}
	}
	return 0
}
