# Everyday tasks. Every target that needs Python or Node creates .venv / node_modules itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
VENDOR := exporter_api/static/vendor
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck unit bench bench-memory assets clean

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser console loads the official client from our own server: no CDN.
assets: $(NODE_STAMP)
	mkdir -p $(VENDOR)
	cp node_modules/@microsoft/signalr/dist/browser/signalr.min.js $(VENDOR)/
	cp node_modules/@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.min.js $(VENDOR)/

install: $(VENV_STAMP) $(NODE_STAMP) assets

run: install
	$(VENV)/bin/exporter-api serve

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV_STAMP)
	$(VENV)/bin/mypy

unit: $(VENV_STAMP)
	$(PY) -m pytest -m "not compat and not browser and not system" $(PYTEST_ARGS)

test: install lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m benchmarks.run

bench-memory: install
	$(PY) -m benchmarks.memory_bench --quick

clean:
	rm -rf $(VENV) node_modules $(VENDOR) .mypy_cache .ruff_cache .pytest_cache var
