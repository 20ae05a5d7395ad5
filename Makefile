# Two commands do all the set-up on a fresh machine (README.md):
#   make run    install what is needed, then start the whole stack on the embedded defaults
#   make test   install what is needed, then run the test suite
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
# The newest Python 3.11+ on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
PYTEST_ARGS ?=
BUF_VERSION ?= 1.75.0
BUF := $(VENV)/npm/node_modules/.bin/buf

.PHONY: help install run test stress lint buf-lint typecheck check protos bench loadtest clean

help:
	@echo "make run       install and start paygate serve (gateway 127.0.0.1:50051, metrics 127.0.0.1:9464)"
	@echo "make test      install and run the tests (not the long stress runs)"
	@echo "make stress    the long soak/stress runs"
	@echo "make check     ruff + mypy + tests"
	@echo "make protos    regenerate paygate/v1 from protos/"
	@echo "make bench     paygate bench: every scenario against the bare gRPC floor (JSON lines)"
	@echo "make loadtest  a short headless Locust run against a running stack (SCENARIO=CourseBuyer|HotCreatorBuyer|RefundStorm)"

$(STAMP): pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# buf (a Go gRPC client and proto linter) checks the protos and signed-call interop; skipped without npm.
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/npm @bufbuild/buf@$(BUF_VERSION) >/dev/null \
		|| echo "buf could not be installed; its checks will be skipped"; \
	else echo "npm not found; the buf checks will be skipped"; fi
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/paygate serve $(ARGS)

test: install
	$(PY) -m pytest -m "not stress" $(PYTEST_ARGS)

stress: install
	$(PY) -m pytest -m stress $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

buf-lint: install
	$(BUF) lint protos

typecheck: install
	$(VENV)/bin/mypy

check: lint buf-lint typecheck test

protos: install
	$(PY) -m scripts.gen_protos

# Every scenario against the bare gRPC floor, 2 workers on SQLite, 2 load processes x 32 calls in flight, 10 s
# per run: a few minutes. ARGS="--scenarios wallet_purchase --database-url URL --fresh-database --out FILE".
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(VENV)/bin/paygate bench --workers 2 --processes 2 --in-flight 32 --warmup-s 2 --duration-s 10 $(ARGS)

SCENARIO ?= CourseBuyer
loadtest: install
	mkdir -p loadtest-results
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s --host 127.0.0.1:50051 \
		--csv loadtest-results/$(SCENARIO) --html loadtest-results/$(SCENARIO).html $(SCENARIO)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
