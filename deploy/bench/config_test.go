package main

import (
	"strings"
	"testing"
)

// TestParseFlagsWorkloads checks the defaults each workload brings: its
// corpus's number of lines, and one connection for a dump or lone lines.
func TestParseFlagsWorkloads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args         []string
		lines, conns int
	}{
		{[]string{"-mode", "typed", "-corpus", "archive", "-compress", "xz"}, 100_000, 1},
		{[]string{"-mode", "typed", "-corpus", "small"}, 2_000_000, DefaultConns},
		{[]string{"-latency"}, DefaultLoneLines, 1},
		{[]string{"-latency", "-corpus", "small", "-lines", "7"}, 7, 1},
		{[]string{"-corpus", "archive", "-lines", "50", "-conns", "2"}, 50, 2},
		{nil, corpusKinds[DefaultCorpus].lines, DefaultConns},
	}
	for _, tt := range tests {
		cfg, err := parseFlags(tt.args)
		if err != nil {
			t.Fatalf("parseFlags(%q): %v", tt.args, err)
		}
		if cfg.Lines != tt.lines || cfg.Conns != tt.conns {
			t.Errorf("parseFlags(%q): %d lines over %d connections, want %d over %d", tt.args, cfg.Lines, cfg.Conns, tt.lines, tt.conns)
		}
	}
}

func TestParseFlagsRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown mode", []string{"-mode", "nope"}, "-mode"},
		{"unknown corpus", []string{"-corpus", "nope"}, "-corpus"},
		{"unknown compression", []string{"-compress", "gzip"}, "-compress"},
		{"dump over many connections", []string{"-compress", "xz", "-conns", "4"}, "one connection"},
		{"lone lines typed", []string{"-mode", "typed", "-latency"}, "-mode e2e"},
		{"pipelines by env", []string{"-env", "WORKER_PIPELINES=x.yaml"}, "with -spec"},
		{"no lines", []string{"-lines", "0"}, "-lines"},
		{"more conns than lines", []string{"-lines", "3", "-conns", "4"}, "-conns"},
		{"no workers", []string{"-workers", "0"}, "-workers"},
		{"owned env", []string{"-env", "NATS_URL=nats://elsewhere:4222"}, "sets NATS_URL itself"},
		{"env without value", []string{"-env", "JUSTANAME"}, "NAME=VALUE"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"removed flag", []string{"-batch", "100"}, "not defined"},
		{"bad fsync", []string{"-nats-sync", "sometimes"}, "-nats-sync"},
		{"no idle connections", []string{"-mode", "connections", "-idle-conns", "0"}, "-idle-conns"},
		{"no clients", []string{"-mode", "connections", "-clients", "0"}, "-clients"},
		{"short rates", []string{"-mode", "connections", "-duration", "500ms"}, "-duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseFlags(%q) = %v, want an error mentioning %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestEffectiveSettings checks that repeated -env settings reach both
// programs' configurations and the report's setup.
func TestEffectiveSettings(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-env", "WORKER_CONCURRENCY=3", "-env", "GATEWAY_INFLIGHT_BYTES=16777216"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := newReport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Setup; s.RawWindow.Bytes != 16<<20 || s.RawWindow.Messages < 1 || s.WorkerConcurrency != 3 || s.BatchSize < 1 ||
		s.defaultMark("WORKER_CONCURRENCY") != "" || s.defaultMark("WORKER_BATCH_SIZE") == "" {
		t.Fatalf("setup %+v; want the -env byte limit, the gateway's default line limit, concurrency 3 and the worker's default batch", s)
	}
}

func TestChildEnvironDropsJetlineVariables(t *testing.T) {
	t.Parallel()
	got := childEnviron([]string{"PATH=/bin", "WORKER_BATCH_SIZE=9", "GATEWAY_LISTEN=:1", "INGEST_MAX_BYTES=1",
		"NATS_URL=x", "LOG_LEVEL=debug", "DATABASE_URL=y", "HOME=/root"})
	if strings.Join(got, " ") != "PATH=/bin HOME=/root" {
		t.Fatalf("childEnviron = %v", got)
	}
}
