package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("copy: %w", &pgconn.PgError{Code: code}) }
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, 0},
		{"serialization failure", pg("40001"), Transient},
		{"deadlock", pg("40P01"), Transient},
		{"admin shutdown", pg("57P01"), Transient},
		{"cannot connect now", pg("57P03"), Transient},
		{"too many connections", pg("53300"), Transient},
		{"disk full", pg("53100"), Transient},
		{"connection failure", pg("08006"), Transient},
		{"statement timeout", pg("57014"), Transient},
		{"NUL in jsonb", pg("22P05"), RowData},
		{"invalid json", pg("22P02"), RowData},
		{"not null", pg("23502"), RowData},
		{"unique", pg("23505"), RowData},
		{"stack depth", pg("54001"), RowData},
		{"undefined table", pg("42P01"), Permanent},
		{"permission", pg("42501"), Permanent},
		{"connection refused", fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), Transient},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), Transient},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), Transient},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), Transient},
		{"canceled", context.Canceled, Transient},
		{"bug", errors.New("expected 4 values, got 3 values"), Permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Classify(tt.err); got != tt.want {
				t.Fatalf("Classify(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}
