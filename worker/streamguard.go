package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// streamsTable records, per stream, when the stream whose sequences key the
// tables was created.
const streamsTable = "jetline_streams"

// ErrStreamRecreated is returned (wrapped) by [GuardStreamSequences] when
// the stream was created anew while tables still hold rows keyed by the old
// stream's sequences.
var ErrStreamRecreated = errors.New("stream recreated")

// GuardStreamSequences keeps a recreated stream from losing lines. Tables
// keyed by stream sequence (the raw landing table, pipelines without a key)
// take a row whose sequence is already stored for a redelivery and skip
// it. A stream deleted and created again (or a NATS store lost) numbers
// its lines from 1 again, so every new line would be skipped as a
// duplicate of an old one. The first worker records the stream's creation
// time in the table jetline_streams; a worker that finds another time
// refuses to start while any sequence-keyed table holds rows, and says how
// to go on. When those tables are empty the new time is recorded.
func GuardStreamSequences(ctx context.Context, pool *pgxpool.Pool, stream string, created time.Time, tables []Table, logger *slog.Logger) error {
	created = created.UTC().Truncate(time.Microsecond) // what timestamptz keeps
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+streamsTable+` (
		stream text PRIMARY KEY,
		created timestamptz NOT NULL,
		recorded timestamptz NOT NULL DEFAULT now())`); err != nil && !isUniqueViolation(err) {
		// Two workers racing on CREATE TABLE IF NOT EXISTS: the loser
		// fails on pg_type's unique index, the table exists all the same.
		return fmt.Errorf("create %s: %w", streamsTable, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+streamsTable+` (stream, created) VALUES ($1, $2) ON CONFLICT (stream) DO NOTHING`,
		stream, created); err != nil {
		return fmt.Errorf("record stream %s in %s: %w", stream, streamsTable, err)
	}
	var known time.Time
	if err := pool.QueryRow(ctx, `SELECT created FROM `+streamsTable+` WHERE stream = $1`, stream).Scan(&known); err != nil {
		return fmt.Errorf("read stream %s from %s: %w", stream, streamsTable, err)
	}
	if known.Equal(created) {
		return nil
	}

	var holding []string
	for _, t := range tables {
		if len(t.Key) != 1 || t.Key[0] != seqKey {
			continue
		}
		ident := t.Ident().Sanitize()
		var hasRows bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+ident+`)`).Scan(&hasRows); err != nil {
			return fmt.Errorf("look for rows in %s: %w", ident, err)
		}
		if hasRows {
			holding = append(holding, ident)
		}
	}
	if len(holding) > 0 {
		return fmt.Errorf("%w: stream %s was created at %s, but %s hold rows keyed by the sequences of the %s created at %s; "+
			"its new lines would be taken for duplicates of those rows and skipped. Rename or empty those tables "+
			"(e.g. ALTER TABLE events RENAME TO events_before_%s), then start the worker again",
			ErrStreamRecreated, stream, created.Format(time.RFC3339), strings.Join(holding, ", "), stream,
			known.Format(time.RFC3339), created.Format("20060102"))
	}
	if _, err := pool.Exec(ctx, `UPDATE `+streamsTable+` SET created = $2, recorded = now() WHERE stream = $1`, stream, created); err != nil {
		return fmt.Errorf("record stream %s in %s: %w", stream, streamsTable, err)
	}
	logger.InfoContext(ctx, "stream was recreated; the tables keyed by its sequence are empty, so starting over",
		"stream", stream, "created", created, "was", known)
	return nil
}

// seqKey is the key column of tables keyed by stream sequence.
const seqKey = "seq"
