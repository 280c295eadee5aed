# Every target bootstraps .venv by itself on a fresh machine (Python 3.11+ required).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run services services-stop test check test-tools deploy-tools lint format bench bench-tools bench-write bench-read bench-search bench-bus bench-load bench-search-classes bench-deployed bench-stream-cost bench-peer soak soak-cluster fuzz clean-data

# Debian packages are installed with sudo unless running as root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make run: the platform, with an embedded PostgreSQL unless DATABASE_URL is set.
run: $(STAMP)
	$(BIN)/warriors run

## make services: Kafka and Redis for local use, their URLs in .env.services (make run
## then uses them); make services-stop stops them.
services: $(STAMP) test-tools
	$(BIN)/warriors services start

services-stop: $(STAMP)
	$(BIN)/warriors services stop

## make lint: ruff (lint + format check) and mypy.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make test: lint, then the whole test suite (it starts the servers it needs). Debian
## packages it installs: chromium and chromium-driver (the browser test of the Dagster UI)
## redis-server, and prometheus for its promtool (tests/unit/test_monitoring_files.py; the
## Prometheus and node exporter services it would start are stopped and disabled). Kafka
## comes from Maven Central (JDK 17 and Maven are on the machine).
DEBIAN_TOOLS := chromium chromium-driver redis-server prometheus

test-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v redis-server >/dev/null \
		&& command -v promtool >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(DEBIAN_TOOLS) \
		&& { $(SUDO) systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true; }; }

## docker-compose (Compose v5, the `docker compose` CLI as a standalone binary), built once
## into .venv/bin from the module's source on the Go module proxy (about 100 s on 2 cores;
## `go install ...@version` refuses this module: its go.mod has exclude directives). No
## Docker engine needed: `docker-compose config` parses and validates docker-compose.yml
## (tests/unit/test_compose_config.py). v5.6.0: the newest that the machine's Go 1.26.8
## builds (v5.7.x asks for Go 1.26.10 or later).
COMPOSE_VERSION := v5.6.0
COMPOSE := $(BIN)/docker-compose

$(COMPOSE): | $(STAMP)
	go mod download github.com/docker/compose/v5@$(COMPOSE_VERSION)
	cd "$$(go env GOMODCACHE)/github.com/docker/compose/v5@$(COMPOSE_VERSION)" && go build -trimpath \
		-ldflags "-w -X github.com/docker/compose/v5/internal.Version=$(COMPOSE_VERSION)" -o $(CURDIR)/$(COMPOSE) ./cmd

deploy-tools: $(COMPOSE)

test: lint test-tools deploy-tools
	$(BIN)/pytest

## make check: the inner loop (issue 28): lint, mypy and every test that needs no server
## (tests/unit: pure code, the deployment files, Compose's own validation); `make test`
## stays the whole suite, and what CI runs.
check: lint deploy-tools
	$(BIN)/pytest -q tests/unit

## make soak: the production-mode fault test (tests/test_production_faults.py) for longer:
## SOAK_SECONDS (default 300) of writers and random faults, from a fresh seed each time
## (printed); SOAK_SEED=N repeats a run. make test always draws from the pinned seed.
soak: $(STAMP) test-tools
	SOAK_SEED=$${SOAK_SEED:-random} SOAK_SECONDS=$${SOAK_SECONDS:-300} $(BIN)/pytest -s tests/test_production_faults.py

## make soak-cluster: the replicated topology test (tests/test_cluster_topology.py: 3 Kafka
## brokers, 2 OpenSearch nodes, 2 HTTP entry points on one port, 3 projector members) for
## longer: CLUSTER_SECONDS (default 300) of writers and rounds of faults; CLUSTER_SEED
## repeats a run (the seed is printed). make test runs each fault once.
soak-cluster: $(STAMP) test-tools
	CLUSTER_SECONDS=$${CLUSTER_SECONDS:-300} $(BIN)/pytest -s tests/test_cluster_topology.py

## make fuzz: the schemathesis fuzzing of the API (tests/test_fuzz_api.py) for longer and
## with a fresh seed each time: FUZZ_EXAMPLES (default 2000; make test runs 200) random
## cases per operation; FUZZ_SEED=N replays a run (the seed and the command that replays it
## are printed). make test always uses the seed pinned in tests/fuzz_seed.py (PINNED_SEED).
fuzz: $(STAMP)
	FUZZ_SEED=$${FUZZ_SEED:-random} FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(BIN)/pytest -s tests/test_fuzz_api.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## make bench: the benchmarks under bench/ (see docs/benchmarks.md). Installs the load
## generators it needs: wrk (Debian package), vegeta (Go module, into .venv/bin) and
## warriors-loadgen (built from bench/loadgen).
VEGETA := github.com/tsenart/vegeta/v12@v12.13.0

## warriors-loadgen (bench/loadgen, Go standard library only): built into .venv/bin,
## rebuilt when its source changes.
LOADGEN := $(BIN)/warriors-loadgen

$(LOADGEN): $(wildcard bench/loadgen/*.go) bench/loadgen/go.mod bench/loadgen/words.json | $(STAMP)
	cd bench/loadgen && go build -trimpath -buildvcs=false -o $(CURDIR)/$(LOADGEN) .

bench-tools: $(STAMP) $(LOADGEN)
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	@test -x $(BIN)/vegeta || GOBIN=$(CURDIR)/$(BIN) go install $(VEGETA)

bench: bench-tools test-tools
	$(BIN)/python -m bench.write_path
	$(BIN)/python -m bench.read_path
	$(BIN)/python -m bench.search_cache
	$(BIN)/python -m bench.bus_lag
	$(BIN)/python -m bench.search_classes
	$(BIN)/python -m bench.mixed_load
	$(BIN)/python -m bench.deployed
	$(BIN)/python -m bench.stream_cost

bench-write: bench-tools
	$(BIN)/python -m bench.write_path

bench-read: bench-tools
	$(BIN)/python -m bench.read_path

bench-search: bench-tools test-tools
	$(BIN)/python -m bench.search_cache

bench-bus: bench-tools
	$(BIN)/python -m bench.bus_lag

## make bench-search-classes: search per class of term next to get-by-id (bench/search_classes.py).
bench-search-classes: bench-tools
	$(BIN)/python -m bench.search_classes

## make bench-deployed: the platform as `make run` serves it (bench/deployed.py): creations,
## get-by-id and /health/live next to a trivial app, with projection lag and CPU by process;
## REDIS=1 with a Redis of its own.
bench-deployed: bench-tools test-tools
	$(BIN)/python -m bench.deployed $(if $(REDIS),--redis,)

## make bench-load: the mixed open-loop profile (bench/mixed_load.py) against `warriors run`;
## SERVICES=1 with its own Kafka, OpenSearch and Redis.
bench-load: bench-tools test-tools
	$(BIN)/python -m bench.mixed_load $(if $(SERVICES),--services,)

## make bench-stream-cost: CPU per request of each stream of the mixed load, one at a time,
## next to /health/live at the same rate (bench/stream_cost.py).
bench-stream-cost: bench-tools test-tools
	$(BIN)/python -m bench.stream_cost

## make bench-peer PEER_URL=http://127.0.0.1:3000: `make run` against another implementation
## of the compat routes, one after the other, same generator and seeds (bench/peer.py); the
## peer is the user's to start (docs/benchmarks.md; bench/peer_stores.py gives it its stores).
bench-peer: bench-tools
	$(BIN)/python -m bench.peer $(if $(PEER_URL),--peer-url $(PEER_URL),)

clean-data:
	rm -rf .data
