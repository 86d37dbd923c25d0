package main

import (
	"strings"
	"testing"

	"github.com/jetline/jetline/gateway"
)

func TestCheckReceipt(t *testing.T) {
	t.Parallel()
	ok := gateway.Receipt{Status: gateway.StatusOK, Lines: 10, Bytes: 600}
	tests := []struct {
		name string
		edit func(*gateway.Receipt)
		want string
	}{
		{"ok", func(*gateway.Receipt) {}, ""},
		{"status", func(r *gateway.Receipt) {
			r.Status, r.Error, r.ResumeLine = gateway.StatusShutdown, "gateway shutting down", 4
		}, "status"},
		{"lines", func(r *gateway.Receipt) { r.Lines = 9 }, "9 lines stored"},
		{"bytes", func(r *gateway.Receipt) { r.Bytes = 599 }, "599 bytes"},
		{"too long", func(r *gateway.Receipt) { r.TooLong = 1 }, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ok
			tt.edit(&r)
			err := checkReceipt(r, 10, 600)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("checkReceipt = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("checkReceipt = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
