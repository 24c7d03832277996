#!/usr/bin/env bash
# Refresh requirements/lock.txt, the hashed lock: every distribution `pip install -e .[dev]` brings
# (transitive ones included), pinned to one version, with the sha256 of every file PyPI has for
# that version, so that `pip install --require-hashes -r requirements/lock.txt` installs exactly
# those bytes or nothing (scripts/install.sh does).
#
#   make lock                 resolve everything afresh (newest versions within pyproject's ranges)
#   scripts/lock.sh --keep    keep the versions the lock has, resolve only what is new (a dependency
#                             added to pyproject.toml), hash again
#
# then review `git diff requirements/lock.txt`, run `make test` (it audits the lock first: scripts/audit_lock.sh), commit.
#
# Resolved for the interpreter that runs it: use CPython 3.11 on Linux x86_64, the platform the
# lock is for (the script refuses another Python minor). torch is installed first exactly as
# scripts/install.sh does ($TORCH_SPEC, default the CPU wheel torch==2.13.0) and is left out of the
# lock: install.sh owns the torch choice, so a user-brought CUDA build is never overridden.
# Steps: (1) install the project into a throw-away venv, (2) freeze the versions it got, (3) let
# pip-tools' pip-compile write those exact pins with their hashes (`--generate-hashes`: it asks the
# index for each release's files; pip-tools is installed after the freeze, so it is not locked).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${LOCK_FILE:-requirements/lock.txt}"
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
  esac
done
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "the lock is for Python 3.11, found " + sys.version.split()[0])'

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check --quiet)
KEEP_PINS=()
if [ "$KEEP" = 1 ]; then
  # the lock's pins as constraints (names and versions only: a constraints file takes no hashes)
  "$VPY" scripts/check_lock.py --pins "$OUT" > "$TMP/keep.txt"
  KEEP_PINS=(-c "$TMP/keep.txt")
fi
# shellcheck disable=SC2086
"${PIP[@]}" install ${TORCH_SPEC:-torch==2.13.0}
"${PIP[@]}" install "${KEEP_PINS[@]}" --upgrade setuptools wheel  # the build backend, locked too (install.sh builds without isolation)
"${PIP[@]}" install "${KEEP_PINS[@]}" -e ".[dev]"
"$VPY" -m pip freeze --all --exclude-editable | grep -viE '^(torch|pip)==' | LC_ALL=C sort -f > "$TMP/pins.in"

"${PIP[@]}" install pip-tools
ENVIRONMENT="$("$VPY" -c 'import platform, sys; print(f"CPython {sys.version.split()[0]}, {platform.system()} {platform.machine()}")')"
# pip-compile resolves the frozen pins (a closed set: nothing there needs torch) and adds the hashes
"$TMP/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --no-header --no-annotate --no-strip-extras \
  --no-emit-index-url --no-emit-find-links --output-file "$TMP/lock.txt" "$TMP/pins.in"
"$VPY" scripts/check_lock.py --add-base-pins "$TMP/lock.txt"  # uvicorn==X beside uvicorn[standard]==X (pip needs both)
{
  echo "# Every distribution that \`pip install -e .[dev]\` brings, pinned, with the sha256 of each of its files:"
  echo "# pip install --require-hashes -r requirements/lock.txt (scripts/install.sh) installs these bytes or nothing."
  echo "# Resolved by scripts/lock.sh (make lock) on $ENVIRONMENT, $(date -u +%Y-%m-%d)."
  echo "# torch is not here: scripts/install.sh installs it first (TORCH_SPEC, default torch==2.13.0)."
  grep -v '^#' "$TMP/lock.txt"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT ($(grep -cE '^[A-Za-z0-9]' "$OUT") pins)"
