# trustgate — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup test test-unit test-tpm test-cluster lint demo bench clean

help:
	@echo "make demo   - run the end-to-end scenario on this machine (sets everything up first)"
	@echo "make test   - set up, lint, and run every test layer (unit, tpm, cluster)"
	@echo "make lint   - ruff, mypy --strict, import-linter"
	@echo "make bench  - run the benchmark scripts under bench/"

setup:
	@bash scripts/setup.sh

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-tpm: setup
	$(PY) -m pytest tests/tpm $(PYTEST_ARGS)

test-cluster: setup
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

demo: setup
	$(VENV)/bin/trustgate demo

bench: setup
	@for b in bench/*_bench.py; do echo "==> $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-out bench/out
