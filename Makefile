# Everything a fresh clone needs: `make demo` and `make test` bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast mutate lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/batchrunner run manifests/demo.csv --simulate --out outputs --ledger outputs/batchrunner.db

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not chaos"

# Break each README guarantee in a scratch copy and check its tests notice (a tool, not CI).
mutate: $(STAMP)
	$(BIN)/python -m tests.mutate

lint: $(STAMP)
	$(BIN)/ruff check batchrunner tests
	$(BIN)/ruff format --check batchrunner tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m tests.bench.side_by_side

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
