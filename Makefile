# trustgate — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup test test-unit test-tpm test-cluster test-image test-realnode image lint demo bench clean chart

help:
	@echo "make demo   - run the end-to-end scenario on this machine (sets everything up first)"
	@echo "make test   - set up, lint, and run every test layer (unit, tpm, cluster, image)"
	@echo "make lint   - ruff, mypy --strict, import-linter"
	@echo "make bench  - run the benchmark scripts under bench/"
	@echo "make image  - build the trustgate and trustgate-agent images with docker or podman"
	@echo "make chart  - regenerate charts/trustgate and release/*.yaml from manifests/"

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

# buildah from a local stand-in base, cached in ~/.cache/trustgate (part of `make test` too)
test-image: setup
	$(PY) -m pytest tests/image $(PYTEST_ARGS)

# A real Debian kernel under QEMU/TCG (fetched once into ~/.cache/trustgate/kernel; part of `make test`)
test-realnode: setup
	$(PY) -m pytest tests/realnode $(PYTEST_ARGS)

# The images, for operators with a container engine (docs/install.md "Building the images").
# IMAGE_PREFIX: a registry path ending in "/", e.g. IMAGE_PREFIX=registry.example.com/5gc/
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman)
IMAGE_PREFIX ?=
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BUILD_ARGS ?=

image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: no docker or podman (set CONTAINER_ENGINE)" >&2; exit 1; }
	$(CONTAINER_ENGINE) build $(IMAGE_BUILD_ARGS) --build-arg VERSION=$(IMAGE_TAG) \
		--target agent -t $(IMAGE_PREFIX)trustgate-agent:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build $(IMAGE_BUILD_ARGS) --build-arg VERSION=$(IMAGE_TAG) \
		--target controller -t $(IMAGE_PREFIX)trustgate:$(IMAGE_TAG) .

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(PY) scripts/gen_chart.py --check

# The Helm chart and the release YAML, generated from the kustomize base (scripts/gen_chart.py):
# run after any change under manifests/; `make lint` fails while they differ.
chart: setup
	$(PY) scripts/gen_chart.py

demo: setup
	$(VENV)/bin/trustgate demo

bench: setup
	@for b in bench/*_bench.py; do echo "==> $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-out bench/out
