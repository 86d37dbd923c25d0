package testenv

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// connect opens a connection to url, closed when the test ends.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := Postgres(t), Postgres(t)
	if a == b {
		t.Fatalf("two calls returned the same DSN %q", a)
	}
	connA, connB := connect(t, a), connect(t, b)

	var tables int
	if err := connA.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("new database has %d tables, want 0", tables)
	}
	if _, err := connA.Exec(ctx, "CREATE TABLE only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := connB.QueryRow(ctx, "SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatal("table created in one database is visible in the other")
	}
}

func TestPostgresParallel(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]bool{}
	for _, name := range []string{"a", "b", "c", "d"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dsn := Postgres(t)
			mu.Lock()
			dup := seen[dsn]
			seen[dsn] = true
			mu.Unlock()
			if dup {
				t.Fatalf("DSN %q handed out twice", dsn)
			}
			var one int
			if err := connect(t, dsn).QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("SELECT 1 = %d, %v", one, err)
			}
		})
	}
}

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		test string
		seq  int64
		want string
	}{
		{"TestX", 1, "t_testx_1"},
		{"TestX/sub case#01", 12, "t_testx_sub_case_01_12"},
		{"Test" + strings.Repeat("Long", 30), 123456, "t_test" + strings.Repeat("long", 12) + "lo_123456"},
	}
	for _, tt := range tests {
		got := databaseName(tt.test, tt.seq)
		if got != tt.want {
			t.Errorf("databaseName(%q, %d) = %q, want %q", tt.test, tt.seq, got, tt.want)
		}
		if len(got) > 63 {
			t.Errorf("databaseName(%q, %d) is %d bytes, over the 63-byte limit", tt.test, tt.seq, len(got))
		}
	}
}

func TestLogLevel(t *testing.T) {
	tests := []struct {
		env  string
		want slog.Level
	}{
		{"", slog.LevelWarn},
		{"debug", slog.LevelDebug},
		{"INFO", slog.LevelInfo},
		{"error", slog.LevelError},
		{"nonsense", slog.LevelWarn},
	}
	for _, tt := range tests {
		t.Setenv("TEST_LOG_LEVEL", tt.env)
		if got := logLevel(); got != tt.want {
			t.Errorf("TEST_LOG_LEVEL=%q: level %v, want %v", tt.env, got, tt.want)
		}
	}
}

func TestLoggerAfterTestEnds(t *testing.T) {
	t.Parallel()
	var w *testWriter
	t.Run("inner", func(t *testing.T) {
		w = newTestWriter(t)
		Logger(t).Error("logged while the test runs")
	})
	// Once a test and its parents have returned, writing to its output
	// panics; the writer must be dropping lines by then.
	w.mu.Lock()
	done := w.done
	w.mu.Unlock()
	if !done {
		t.Fatal("writer still forwards after its test ended")
	}
	if n, err := w.Write([]byte("late\n")); n != 5 || err != nil {
		t.Fatalf("Write after the test ended = %d, %v; want 5, nil", n, err)
	}
}
