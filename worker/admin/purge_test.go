package admin

import (
	"context"
	"fmt"
	"testing"
)

func TestPurge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		filter Filter
		left   []uint64
	}{
		{"all", Filter{}, nil},
		{"reason", Filter{Reason: "invalid_json"}, []uint64{2, 5}},
		{"source", Filter{Source: "tweets"}, []uint64{1, 4, 5}},
		{"reason and source", Filter{Reason: "pg_22003", Source: "tweets"}, []uint64{1, 3, 4, 5}},
		{"seq range", Filter{FromSeq: 2, ToSeq: 3}, []uint64{1, 4, 5}},
		{"seq range and source", Filter{FromSeq: 3, Source: "default"}, []uint64{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, 0)
			b.deadLetter(t,
				entry("default", "invalid_json", 1, "1"),
				entry("tweets", "pg_22003", 2, "2"),
				entry("tweets", "invalid_json", 3, "3"),
				entry("default", "invalid_json", 4, "4"),
				entry("default", "pg_22003", 5, "5"),
			)
			n, err := Purge(context.Background(), b.js, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			left := b.dlqSeqs(t)
			if fmt.Sprint(left) != fmt.Sprint(tt.left) {
				t.Errorf("left %v, want %v", left, tt.left)
			}
			if n != uint64(5-len(tt.left)) {
				t.Errorf("Purge says it removed %d, want %d", n, 5-len(tt.left))
			}
		})
	}
}
