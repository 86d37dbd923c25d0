package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDemoPipeline(t *testing.T) {
	for _, name := range []string{"GATEWAY_LISTEN", "WORKER_PIPELINES"} {
		if _, set := os.LookupEnv(name); set {
			t.Skipf("%s is set in the environment", name)
		}
	}
	t.Chdir("../..") // the repository root, where make runs devrun
	spec, ok := demoPipeline()
	if !ok {
		t.Fatal("demo pipeline not found from the repository root")
	}
	if !filepath.IsAbs(spec) || filepath.Base(spec) != "tweets.yaml" {
		t.Fatalf("spec = %q, want an absolute path to tweets.yaml", spec)
	}
	if _, err := os.Stat(demoSample); err != nil {
		t.Fatalf("the banner points at %s: %v", demoSample, err)
	}

	t.Setenv("WORKER_PIPELINES", "mine.yaml")
	if _, ok := demoPipeline(); ok {
		t.Fatal("demo pipeline applied although WORKER_PIPELINES is set")
	}
}
