package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Prometheus returns the path of the prometheus server, which the metrics
// test runs to evaluate the dashboard's and the README's queries. Without
// it the test is skipped (and counted, see [Main]), or fails in CI
// (CI=true), where .ci/run installs Debian's package.
func Prometheus(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus is required when CI=true (.ci/run installs it): %v", err)
		}
		skip(t, fmt.Sprintf("prometheus not installed (apt-get install prometheus): %v", err))
	}
	return path
}
