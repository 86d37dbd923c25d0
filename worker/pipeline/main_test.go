package pipeline

import (
	"testing"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
