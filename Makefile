# Everyday tasks. Every target that needs Python or Node creates .venv / node_modules itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
VENDOR := exporter_api/static/vendor
PYTEST_ARGS ?=

CORE := packages/signalr-core
DIST := dist

.PHONY: install run test lint typecheck unit bench bench-signalr bench-memory assets dist clean

# signalr-exporter depends on signalr-core (not on PyPI): both are installed in one step.
$(VENV_STAMP): pyproject.toml $(CORE)/pyproject.toml hatch_build.py exporter_api/providers/_sqlitecsv.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e $(CORE) -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser console loads the official client, and /api/docs Swagger UI, from our own server:
# no CDN.
assets: $(NODE_STAMP)
	mkdir -p $(VENDOR)/swagger-ui
	cp node_modules/@microsoft/signalr/dist/browser/signalr.min.js $(VENDOR)/
	cp node_modules/@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.min.js $(VENDOR)/
	cp node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui.css,LICENSE,NOTICE} $(VENDOR)/swagger-ui/

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

# Wheels and sdists of signalr-core and signalr-exporter in dist/. Reproducible: file times
# come from the last commit (SOURCE_DATE_EPOCH), so the same commit gives the same bytes.
dist: $(VENV_STAMP) assets
	rm -rf $(DIST)
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 315532800) && \
	export SOURCE_DATE_EPOCH && \
	$(PY) -m build --no-isolation --outdir $(DIST) $(CORE) && \
	$(PY) -m build --no-isolation --outdir $(DIST) .
	ls -l $(DIST)

bench: install
	$(PY) -m benchmarks.run

# The hub against the bare ASGI app on hypercorn, hypercorn+uvloop and uvicorn (3-4 minutes).
bench-signalr: install
	$(PY) -m benchmarks.signalr_bench

bench-memory: install
	$(PY) -m benchmarks.memory_bench --quick

clean:
	rm -rf $(VENV) node_modules $(VENDOR) $(DIST) .mypy_cache .ruff_cache .pytest_cache var
