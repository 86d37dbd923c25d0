package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// binary is one program under test.
type binary struct {
	// Path is the absolute path of the executable.
	Path string `json:"path"`
	// Built is true when the bench built it from source for this run.
	Built bool `json:"built"`
}

// binaries are the programs under test.
type binaries struct {
	Gateway binary `json:"gateway"`
	Worker  binary `json:"worker"`
}

// Packages of the programs.
const (
	gatewayPkg = "github.com/jetline/jetline/gateway/cmd/gateway"
	workerPkg  = "github.com/jetline/jetline/worker/cmd/worker"
)

// findBinaries returns the programs named by cfg, building into buildDir
// those that do not exist. Whether a program given is up to date is the
// caller's business: `make bench` builds them first, and go build knows
// what is stale.
func findBinaries(ctx context.Context, cfg Config, buildDir string, pr *progress) (binaries, error) {
	gw, err := findBinary(ctx, "gateway", cfg.GatewayBin, gatewayPkg, buildDir, pr)
	if err != nil {
		return binaries{}, err
	}
	wk, err := findBinary(ctx, "worker", cfg.WorkerBin, workerPkg, buildDir, pr)
	if err != nil {
		return binaries{}, err
	}
	return binaries{Gateway: gw, Worker: wk}, nil
}

func findBinary(ctx context.Context, name, path, pkg string, buildDir string, pr *progress) (binary, error) {
	info, err := os.Stat(path)
	switch {
	case err == nil && !info.IsDir():
		abs, err := filepath.Abs(path)
		if err != nil {
			return binary{}, fmt.Errorf("resolve %s: %w", path, err)
		}
		return binary{Path: abs}, nil
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
