package pipeline

import (
	"testing"

	"github.com/jetline/jetline/shared/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
