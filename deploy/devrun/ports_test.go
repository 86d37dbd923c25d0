package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCheckPortFree is not parallel: a child forked by a parallel test holds
// a copy of every descriptor until it execs, which can keep a just-closed
// listener alive.
func TestCheckPortFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	busy := ln.Addr().String()

	err = checkPortFree(busy, "the embedded NATS server", "set NATS_URL")
	if !errors.Is(err, errPortInUse) {
		t.Fatalf("busy port: err = %v, want errPortInUse", err)
	}
	for _, want := range []string{busy, "the embedded NATS server", "set NATS_URL", "ss -ltnp"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	ln.Close()
	if err := checkPortFree(busy, "x", "y"); err != nil {
		t.Errorf("free port: %v", err)
	}
}

func TestLeftoverPostmaster(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string // "" leaves the file out
		want    int
	}{
		{name: "no pid file", want: 0},
		{name: "live pid", content: strconv.Itoa(os.Getpid()) + "\n/data\n123\n", want: os.Getpid()},
		{name: "dead pid", content: "999999999\n/data\n", want: 0},
		{name: "garbage", content: "not a pid\n", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := leftoverPostmaster(dir); got != tt.want {
				t.Errorf("leftoverPostmaster = %d, want %d", got, tt.want)
			}
		})
	}
}
