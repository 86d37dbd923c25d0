package privatepg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoBinaries is returned (wrapped) by [Start] when initdb and postgres
// cannot be found. The message lists where they were looked for and how to
// install them.
var ErrNoBinaries = errors.New("postgres binaries not found")

// installHint tells a developer how to get the binaries.
const installHint = "install them with `apt-get install postgresql-15` or set " + EnvBinDir + " to the directory holding initdb and postgres"

// findBinDir returns the directory holding initdb and postgres: explicit if
// set, else $JETLINE_PG_BIN, else DefaultBinDir, else `pg_config --bindir`.
// An explicit or environment choice is never second-guessed: if it lacks the
// binaries, that is the error.
func findBinDir(ctx context.Context, explicit string) (string, error) {
	if explicit != "" {
		return checkBinDir(explicit, "Options.BinDir")
	}
	if env := os.Getenv(EnvBinDir); env != "" {
		return checkBinDir(env, "$"+EnvBinDir)
	}
	if _, err := checkBinDir(DefaultBinDir, "default"); err == nil {
		return DefaultBinDir, nil
	}

	looked := []string{DefaultBinDir + " (default)"}
	pgConfig, err := exec.LookPath("pg_config")
	if err != nil {
		looked = append(looked, "pg_config --bindir (pg_config is not on PATH)")
		return "", fmt.Errorf("%w: looked in %s; %s", ErrNoBinaries, strings.Join(looked, ", "), installHint)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
	if err != nil {
		looked = append(looked, fmt.Sprintf("pg_config --bindir (failed: %v)", err))
		return "", fmt.Errorf("%w: looked in %s; %s", ErrNoBinaries, strings.Join(looked, ", "), installHint)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := checkBinDir(dir, "pg_config --bindir"); err != nil {
		looked = append(looked, dir+" (from pg_config --bindir)")
		return "", fmt.Errorf("%w: looked in %s; %s", ErrNoBinaries, strings.Join(looked, ", "), installHint)
	}
	return dir, nil
}

// checkBinDir reports whether dir holds executable initdb and postgres.
// source says where dir came from, for the error message.
func checkBinDir(dir, source string) (string, error) {
	for _, name := range []string{"initdb", "postgres"} {
		path := filepath.Join(dir, name)
		info, err := os.Stat(path)
		if err != nil || info.IsDir() || info.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("%w: no executable %s in %s (from %s); %s", ErrNoBinaries, name, dir, source, installHint)
		}
	}
	return dir, nil
}
