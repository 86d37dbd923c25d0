# jetline — `make` (or `make help`) lists the targets.
#
# Build output and runtime data live under .data/ (binaries in .data/bin,
# the dev runner's NATS store and Postgres cluster beside them).

GO           ?= go
GOFMT        ?= $(shell $(GO) env GOROOT)/bin/gofmt
BIN          := .data/bin
TEST_TIMEOUT ?= 15m
FUZZTIME     ?= 10s
BENCH_ARGS   ?=
# NATS_NODES=3 makes `make run` start a three-node embedded JetStream
# cluster with R3 streams (client ports 4222-4224, routes 6222-6224).
NATS_NODES   ?= $(or $(JETLINE_NATS_NODES),1)

.DEFAULT_GOAL := help

.PHONY: help build run test fuzz bench lint compose-check images clean

help: ## Show this list of targets
	@echo "Usage: make TARGET [VAR=value]"
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: GO=$(GO) TEST_TIMEOUT=$(TEST_TIMEOUT) FUZZTIME=$(FUZZTIME) BENCH_ARGS=$(BENCH_ARGS) NATS_NODES=$(NATS_NODES)"

build: ## Build the gateway, the worker and the dev runner into .data/bin
	$(GO) build -o $(BIN)/ ./gateway/cmd/gateway ./worker/cmd/worker ./deploy/devrun

run: build ## Run NATS, Postgres, a gateway and two workers locally (Ctrl-C stops all; NATS_NODES=3 for a cluster)
	JETLINE_NATS_NODES=$(NATS_NODES) $(BIN)/devrun -gateway $(BIN)/gateway -worker $(BIN)/worker

test: ## Vet, then run every test with the race detector, and the Kubernetes manifests' tests (deploy/k8s)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout=$(TEST_TIMEOUT) ./...
	cd deploy/k8s && $(GO) vet ./... && $(GO) test -count=1 ./...

fuzz: ## Fuzz each Fuzz* target (FuzzFramer, ...) for FUZZTIME
	@set -e; found=0; \
	for file in $$(grep -rlE --include='*_test.go' '^func Fuzz[A-Z0-9_]' gateway worker shared deploy 2>/dev/null | sort); do \
		dir=./$$(dirname $$file); \
		for fn in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' $$file); do \
			found=$$((found + 1)); \
			echo "$(GO) test -run='^$$' -fuzz='^$$fn$$' -fuzztime=$(FUZZTIME) $$dir"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$dir; \
		done; \
	done; \
	if [ $$found -eq 0 ]; then echo "no Fuzz* functions found" >&2; exit 1; fi

bench: build ## Run the end-to-end benchmark (deploy/bench; pass flags in BENCH_ARGS)
	$(GO) run ./deploy/bench -gateway-bin $(BIN)/gateway -worker-bin $(BIN)/worker $(BENCH_ARGS)

lint: ## Check formatting (gofmt) and run go vet
	@unformatted=$$(find . -name '*.go' -not -path './.data/*' -not -path './.git/*' -exec $(GOFMT) -l {} +); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

compose-check: ## Check docker-compose.yml, the Dockerfile and the NATS configs (no Docker engine needed)
	$(GO) test -count=1 -run '^Test(Compose|Dockerfile|Dockerignore|NATS)' ./deploy/
	@if docker compose version >/dev/null 2>&1; then docker compose config --quiet && echo "docker compose config: ok"; fi

images: ## Build the gateway and worker container images (needs a Docker engine)
	docker build -f deploy/Dockerfile --target gateway -t jetline/gateway:dev .
	docker build -f deploy/Dockerfile --target worker -t jetline/worker:dev .

clean: ## Remove .data: binaries, the dev NATS store and the dev Postgres data
	rm -rf .data
