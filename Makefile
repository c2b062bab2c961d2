# Shelver: local development, tests and CI entry points.
#
#   make install      everything: what `make run` installs, and the development tools in .venv
#                     (requirements/dev.txt: pytest, moto, ruff, mypy, cfn-lint...) for test/lint
#   make run          installs what running needs (.venv with requirements/app.txt and the project:
#                     .venv/bin/shelver; .venv-localstack, Python 3.13; node_modules), checks the
#                     settings, starts LocalStack on 127.0.0.1:$(LOCALSTACK_PORT) unless it runs,
#                     deploys serverless.yml into it (a bucket per genre of GENRE_BUCKETS), then
#                     gunicorn on $(BIND). Ctrl-C stops gunicorn; LocalStack keeps running, and
#                     keeps everything in it (queues, messages, buckets, books) for the next run
#   make run-fresh    make emulator-down, then make run: start again from an empty emulator
#   make reload       SIGHUP to the gunicorn of `make run` (SHELVER_CONFIG_FILE read again);
#                     returns once its new consumers run
#   make emulator     LocalStack alone, left running; make emulator-down stops it (and forgets
#                     what was in it)
#   make infra        the settings checked, the emulator started if needed, serverless.yml deployed
#   make send         put $(COUNT) books of $(GENRES) on the queue
#   make shelver ARGS="dlq stats"  the `shelver` command against the local stack (--local)
#   make image        build the container image $(IMAGE) with docker or podman; prints its size
#   make bench        Shelver against the alternatives on its own LocalStack -> docs/benchmarks.md
#                     (BENCH_ARGS=--quick for a smoke run into .run/bench)
#   make bench-slow-clients  /health and /health/live probed while 500 slow or idle clients hold
#                     connections: latencies and failures (SLOW_CLIENTS_ARGS; docs/reliability.md)
#   make chaos        full-size fault-injection scenarios + 20,000-book soak, one table of figures
#                     (CHAOS_ARGS="--scenarios deploy,poison --soak 0" for part of it)
#   make fuzz         10 minutes of coverage-guided fuzzing of the book decoder and the key rule
#                     (atheris; FUZZ_ARGS="-max_total_time=60" for less), outside CI
#   make dashboard-picture  docs/dashboard.png: the Grafana dashboard drawn from its queries
#   make test / lint / clean (clean also stops the emulator)
#
# Installs are recorded by stamp files under .stamps/: a second `make install` does nothing
# unless a requirements file, pyproject.toml, package.json or package-lock.json changed or a
# venv (or .venv/bin/shelver) went missing.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
# LocalStack needs Python >= 3.12. `python3.13` if it runs (pyenv's shim is on PATH here but
# fails while 3.13 is not selected), else pyenv's 3.13 directly.
PYTHON_LOCALSTACK ?= $(or $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null),\
	$(lastword $(wildcard /root/.pyenv/versions/3.13*/bin/python)),python3.13)

LOCALSTACK_PORT ?= 4566
BIND ?= 127.0.0.1:8000
# make run's pid files, LocalStack's data directory and log, Shelver's state dir.
RUN_DIR ?= .run
COUNT ?= 10
GENRES ?= scifi,romance
IMAGE ?= shelver:latest
BENCH_ARGS ?=
FUZZ_ARGS ?=
SLOW_CLIENTS_ARGS ?=

VENV := .venv
VENV_LS := .venv-localstack
STAMPS := .stamps
EMULATOR := $(VENV)/bin/python scripts/emulator.py
LOCAL_RUN := LOCALSTACK_PORT=$(LOCALSTACK_PORT) BIND=$(BIND) RUN_DIR=$(RUN_DIR) \
	$(VENV)/bin/python -m scripts.run_local
# The `shelver` command aimed at the emulator, whatever AWS settings the shell has.
SHELVER_LOCAL := $(VENV)/bin/shelver --local --endpoint-url http://127.0.0.1:$(LOCALSTACK_PORT)
LINT_PATHS := service workers scripts tests bench

# A stamp is rebuilt when its inputs change, and also when the thing it stands for is gone.
rebuild_if_missing = $(if $(wildcard $(1)),,FORCE)

.PHONY: help install install-run install-prometheus emulator emulator-down infra run run-fresh reload send shelver image bench bench-slow-clients chaos fuzz dashboard-picture test lint clean FORCE

help:
	@sed -n '2,29p' Makefile | sed 's/^# \{0,1\}//'

install: install-run $(STAMPS)/venv-dev

# What `make run` needs, and nothing more.
install-run: $(STAMPS)/venv $(STAMPS)/venv-localstack $(STAMPS)/node

# The service's runtime set, and the project itself installed editable (console script
# `shelver`), without build isolation: its build needs only setuptools and wheel, both already in
# the venv (wheel is pinned in build.txt).
$(STAMPS)/venv: requirements/app.txt requirements/build.txt pyproject.toml \
		$(call rebuild_if_missing,$(VENV)/bin/python) $(call rebuild_if_missing,$(VENV)/bin/shelver)
	@mkdir -p $(STAMPS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -r requirements/app.txt -r requirements/build.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The development tools, into the same .venv (dev.txt is app.txt and build.txt plus the tools).
$(STAMPS)/venv-dev: requirements/dev.txt $(STAMPS)/venv
	$(VENV)/bin/python -m pip install --quiet -r requirements/dev.txt
	touch $@

$(STAMPS)/venv-localstack: requirements/localstack.txt $(call rebuild_if_missing,$(VENV_LS)/bin/python)
	@mkdir -p $(STAMPS)
	test -x $(VENV_LS)/bin/python || $(PYTHON_LOCALSTACK) -m venv $(VENV_LS)
	$(VENV_LS)/bin/python -m pip install --quiet -r requirements/localstack.txt
	touch $@

$(STAMPS)/node: package.json package-lock.json $(call rebuild_if_missing,node_modules/.bin/osls)
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund
	touch $@

# The benchmark's extras (chart, profiler) go into the same .venv, on top of dev.txt.
$(STAMPS)/venv-bench: requirements/bench.txt $(STAMPS)/venv-dev
	$(VENV)/bin/python -m pip install --quiet -r requirements/bench.txt
	touch $@

# The fuzzer goes into the same .venv, on top of dev.txt.
$(STAMPS)/venv-fuzz: requirements/fuzz.txt $(STAMPS)/venv-dev
	$(VENV)/bin/python -m pip install --quiet -r requirements/fuzz.txt
	touch $@

install-prometheus:
	@if ! command -v prometheus >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi

emulator: $(STAMPS)/venv $(STAMPS)/venv-localstack
	$(EMULATOR) up --port $(LOCALSTACK_PORT) --run-dir $(RUN_DIR)

emulator-down: $(STAMPS)/venv
	$(EMULATOR) down --port $(LOCALSTACK_PORT) --run-dir $(RUN_DIR)

# scripts/run_local.py: the steps, what is kept between runs, how a stop works.
infra: install-run
	$(LOCAL_RUN) infra

run: install-run
	$(LOCAL_RUN) run

run-fresh: install-run
	$(EMULATOR) down --port $(LOCALSTACK_PORT) --run-dir $(RUN_DIR)
	$(LOCAL_RUN) run

reload: $(STAMPS)/venv
	$(LOCAL_RUN) reload

send: $(STAMPS)/venv
	$(SHELVER_LOCAL) send --count $(COUNT) --genres $(GENRES)

# Any `shelver` command against the local stack: make shelver ARGS="dlq stats".
shelver: $(STAMPS)/venv
	@$(SHELVER_LOCAL) $(ARGS)

# Standard library only: no venv needed. Where no registry answers, the base image is made with
# debootstrap (scripts/container.py); docs/deploy.md.
image:
	$(PYTHON) scripts/container.py build --tag $(IMAGE)

# One run, one emulator, the same messages for every contender: see docs/benchmarks.md.
bench: install $(STAMPS)/venv-bench
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# Its own LocalStack and Shelver; the figures in docs/reliability.md ("Slow clients").
bench-slow-clients: install
	$(VENV)/bin/python -m bench.slow_clients $(SLOW_CLIENTS_ARGS)

# Its own LocalStack, its own stacks; the table to copy into docs/reliability.md. `make test`
# runs the same scenarios at CI size (tests/chaos/test_chaos.py).
chaos: install
	$(VENV)/bin/python -m tests.chaos $(CHAOS_ARGS)

# Findings, the corpus and the log go to .run/fuzz/ (bench/fuzz_books.py; docs/reliability.md).
fuzz: $(STAMPS)/venv-fuzz
	@mkdir -p .run/fuzz
	$(VENV)/bin/python -m bench.fuzz_books $(FUZZ_ARGS) 2>&1 | tee .run/fuzz/fuzz.log

# Grafana cannot be installed here: the dashboard's panels are drawn from the same queries, sent
# to a real Prometheus after the dashboard test's run (docs/operations.md).
dashboard-picture: install install-prometheus $(STAMPS)/venv-bench
	$(VENV)/bin/python -m bench.dashboard_picture

test: install install-prometheus
	$(VENV)/bin/python -m pytest -q tests

lint: $(STAMPS)/venv-dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

# Keeps the venvs and node_modules (slow to rebuild); stops the emulator of `make run` or
# `make emulator` (forgetting what was in it).
clean:
	-test -x $(VENV)/bin/python && $(EMULATOR) down --port $(LOCALSTACK_PORT) --run-dir $(RUN_DIR)
	rm -rf $(STAMPS) $(RUN_DIR) .serverless .pytest_cache .mypy_cache .ruff_cache
	find . \( -path ./.git -o -path ./$(VENV) -o -path ./$(VENV_LS) -o -path ./node_modules \) -prune \
		-o -name __pycache__ -type d -prune -exec rm -rf {} +

FORCE:
