#!/usr/bin/env bash
# Regenerate locks/dev.txt (runtime + dev) and locks/runtime.txt (runtime only)
# from pyproject.toml, with exact versions and sha256 hashes. Nothing else in the
# project resolves versions: `make install` and the Dockerfile install these files.
#   UPGRADE=1 bash scripts/lock.sh           every package to its newest allowed release
#   UPGRADE_PACKAGE=numpy bash scripts/lock.sh   one package (names separated by spaces)
set -euo pipefail
UV=${UV:-.venv/bin/uv}
# The target: CPython 3.11 (>= 3.11.3) on Linux. The hashes cover every published
# file of each pinned version, so the same lock installs on x86_64 and aarch64.
target=(--python-version 3.11.3 --python-platform linux --generate-hashes --quiet)
up=()
[ "${UPGRADE:-0}" = 1 ] && up+=(--upgrade)
for p in ${UPGRADE_PACKAGE:-}; do up+=(--upgrade-package "$p"); done

# Keep the versions already locked unless asked to upgrade (uv reads the output file).
"$UV" pip compile pyproject.toml --extra dev "${target[@]}" "${up[@]}" \
  --custom-compile-command "make lock" -o locks/dev.txt
# The runtime set is the dev set's subset: same versions, constrained by it.
"$UV" pip compile pyproject.toml "${target[@]}" -c locks/dev.txt \
  --custom-compile-command "make lock" -o locks/runtime.txt
