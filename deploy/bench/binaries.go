package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// binary is one program under test.
type binary struct {
	// Path is the absolute path of the executable.
	Path string `json:"path"`
	// Built is true when the bench built it from source for this run.
	Built bool `json:"built"`
	// Stale is true when some source it is built from is newer.
	Stale bool `json:"stale,omitempty"`
}

// binaries are the programs under test.
type binaries struct {
	Gateway binary `json:"gateway"`
	Worker  binary `json:"worker"`
}

// Packages of the programs, and the source directories they are built
// from (relative to the module root), for the staleness check.
const (
	gatewayPkg = "github.com/jetline/jetline/gateway/cmd/gateway"
	workerPkg  = "github.com/jetline/jetline/worker/cmd/worker"
)

var (
	gatewaySources = []string{"gateway", "shared", "go.mod", "go.sum"}
	workerSources  = []string{"worker", "shared", "go.mod", "go.sum"}
)

// findBinaries returns the programs named by cfg, building into buildDir
// those that do not exist. A program older than its sources is used, with
// a warning: the numbers would not be those of the code in the tree.
func findBinaries(ctx context.Context, cfg Config, buildDir string, pr *progress) (binaries, error) {
	gw, err := findBinary(ctx, "gateway", cfg.GatewayBin, gatewayPkg, gatewaySources, buildDir, pr)
	if err != nil {
		return binaries{}, err
	}
	wk, err := findBinary(ctx, "worker", cfg.WorkerBin, workerPkg, workerSources, buildDir, pr)
	if err != nil {
		return binaries{}, err
	}
	return binaries{Gateway: gw, Worker: wk}, nil
}

func findBinary(ctx context.Context, name, path, pkg string, sources []string, buildDir string, pr *progress) (binary, error) {
	info, err := os.Stat(path)
	switch {
	case err == nil && !info.IsDir():
		abs, err := filepath.Abs(path)
		if err != nil {
			return binary{}, fmt.Errorf("resolve %s: %w", path, err)
		}
		b := binary{Path: abs}
		if newest, src := newestSource(sources); newest.After(info.ModTime()) {
			b.Stale = true
			pr.warn("%s is older than %s: the numbers are those of the old build (run `make build`, or delete it and the bench builds from source)", path, src)
		}
		return b, nil
	case err == nil:
		return binary{}, fmt.Errorf("-%s-bin %s is a directory, not a program", name, path)
	case !errors.Is(err, fs.ErrNotExist):
		return binary{}, fmt.Errorf("check -%s-bin %s: %w", name, path, err)
	}
	out := filepath.Join(buildDir, name)
	pr.step("%s not found; building %s", path, pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return binary{}, fmt.Errorf("build %s (run the bench from inside the jetline module, with go on PATH): %w", pkg, err)
	}
	return binary{Path: out, Built: true}, nil
}

// newestSource returns the modification time and path of the newest Go
// source or module file under the given paths, relative to the working
// directory; paths that do not exist (the bench run from elsewhere) are
// skipped.
func newestSource(paths []string) (time.Time, string) {
	var newest time.Time
	var which string
	for _, root := range paths {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if !strings.HasSuffix(p, ".go") && p != "go.mod" && p != "go.sum" || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			if info, err := d.Info(); err == nil && info.ModTime().After(newest) {
				newest, which = info.ModTime(), p
			}
			return nil
		})
	}
	return newest, which
}
