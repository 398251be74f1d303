# The README's commands: `make demo` and `make test`; `make check` is what CI runs. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q
CONSTRAINTS := .ci/constraints.txt
SOURCES := src tests benchmarks examples

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) benchmarks/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c $(CONSTRAINTS) torch
	$(PIP) install -c $(CONSTRAINTS) -e ".[dev]"
	$(PIP) install --no-deps -c $(CONSTRAINTS) -r benchmarks/requirements.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/lipnets demo

# The whole suite, slow tests included (what CI runs).
test: setup
	$(BIN)/python -m pytest -n 2 -q

# The fast lane for development: skips tests marked slow.
test-fast: setup
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

# The soundness fuzzer, long run: random layers and models in random states against exact constants.
# It prints its seed first; rerun a failure with `make fuzz SEED=<seed>`. CI runs a short fixed-seed run.
FUZZ_CONFIGURATIONS ?= 3000
fuzz: setup
	$(BIN)/python tests/fuzz.py --configurations $(FUZZ_CONFIGURATIONS) $(if $(SEED),--seed $(SEED),)

# Lint, format, types and the import contract between the floors.
lint: setup
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

# The documentation site, built in strict mode (broken links and references fail).
docs: setup
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site

check: lint docs test

.PHONY: setup demo test test-fast fuzz lint docs check
