#!/usr/bin/env bash
# Install the project into ./.venv (or $VENV) at the versions pinned in requirements/lock.txt.
#
#   scripts/install.sh             what `make run` uses
#   scripts/install.sh --browser   what `make test` uses: also Chromium for the UI test
#
# torch: an existing torch >= 2.6 in the venv is kept (older ones: CVE-2025-32434) (bring your CUDA build: install it into the
# venv first). Otherwise $TORCH_SPEC is installed, default "torch==2.13.0", which on these CPU
# machines is a CPU wheel lying on local disk (an unpinned torch would pull a multi-GB CUDA build).
# Elsewhere, e.g.:  TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" make run
# Everything else is installed from the hashed lock (refresh it with `make lock`) in hash-checking
# mode: `pip install --require-hashes -r requirements/lock.txt` installs exactly the locked versions
# and refuses any file whose sha256 the lock does not list, and any dependency the lock lacks.
# torch cannot be in that call (its build is the user's choice, so the lock has no hash for it):
# it is installed before, in its own pip call. The project itself is then installed editable
# with --no-deps (a local directory has no hash; its dependencies all came from the lock), and
# scripts/check_lock.py verifies the venv against the lock.
#
# --browser: the e2e test screenshots the Dagster UI in headless Chromium. When no Chromium is on
# the machine and we may install system packages (root with apt-get, as in CI), it is installed
# from Debian's packages; otherwise a warning says the UI test will skip (or fail when CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
LOCK="requirements/lock.txt"
BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --browser) BROWSER=1 ;;
    *) echo "usage: $0 [--browser]" >&2; exit 2 ;;
  esac
done

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --quiet --disable-pip-version-check)

have_torch() {
  "$VPY" - <<'PYCODE' 2>/dev/null
import sys, torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 6) else 1)
PYCODE
}

if ! have_torch; then
  # shellcheck disable=SC2086
  "${PIP[@]}" ${TORCH_SPEC:-torch==2.13.0}
fi
# Every locked distribution (the build backend setuptools + wheel included), hash-checked; then the
# project built with that backend (no isolated build env that would pull the newest setuptools).
"${PIP[@]}" --require-hashes -r "$LOCK"
"${PIP[@]}" --no-build-isolation --no-deps -e .
"$VPY" scripts/check_lock.py "$LOCK"
"$VPY" -c 'import torch, torch_geometric, dagster, polars, duckdb; print(f"installed: torch {torch.__version__} (cuda={torch.cuda.is_available()}), torch_geometric {torch_geometric.__version__}, dagster {dagster.__version__}, polars {polars.__version__}, duckdb {duckdb.__version__}")'

if [ "$BROWSER" = 1 ]; then
  if "$VPY" scripts/screenshot_ui.py --find >/dev/null 2>&1; then
    :
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Chromium from the Debian packages (for the UI test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "warning: no Chromium, and no permission to install it (apt-get install chromium as root):" \
         "the UI screenshot test will skip, or fail when CI is set" >&2
  fi
  echo "chromium: $("$VPY" scripts/screenshot_ui.py --find || true)"
fi
