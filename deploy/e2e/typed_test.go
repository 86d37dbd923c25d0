package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
)

// writeSpec writes a pipeline spec into the test's temporary directory and
// returns its path, for WORKER_PIPELINES.
func writeSpec(t *testing.T, spec string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkKeyedRows checks that table holds exactly one row for each of want,
// by the text of its column idColumn, and no other row.
func (b *bundle) checkKeyedRows(t *testing.T, table, idColumn string, want map[string]bool) {
	t.Helper()
	tbl, col := pgx.Identifier{table}.Sanitize(), pgx.Identifier{idColumn}.Sanitize()
	var total, distinct int
	if err := b.db.QueryRow(t.Context(), "SELECT count(*), count(DISTINCT "+col+") FROM "+tbl).Scan(&total, &distinct); err != nil {
		t.Fatalf("count rows of %s: %v", table, err)
	}
	if total != len(want) || distinct != len(want) {
		t.Errorf("%s has %d rows with %d distinct ids; want %d of each", table, total, distinct, len(want))
	}
	rows, err := b.db.Query(t.Context(), "SELECT "+col+"::text FROM "+tbl)
	if err != nil {
		t.Fatalf("query %s: %v", table, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	seen := map[string]bool{}
	var unexpected, missing []string
	for _, id := range got {
		seen[id] = true
		if !want[id] {
			unexpected = append(unexpected, id)
		}
	}
	for id := range want {
		if !seen[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d lines missing from %s, e.g. %s", len(missing), len(want), table, sample(missing))
	}
	if len(unexpected) > 0 {
		t.Errorf("%d rows of %s that should not exist, e.g. %s", len(unexpected), table, sample(unexpected))
	}
}
