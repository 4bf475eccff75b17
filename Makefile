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

# requirements.lock is the development environment ($(STAMP) installs it); the runtime lock is
# its subset without the dev extra, at the same pins (-c), for the Bento (bentofile.yaml).
.PHONY: lock
lock: ## Re-resolve requirements.lock and requirements-runtime.lock from pyproject.toml (Python 3.11)
	uv pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 -o requirements.lock
	uv pip compile pyproject.toml --python-version 3.11 -c requirements.lock -o requirements-runtime.lock

.PHONY: sysdeps
sysdeps: ## Install Debian's chromium (browser tests), Java 17 (Spark local mode; needs root, skipped if present) and axe-core from npm (package-lock.json)
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing and not root:$$missing (browser or Spark tests will be skipped)"; fi; fi
	@# axe-core (the accessibility check of the browser tests), pinned in package-lock.json
	@if [ ! -f node_modules/axe-core/axe.min.js ] || [ package-lock.json -nt node_modules/axe-core/axe.min.js ]; then \
	  if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --silent >/dev/null 2>&1 \
	    || echo "npm ci failed: the accessibility test will be skipped"; \
	  else echo "no npm: the accessibility test will be skipped"; fi; fi

.PHONY: demo
demo: venv ## Build a small world and run the whole pipeline on it, then show the result
	$(TRIAGE) generate --scale small --seed $(SEED) --data-dir $(DATA) --force
	$(TRIAGE) world report --data-dir $(DATA)
	$(TRIAGE) features --data-dir $(DATA)
	$(TRIAGE) train --data-dir $(DATA)
	$(TRIAGE) evaluate --data-dir $(DATA)
	$(TRIAGE) score --data-dir $(DATA)
	@$(BIN)/python -m serving.review.demo_summary --data-dir $(DATA)

.PHONY: full
full: venv ## Run the whole pipeline on the full world (1.2M open cases) in $(FULL)
	$(TRIAGE) generate --scale full --seed $(SEED) --data-dir $(FULL) --force
	$(TRIAGE) features --data-dir $(FULL)
	$(TRIAGE) train --data-dir $(FULL)
	$(TRIAGE) evaluate --data-dir $(FULL)
	$(TRIAGE) score --data-dir $(FULL)

.PHONY: headroom
headroom: venv ## What limits precision in $(FULL): features ceiling, all-history truth, recorded labels -> reports/headroom.md
	$(TRIAGE) headroom --data-dir $(FULL)

.PHONY: robustness
robustness: venv ## Pipeline on six small worlds (seeds, shifted rates) -> data-robustness/robustness.md (~20-30 min)
	$(BIN)/python -m training.robustness --out data-robustness

.PHONY: simulate
simulate: venv ## Operating loop, 4 quarters on the full world (reads the truth; long) -> data-sim/reports/simulate.md
	$(TRIAGE) generate --scale full --seed $(SEED) --data-dir data-sim --force
	TRIAGE_MLRUNS_DIR=$(CURDIR)/data-sim/mlruns $(TRIAGE) simulate --data-dir data-sim --periods 4 --capacity 2500

.PHONY: simulate-small
simulate-small: venv ## Operating loop, 4 quarters on a small world (~6 min) -> data-sim-small/reports/simulate.md
	$(TRIAGE) generate --scale small --seed $(SEED) --data-dir data-sim-small --force
	TRIAGE_MLRUNS_DIR=$(CURDIR)/data-sim-small/mlruns $(TRIAGE) simulate --data-dir data-sim-small --periods 4 --capacity 2500

.PHONY: serve
serve: venv ## Start the BentoML service on 127.0.0.1:3000 over $(DATA)
	$(TRIAGE) serve --data-dir $(DATA) --port 3000

.PHONY: mlflow-ui
mlflow-ui: venv ## Browse runs and the model registry (127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port 5000

# pytest exits 5 when it collected nothing (a wrong marker, a moved folder): that is a failure.
PYTEST = set +e; $(BIN)/python -m pytest -m "$(1)" $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests for -m \"$(1)\"" >&2; exit 1; fi; exit $$rc

.PHONY: test
test: venv sysdeps ## Run the default test suite (excludes slow and bench)
	@$(call PYTEST,not slow and not bench)

.PHONY: test-slow
test-slow: venv sysdeps ## Run the slow tests (truth isolation, model vs baselines, linkage oracle, resume, notebooks, loop); CI runs them after make test
	@$(call PYTEST,slow and not bench)

.PHONY: test-all
test-all: venv sysdeps ## Run every test including slow ones (not benchmarks)
	@$(call PYTEST,not bench)

.PHONY: lint
lint: venv ## ruff lint and format check, mypy type check (settings in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: format
format: venv ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: bench-world
bench-world: venv ## Generate the full world and write $(FULL)/reports/bench-world.json
	$(BIN)/python -m features.world.bench --data-dir $(FULL) --seed $(SEED)

.PHONY: bench-features
bench-features: venv ## Features stage on the full world in $(FULL) -> reports/bench-features.json
	@test -f $(FULL)/world/manifest.json || $(MAKE) bench-world
	$(BIN)/python -m features.bench --data-dir $(FULL)

.PHONY: bench-train
bench-train: venv ## Training on the full world's features -> reports/bench-train.json
	@test -f $(FULL)/features/cases.parquet || $(MAKE) bench-features
	$(BIN)/python -m training.bench --data-dir $(FULL)

.PHONY: bench-shap
bench-shap: venv ## SHAP engine vs pred_contrib on 1.2M synthetic rows -> $(FULL)/reports/bench-shap.json
	$(BIN)/python -m serving.bench.shap_speed --rows 1200000 --out $(FULL)/reports/bench-shap.json

.PHONY: bench-score
bench-score: venv ## Score + explain the full backlog vs pred_contrib -> reports/bench-score.json
	@test -f $(FULL)/features/cases.parquet || $(MAKE) bench-train
	$(BIN)/python -m serving.bench.score --data-dir $(FULL)

.PHONY: bench-tools
bench-tools: ## Install Debian's wrk, the load generator of bench-serve (needs root)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

.PHONY: bench-serve
bench-serve: venv bench-tools ## Real server under wrk over $(FULL) (scores needed) -> reports/bench-serve.json; SOAK=600 for the soak
	@test -f $(FULL)/scores/LATEST || $(MAKE) bench-score
	$(BIN)/python -m serving.bench.serve --data-dir $(FULL) --soak-seconds $${SOAK:-0}

.PHONY: bench-pages
bench-pages: venv ## Case, queue (sorted, filtered), search, My work, export and waterfall page times on $(FULL) (scores needed) -> reports/bench-pages.json
	@test -f $(FULL)/scores/LATEST || $(MAKE) bench-score
	$(BIN)/python -m serving.bench.pages --data-dir $(FULL)

.PHONY: bench-link
bench-link: venv ## triage link on FEBRL4 (with and without its identifier) beside Splink direct -> data-bench-link/bench-link.{json,md} (~2 min)
	$(BIN)/python -m features.bench_link --out data-bench-link

.PHONY: bench-spark
bench-spark: venv sysdeps ## Features + score on Spark local mode beside DuckDB, full world -> $(FULL)/reports/bench-spark.json (long)
	@test -f $(FULL)/world/manifest.json || $(MAKE) bench-world
	$(BIN)/python -m serving.bench.spark --data-dir $(FULL)

X4 ?= data-x4
.PHONY: bench-world-x4
bench-world-x4: venv ## Generate the x4 world (4.8M open cases, ~120M records) in $(X4)
	$(BIN)/python -m features.world.bench --data-dir $(X4) --seed $(SEED) --scale x4

.PHONY: bench-spark-x4
bench-spark-x4: venv sysdeps ## Features + score on the x4 world, Spark and DuckDB -> $(X4)/reports/bench-spark.json (hours)
	@test -f $(X4)/world/manifest.json || $(MAKE) bench-world-x4
	$(BIN)/python -m serving.bench.spark --data-dir $(X4)

.PHONY: bench
bench: bench-world bench-features bench-train bench-score bench-serve bench-pages ## Run every full-scale benchmark (long: about an hour)

.PHONY: clean
clean: ## Remove generated data (data/), caches; keeps .venv and mlruns/
	rm -rf $(DATA) .pytest_cache .ruff_cache .mypy_cache .hypothesis
