# vitamin-nas: one environment (.venv), made from nothing by `make install`; every target builds on it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint bench

$(BIN)/vitamin-nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/vitamin-nas

quickstart: install
	$(BIN)/vitamin-nas quickstart

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/cost_model.py
