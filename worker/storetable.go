package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CreateTables creates each table if it does not exist, and the tombstone
// table of each that keeps tombstones, then checks that the tables (new or
// not) fit: every column exists with the type the [Table] says, columns
// the table has beyond those can be left NULL or have a default, and a
// valid unique index covers exactly the key. An existing table may be
// declaratively partitioned, its key (and so the pipeline's) including the
// partition key's columns. It does not alter an existing table; a mismatch
// is an error naming the column. On a server built without lz4 the columns
// get the default compression instead.
//
// Workers starting together all call it: CREATE TABLE IF NOT EXISTS is not
// safe against itself (the loser fails on pg_type's unique index), so the
// DDL runs under a transaction-scoped advisory lock.
func (s *PostgresStore) CreateTables(ctx context.Context) error {
	for _, w := range s.tables {
		if w.table.Delete {
			continue
		}
		if err := s.createTable(ctx, w.table); err != nil {
			return err
		}
		if w.table.Tombstones {
			if err := s.createTable(ctx, w.table.TombstoneTable()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *PostgresStore) createTable(ctx context.Context, table Table) error {
	// A schema-qualified table ("live.tweets") gets its schema too, so a
	// spec can keep its tables apart from another's of the same name
	// without a step by hand first.
	if table.Schema != "" {
		if err := s.execDDL(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{table.Schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %s for table %s: %w", pgx.Identifier{table.Schema}.Sanitize(), table.Ident().Sanitize(), err)
		}
	}
	err := s.execDDL(ctx, table.CreateSQL())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "0A000" && strings.Contains(pgErr.Message, "lz4") {
		s.logger.WarnContext(ctx, "postgres was built without lz4; creating the table with default compression, which is slower", "table", table.Ident().Sanitize(), "err", err)
		plain := table
		plain.Columns = slices.Clone(plain.Columns)
		for i := range plain.Columns {
			plain.Columns[i].Compression = ""
		}
		err = s.execDDL(ctx, plain.CreateSQL())
	}
	if err != nil {
		return fmt.Errorf("create table %s: %w", table.Ident().Sanitize(), err)
	}
	return s.checkTable(ctx, table)
}

// ErrTableMismatch is returned (wrapped) by [PostgresStore.CreateTables]
// when an existing table does not fit the [Table] rows are written as.
var ErrTableMismatch = errors.New("table does not match")

// checkTable compares the table in the database with table.
func (s *PostgresStore) checkTable(ctx context.Context, table Table) error {
	name := table.Ident().Sanitize()
	columns := table.ColumnNames()
	mismatch := func(format string, args ...any) error {
		return fmt.Errorf("%w: table %s exists but %s; alter or drop the table, or change the pipeline to match", ErrTableMismatch, name, fmt.Sprintf(format, args...))
	}
	types := make([]string, len(table.Columns))
	for i, c := range table.Columns {
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
	for i, c := range table.Columns {
		got, ok := have[c.Name]
		switch {
		case !ok && c.Name == LineIDColumn && slices.Equal(table.Key, []string{LineIDColumn}):
			old := pgx.Identifier{table.Name + "_by_seq"}.Sanitize()
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
		if have[n].mustFill && !slices.Contains(columns, n) {
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
	key := slices.Sorted(slices.Values(table.Key))
	keyList := strings.Join(table.Key, ", ")
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
