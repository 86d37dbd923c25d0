package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Build builds the packages pkgs (import paths of commands) into dir with
// go build and the extra flags (such as -race). Its error carries go's
// own output.
func Build(dir string, flags []string, pkgs ...string) error {
	args := slices.Concat([]string{"build", "-o", dir + string(filepath.Separator)}, flags, pkgs)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
