package testenv

import (
	"strings"
	"testing"
)

func TestSkipCountsAndReports(t *testing.T) {
	for range 2 {
		t.Run("skipped", func(t *testing.T) { skip(t, "frobnicator unavailable: not installed\nsecond line") })
	}
	skips.mu.Lock()
	n := skips.n["frobnicator unavailable: not installed\nsecond line"]
	delete(skips.n, "frobnicator unavailable: not installed\nsecond line")
	skips.mu.Unlock()
	if n != 2 {
		t.Fatalf("skip counted %d tests, want 2", n)
	}

	var out strings.Builder
	writeSkips(&out, map[string]int{"b: down": 1, "a: gone\nmore": 3})
	want := "testenv: github.com/jetline/jetline/shared/devkit/testenv: SKIPPED 3 tests: a: gone (set CI=true to fail instead)\n" +
		"testenv: github.com/jetline/jetline/shared/devkit/testenv: SKIPPED 1 tests: b: down (set CI=true to fail instead)\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
}
