package worker

import (
	"testing"

	"github.com/jetline/jetline/shared/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
