//go:build race

package e2e

// raceEnabled reports whether the test binary was built with -race; the
// programs under test are then built with it too.
const raceEnabled = true
