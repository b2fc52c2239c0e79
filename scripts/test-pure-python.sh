#!/usr/bin/env bash
# CI stage: the format, fingerprint and verify tests with AFFIDAVIT_PURE_PYTHON=1, so that the
# pure-Python twins of the C modules (formats/rdb, formats/bson_codec, fingerprint) run
# everywhere the compiled ones normally do, not only where a test switches them.
#
# Tests that exist only for a compiled module skip (they are marked "not built or switched
# off"); tests/unit/test_bson_validate_native.py and tests/integration/test_rdb_native_real.py
# are left out because every test in them is such a test.
#
# Usage: scripts/test-pure-python.sh [PYTEST ARGS...]   (PY=path/to/python, default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PY:-.venv/bin/python}"

export AFFIDAVIT_PURE_PYTHON=1

# The switch is read once, when each module is imported (the `home` fixture later clears
# AFFIDAVIT_* from the environment, which changes nothing for modules already loaded); make
# sure it took, so that a renamed switch cannot turn this stage into a copy of `make test`.
"$py" - <<'EOF'
import importlib
import sys

for name in (
    "affidavit.formats.rdb",
    "affidavit.formats.bson_codec",
    "affidavit.fingerprint.index",
    "affidavit.fingerprint.accumulator",
    "affidavit.services.fingerprint",
    "affidavit.services.verify",
):
    importlib.import_module(name)
loaded = sorted(name for name in sys.modules if name.rsplit(".", 1)[-1] == "_native")
if loaded:
    raise SystemExit(f"error: compiled modules loaded with AFFIDAVIT_PURE_PYTHON=1: {loaded}")
print("pure-Python stage: no compiled module is loaded")
EOF

exec "$py" -m pytest -p no:cacheprovider \
  tests/unit/formats \
  tests/unit/fingerprint \
  tests/unit/pinned \
  tests/e2e/test_fingerprint_cli.py \
  tests/e2e/test_backup_ingest_genuine.py \
  tests/e2e/test_ingest_verify_processes.py \
  tests/e2e/test_verify_cli.py \
  tests/integration/test_fingerprint_roundtrip.py \
  tests/integration/test_redis_rdb_stream.py \
  tests/integration/test_redis_snapshot_reads.py \
  tests/integration/test_verify_tamper.py \
  "$@"
