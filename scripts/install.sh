#!/usr/bin/env bash
# Create the virtualenv, install the dependencies declared in pyproject.toml, put
# the source roots on the venv's path, and make sure a redis-server is available.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
root=$(pwd)

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; Tessera needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# Dependencies come from pyproject.toml ([project] + the dev extra); the project
# itself is not built: see the .pth file below.
mapfile -t deps < <("$VENV/bin/python" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(*p["dependencies"], *p["optional-dependencies"]["dev"], sep="\n")
PY
)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${deps[@]}"

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$root/services" "$root/operator" "$root/sdk" "$root/protos/gen" > "$site/tessera-src.pth"

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "error: redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install redis-server;" \
         "macOS: brew install redis) or put it on PATH, then run make again." >&2
    exit 1
  fi
fi
