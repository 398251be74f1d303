# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip -q
CONSTRAINTS := .ci/constraints.txt

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) benchmarks/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c $(CONSTRAINTS) torch
	$(PIP) install -c $(CONSTRAINTS) -e ".[test]"
	$(PIP) install --no-deps -c $(CONSTRAINTS) -r benchmarks/requirements.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/lipnets demo

test: setup
	$(VENV)/bin/python -m pytest -n 2 -q

.PHONY: setup demo test
