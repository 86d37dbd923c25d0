package deploy

import (
	"testing"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// TestMain stops the Postgres server that the Prometheus test shares with
// no one else, and removes its files, when the tests end.
func TestMain(m *testing.M) { testenv.Main(m) }
