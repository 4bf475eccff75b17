# triage: the front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TRIAGE  := $(BIN)/triage
DATA    ?= data
FULL    ?= data-full
SEED    ?= 7
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$$(grep -E '^uv==' requirements.lock | cut -d= -f3)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## Create .venv with the locked dependencies and the project (editable)

.PHONY: lock
lock: ## Re-resolve requirements.lock from pyproject.toml (Python 3.11)
	uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

.PHONY: sysdeps
sysdeps: ## Install Debian's chromium for the browser tests (needs root; skipped if present)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; }

.PHONY: demo
demo: venv ## Build a small world and run the whole pipeline on it, then show the result
	$(TRIAGE) generate --scale small --seed $(SEED) --data-dir $(DATA) --force
	$(TRIAGE) world report --data-dir $(DATA)

.PHONY: test
test: venv sysdeps ## Run the default test suite (excludes slow and bench)
	@set +e; $(BIN)/python -m pytest -m "not slow and not bench" $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

.PHONY: test-all
test-all: venv sysdeps ## Run every test including slow ones (not benchmarks)
	$(BIN)/python -m pytest -m "not bench" $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: venv ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: bench-world
bench-world: venv ## Generate the full world and write $(FULL)/reports/bench-world.json
	$(BIN)/python -m features.world.bench --data-dir $(FULL) --seed $(SEED)

.PHONY: bench
bench: bench-world ## Run every benchmark (full scale; long)

.PHONY: clean
clean: ## Remove generated data (data/), caches; keeps .venv and mlruns/
	rm -rf $(DATA) .pytest_cache .ruff_cache .hypothesis
