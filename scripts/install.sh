#!/usr/bin/env bash
# Build the virtualenv from the lock (locks/dev.txt: exact versions, sha256 hashes,
# nothing resolved here), put the source roots on its path, and make sure
# redis-server, PostgreSQL's server (initdb, pg_ctl) and promtool (Debian's
# prometheus package: the alert-rule checks) are available.
#
# The venv is rebuilt from nothing whenever it is not a finished install of the
# current lock: a missing or different stamp means an interrupted install, an
# older lock or a venv made by hand, and pip is never asked to repair one.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
LOCK=${LOCK:-locks/dev.txt}
root=$(pwd)
stamp="$VENV/.lock-sha256"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; Tessera needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 11, 3) <= sys.version_info[:3] < (3, 12)))'; then
  echo "error: $PYTHON is $("$PYTHON" -V 2>&1); the lock is made for CPython 3.11.3 or newer 3.11" >&2
  exit 1
fi

want=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ -d "$VENV" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "rebuilding $VENV: it is not a finished install of $LOCK"
  rm -rf "$VENV"
fi
if [ ! -f "$stamp" ]; then
  "$PYTHON" -m venv "$VENV"
  # --no-deps: the lock already lists every package; --require-hashes: a file whose
  # hash is not in the lock is refused.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps -r "$LOCK"
  "$VENV/bin/python" scripts/lockcheck.py installed "$LOCK"
  echo "$want" > "$stamp"
fi
# The project itself is not built: its source roots go on the path instead.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$root/wire" "$root/services" "$root/operator" "$root/sdk" "$root/protos/gen" > "$site/tessera-src.pth"

# need COMMAND PACKAGE WHAT: install a Debian package with apt-get when its command is missing.
need() {
  if command -v "$1" >/dev/null 2>&1; then return; fi
  apt_install "$@"
}
# apt_install COMMAND PACKAGE WHAT: install the package as root, or say how to.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $2 ($3) with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  else
    echo "error: $1 not found ($3). Install it (Debian/Ubuntu: sudo apt-get install $2)" \
         "or put it on PATH, then run make again." >&2
    exit 1
  fi
}
need redis-server redis-server "the tests' and the demo's Redis"
# Debian keeps PostgreSQL's server programs off PATH, under /usr/lib/postgresql/<version>/bin.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  apt_install initdb postgresql "the tests' and the demo's PostgreSQL"
fi
need promtool prometheus "checks alert rules and metrics"
need chromium chromium "the console's browser tests"
