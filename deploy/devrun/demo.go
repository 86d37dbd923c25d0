package main

import (
	"os"
	"path/filepath"
)

// The demo pipeline: unless the developer chose listeners or pipelines
// themselves, `make run` also feeds port 4001 to the tweets pipeline, as
// docker-compose.yml does, so both landings can be tried at once.
const (
	demoListen = ":4000,tweets=:4001"
	demoSpec   = "deploy/pipelines/tweets.yaml"
	demoSample = "deploy/samples/tweets.ndjson"
)

// demoPipeline returns the absolute path of the tweets spec and true when
// the demo pipeline applies: GATEWAY_LISTEN and WORKER_PIPELINES are both
// unset and the spec is found from the working directory (the repository
// root, under make).
func demoPipeline() (string, bool) {
	if _, set := os.LookupEnv("GATEWAY_LISTEN"); set {
		return "", false
	}
	if _, set := os.LookupEnv("WORKER_PIPELINES"); set {
		return "", false
	}
	spec, err := filepath.Abs(demoSpec)
	if err != nil {
		return "", false
	}
	if _, err := os.Stat(spec); err != nil {
		return "", false
	}
	return spec, true
}
