# affidavit: the two commands are `make demo` and `make test`; each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.affidavit-installed

.PHONY: setup system-deps sanitizer-deps demo demo-serve test test-pure test-sanitize lint bench clean

NPM_STAMP := node_modules/.affidavit-installed

setup: system-deps $(STAMP) $(NPM_STAMP)

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

# the test-only npm packages (oidc-provider, which the OIDC tests run under node), exactly as
# package-lock.json pins them, into this repository's node_modules: again whenever the
# lockfile is newer than the last install
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NPM_STAMP)

demo: setup
	$(BIN)/affidavit demo

# the demo, then the server on its home with demo-only accounts (Ctrl-C stops it)
demo-serve: setup
	$(BIN)/affidavit demo --serve

# the suite on TEST_WORKERS processes (pytest-xdist; a test file's tests stay in one process,
# with its module's servers): most of its time is spent waiting on servers and TOTP steps,
# which overlaps well even on 2 cores. TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= 3

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# the format, fingerprint and verify tests on the pure-Python twins (AFFIDAVIT_PURE_PYTHON=1)
test-pure: setup
	PY=$(BIN)/python bash scripts/test-pure-python.sh

# the C modules built with ASan + UBSan (into build/sanitize), their tests and the sample files
test-sanitize: setup sanitizer-deps
	PY=$(BIN)/python bash scripts/test-sanitizers.sh

# gcc and its sanitizer runtimes, installed like system-deps
sanitizer-deps:
	@bash scripts/system-deps.sh sanitizers

lint: setup
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

# every benchmark against its named reference (restic for verify: installed like system-deps)
bench: setup
	@bash scripts/system-deps.sh bench
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) node_modules build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f src/affidavit/formats/rdb/_native*.so src/affidavit/formats/bson_codec/_native*.so \
	      src/affidavit/fingerprint/_native*.so
