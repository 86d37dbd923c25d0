package main

import (
	"os"
	"path/filepath"
	"strings"
)

// The demo pipelines: unless the developer chose listeners or pipelines
// themselves, `make run` also feeds port 4001 to the tweets pipeline and
// port 4002 to the tweets-full one (its tables in schema live), as
// docker-compose.yml does, so every landing can be tried at once.
const (
	demoListen     = ":4000,tweets=:4001,tweets_full=:4002"
	demoSpec       = "deploy/pipelines/tweets.yaml"
	demoSample     = "deploy/samples/tweets.ndjson"
	demoFullSpec   = "deploy/pipelines/tweets-full.yaml"
	demoFullSample = "deploy/samples/tweets-full.ndjson"
)

// demoPipeline returns the absolute paths of the tweets and tweets-full
// specs, comma-separated as WORKER_PIPELINES takes them, and true when the
// demo pipelines apply: GATEWAY_LISTEN and WORKER_PIPELINES are both unset
// and the specs are found from the working directory (the repository
// root, under make).
func demoPipeline() (string, bool) {
	if _, set := os.LookupEnv("GATEWAY_LISTEN"); set {
		return "", false
	}
	if _, set := os.LookupEnv("WORKER_PIPELINES"); set {
		return "", false
	}
	var specs []string
	for _, f := range []string{demoSpec, demoFullSpec} {
		spec, err := filepath.Abs(f)
		if err != nil {
			return "", false
		}
		if _, err := os.Stat(spec); err != nil {
			return "", false
		}
		specs = append(specs, spec)
	}
	return strings.Join(specs, ","), true
}
