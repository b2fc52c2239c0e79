#!/usr/bin/env bash
# Install the Debian packages affidavit's demo and tests need (redis-server, redis-tools, age,
# postgresql, nodejs and npm, chromium), when they are missing.
# As root: apt-get installs them. Otherwise: say exactly what to run, and fail.
# `system-deps.sh bench` also installs the benchmarks' named references (restic, for verify).
# `system-deps.sh sanitizers` also checks what scripts/test-sanitizers.sh needs: gcc with its
# AddressSanitizer and UndefinedBehaviorSanitizer runtimes (libasan, libubsan; on Debian they
# come with gcc, through libgcc-N-dev).
set -euo pipefail

# command -> Debian package
declare -A NEEDED=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [age]=age
  [node]=nodejs  # the OIDC tests' OpenID provider (oidc-provider from npm, `make setup`)
  [npm]=npm
  [chromium]=chromium  # the web pages' browser tests (Playwright drives /usr/bin/chromium)
)

if [ "${1:-}" = sanitizers ]; then
  NEEDED[gcc]=gcc
fi
if [ "${1:-}" = bench ]; then
  NEEDED[restic]=restic
fi

missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
# PostgreSQL (the catalog tests' server): Debian keeps initdb and postgres off PATH, in
# /usr/lib/postgresql/N/bin, where affidavit.scratch.postgres_server finds them
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
if [ "${1:-}" = sanitizers ] && command -v gcc >/dev/null 2>&1; then
  for lib in libasan.so libubsan.so; do
    path="$(gcc -print-file-name="$lib")"
    if [ "$path" = "$lib" ] || [ ! -e "$path" ]; then
      missing+=("libgcc-$(gcc -dumpversion | cut -d. -f1)-dev")
    fi
  done
fi
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing system packages: ${missing[*]}" >&2
  echo "hint: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing system packages ${missing[*]} and no apt-get to install them" >&2
  echo "hint: install them with your system's package manager" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system redis and PostgreSQL on install; affidavit starts its own servers,
# so stop them
if command -v service >/dev/null 2>&1; then
  service redis-server stop >/dev/null 2>&1 || true
  service postgresql stop >/dev/null 2>&1 || true
fi
