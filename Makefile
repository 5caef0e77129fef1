# Everything a fresh clone needs: `make demo` and `make test` bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo test test-fast mutate lint bench chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/batchrunner run manifests/demo.csv --simulate --out outputs/videos --ledger outputs/batchrunner.db

# The gallery's browser test drives Debian's chromium (Playwright never downloads a browser);
# installed here when missing (needs root, as in CI: about a minute on a fresh machine).
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

chromium: $(CHROMIUM)

test: $(STAMP) $(CHROMIUM)
	BATCHRUNNER_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not chaos"

# Break each README guarantee in a scratch copy and check its tests notice (a tool, not CI).
mutate: $(STAMP)
	$(BIN)/python -m tests.mutate

lint: $(STAMP)
	$(BIN)/ruff check batchrunner tests
	$(BIN)/ruff format --check batchrunner tests
	$(BIN)/mypy

bench: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m tests.bench.side_by_side
	BATCHRUNNER_CHROMIUM=$(CHROMIUM) $(BIN)/python -m tests.bench.bench_gallery

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
