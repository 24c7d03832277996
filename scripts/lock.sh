#!/usr/bin/env bash
# Refresh requirements/lock.txt: resolve pyproject.toml's dependencies (+ the dev extra) afresh in
# a throw-away venv and pin every installed distribution, transitive ones included.
#
#   make lock        (then review `git diff requirements/lock.txt`, run `make test`, commit)
#
# Resolved for the interpreter that runs it: use CPython 3.11 on Linux x86_64, the platform the
# lock is for (the script refuses another Python minor). torch is installed first exactly as
# scripts/install.sh does ($TORCH_SPEC, default the CPU wheel torch==2.13.0) and is left out of the
# lock: install.sh owns the torch choice, so a user-brought CUDA build is never overridden. The
# lock is a pip constraints file: it pins versions without adding packages of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${LOCK_FILE:-requirements/lock.txt}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "the lock is for Python 3.11, found " + sys.version.split()[0])'

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check --quiet)
# shellcheck disable=SC2086
"${PIP[@]}" install ${TORCH_SPEC:-torch==2.13.0}
"${PIP[@]}" install --upgrade setuptools wheel  # the build backend, pinned too (install.sh builds without isolation)
"${PIP[@]}" install -e ".[dev]"

{
  echo "# Every distribution that \`pip install -e .[dev]\` brings, pinned (pip constraints file)."
  echo "# Resolved by scripts/lock.sh (make lock) on $("$VPY" -c 'import platform, sys; print(f"CPython {sys.version.split()[0]}, {platform.system()} {platform.machine()}")'), $(date -u +%Y-%m-%d)."
  echo "# torch is not here: scripts/install.sh installs it first (TORCH_SPEC, default torch==2.13.0)."
  "$VPY" -m pip freeze --all --exclude-editable | grep -viE '^(torch|pip)==' | LC_ALL=C sort -f
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT ($(grep -vc '^#' "$OUT") pins)"
