#!/usr/bin/env bash
# Fail clearly when the Python that builds the venv is older than 3.11 or lacks venv.
set -euo pipefail
py="${1:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: $py not found" >&2; echo "hint: install Python 3.11 or newer, or run make PYTHON=/path/to/python3.11" >&2; exit 1
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: affidavit needs Python 3.11 or newer; $py is $("$py" -V 2>&1)" >&2
  echo "hint: run make PYTHON=/path/to/python3.11" >&2; exit 1
fi
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "error: $py cannot create virtual environments" >&2
  echo "hint: as root: apt-get install -y python3-venv" >&2; exit 1
fi
