package main

import (
	"os"
	"path/filepath"
	"strings"
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
	specs := strings.Split(spec, ",")
	if len(specs) != 2 || !filepath.IsAbs(specs[0]) || filepath.Base(specs[0]) != "tweets.yaml" || !filepath.IsAbs(specs[1]) || filepath.Base(specs[1]) != "tweets-full.yaml" {
		t.Fatalf("specs = %q, want absolute paths to tweets.yaml and tweets-full.yaml", spec)
	}
	for _, f := range []string{demoSample, demoFullSample} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("the banner points at %s: %v", f, err)
		}
	}

	t.Setenv("WORKER_PIPELINES", "mine.yaml")
	if _, ok := demoPipeline(); ok {
		t.Fatal("demo pipeline applied although WORKER_PIPELINES is set")
	}
}
