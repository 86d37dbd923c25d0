//go:build unix && !linux

package privatepg

// dirProcs finds nothing: without /proc there is no cheap way to list the
// processes working in a directory. Backends left by a killed postmaster
// exit by themselves once they notice it is gone.
func dirProcs(string) []int { return nil }
