#!/usr/bin/env bash
# CI stage: the C modules (every Extension source in setup.py) built with AddressSanitizer and
# UndefinedBehaviorSanitizer, then their tests and the genuine sample files under
# ../shared/formats run through them. Any sanitizer report fails the stage.
#
# The normal build in src/ is left alone: the package is copied to build/sanitize/tree, the
# sanitized modules are compiled into that copy, and the copy goes first on PYTHONPATH
# (scripts/sanitized.py prints each module's file and fails unless it is the copy's).
#
# The build is stricter than setup.py's: -O1 -g for exact reports, and neither -fwrapv nor
# -DNDEBUG (which setup.py takes from Python's own CFLAGS), so a signed overflow is reported.
#
# Runtime settings, and why:
#   LD_PRELOAD        libasan (and libubsan): the interpreter is not instrumented, so the
#                     ASan runtime must be loaded before anything else
#   PYTHONMALLOC=malloc  every Python allocation through malloc, where ASan puts red zones
#                     (pymalloc would hide an over-read of a small bytes object in its arena)
#   detect_leaks=0    the interpreter's own allocations (interned objects, caches, modules
#                     never unloaded) make LeakSanitizer's exit report noise, not findings
#   halt_on_error=1, abort_on_error=1 (and -fno-sanitize-recover): the first report aborts
#                     the process (SIGABRT, so pytest's faulthandler also prints the Python
#                     stack of the test), and the stage fails
#
# Usage: scripts/test-sanitizers.sh [PYTEST ARGS...]   (PY=path/to/python, default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PY:-.venv/bin/python}"
cc=gcc
out=build/sanitize
tree="$out/tree"
flags=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g
       -Wall -Wextra -Wno-unused-parameter)

runtime() { # the full path of a sanitizer runtime, or nothing
  local lib
  lib="$("$cc" -print-file-name="$1" 2>/dev/null)" || return 0
  [ "$lib" != "$1" ] && [ -e "$lib" ] && echo "$lib"
  return 0
}
asan="$(runtime libasan.so)"
ubsan="$(runtime libubsan.so)"
if [ -z "$asan" ] || [ -z "$ubsan" ]; then
  echo "error: $cc has no ASan/UBSan runtime (libasan.so, libubsan.so)" >&2
  echo "hint: run as root: bash scripts/system-deps.sh sanitizers" >&2
  exit 1
fi

# a fresh copy of the package, without the normal build's modules
rm -rf "$tree"
mkdir -p "$tree"
cp -R src/affidavit "$tree/"
find "$tree" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +

include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
suffix="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
if [ ! -e "$include/Python.h" ]; then
  echo "error: no Python headers in $include (Python.h)" >&2
  echo "hint: for Debian's python3, as root: apt-get install -y python3-dev" >&2
  exit 1
fi
mapfile -t sources < <(grep -o '"src/affidavit/[^"]*\.c"' setup.py | tr -d '"')
if [ ${#sources[@]} -eq 0 ]; then
  echo "error: no C sources found in setup.py" >&2
  exit 1
fi
for source in "${sources[@]}"; do
  rel="${source#src/}"
  echo "building ${rel%.c}$suffix (sanitized)"
  "$cc" -shared -fPIC "${flags[@]}" -I"$include" -o "$tree/${rel%.c}$suffix" "$tree/$rel"
done

export LD_PRELOAD="$asan $ubsan${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONMALLOC=malloc
export PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
unset AFFIDAVIT_PURE_PYTHON

"$py" scripts/sanitized.py --tree "$tree" corpus

# --capture=sys: a sanitizer writes its report to file descriptor 2 and aborts; pytest's
# default capture of that descriptor would take the report down with the process
"$py" scripts/sanitized.py --tree "$tree" pytest -p no:cacheprovider --capture=sys \
  tests/unit/formats/test_rdb_native.py \
  tests/unit/formats/test_bson_native.py \
  tests/unit/formats/test_rdb_hostile.py \
  tests/unit/formats/test_hostile_input.py \
  tests/unit/formats/test_mongodump_readers.py \
  tests/unit/test_bson_validate_native.py \
  tests/unit/fingerprint \
  "$@"
echo "sanitizer stage: no report"
