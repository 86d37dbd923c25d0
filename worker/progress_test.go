package worker

import (
	"log/slog"
	"maps"
	"testing"
)

// The progress line splits what grew since the last one by reason, and
// leaves out reasons that did not grow.
func TestGrowthBy(t *testing.T) {
	t.Parallel()
	now := map[string]uint64{"invalid_json": 7, "pg_22P05": 4, "too_long": 1}
	last := map[string]uint64{"invalid_json": 2, "pg_22P05": 4}
	a := growthBy("rejected_by", now, last)
	if a.Key != "rejected_by" || a.Value.Kind() != slog.KindGroup {
		t.Fatalf("attr %v, want group rejected_by", a)
	}
	got := map[string]uint64{}
	for _, m := range a.Value.Group() {
		got[m.Key] = m.Value.Uint64()
	}
	if want := map[string]uint64{"invalid_json": 5, "too_long": 1}; !maps.Equal(got, want) {
		t.Fatalf("rejected_by %v, want %v", got, want)
	}
}
