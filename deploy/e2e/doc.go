// Package e2e holds jetline's end-to-end tests: they build the gateway and
// worker programs, run them as separate processes against an embedded NATS
// JetStream server and a private PostgreSQL, send NDJSON over TCP the way
// `ncat host 4000 < file` does, and check what lands in the events table.
// The cluster tests (cluster_test.go) run three nats-server processes,
// built by TestMain from the nats-server module go.mod names, with R3
// streams, and SIGKILL them mid-ingest.
//
// The package has no code of its own; run it with
//
//	go test -race -count=1 ./deploy/e2e/
//
// Set TEST_LOG_LEVEL=info to see the embedded servers' logs. When a test
// fails, the standard error of every program it ran is copied to the test
// log. E2E_SEED fixes the random input, for reproducing a failure: each
// test logs the seed it used.
package e2e
