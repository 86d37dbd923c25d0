package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Ncat returns the path of ncat, which tests use as the senders do. Without
// it the test is skipped, or fails in CI (CI=true), where .ci/run installs
// it.
func Ncat(t testing.TB) string {
	t.Helper()
	ncat, err := exec.LookPath("ncat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ncat is required when CI=true (.ci/run installs it): %v", err)
		}
		skip(t, fmt.Sprintf("ncat not installed: %v", err))
	}
	return ncat
}
