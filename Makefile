# affidavit: the two commands are `make demo` and `make test`; each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.affidavit-installed

.PHONY: setup system-deps demo test lint bench clean

setup: system-deps $(STAMP)

# Debian packages the demo and the tests use (redis-server, ...): installed when missing
# and running as root, else a clear message saying what to install.
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml setup.py src/affidavit/formats/rdb/_native.c \
          src/affidavit/formats/bson_codec/_native.c src/affidavit/formats/_sha256_evp.h \
          src/affidavit/fingerprint/_native.c
	@bash scripts/check-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/affidavit demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f src/affidavit/formats/rdb/_native*.so src/affidavit/formats/bson_codec/_native*.so \
	      src/affidavit/fingerprint/_native*.so
