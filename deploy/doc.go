// Package deploy holds how jetline runs: the Dockerfile, the NATS server
// configurations, and (at the repository root) docker-compose.yml, plus the
// dev runner behind `make run` in deploy/devrun. Its tests load those files
// without a Docker engine and check that they agree with each other and with
// the programs' configuration.
package deploy
