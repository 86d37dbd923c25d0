package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond every 10ms until it returns nil, and fails the test
// with what and cond's last error if that has not happened within timeout.
// The error is the condition's account of where things stand ("3 of 5
// rows"), so that a timeout says how far it got.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
