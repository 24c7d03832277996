#!/usr/bin/env bash
# Install the project into ./.venv (or $VENV).
#
# torch: an existing torch >= 2.4 in the venv is kept (bring your CUDA build: install it into the
# venv first). Otherwise $TORCH_SPEC is installed, default "torch==2.13.0", which on these CPU
# machines is a CPU wheel lying on local disk (an unpinned torch would pull a multi-GB CUDA build).
# Elsewhere, e.g.:  TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" make run
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"

have_torch() {
  "$VPY" - <<'PYCODE' 2>/dev/null
import sys, torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PYCODE
}

if ! have_torch; then
  # shellcheck disable=SC2086
  "$VPY" -m pip install --quiet --disable-pip-version-check ${TORCH_SPEC:-torch==2.13.0}
fi
"$VPY" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
"$VPY" -c 'import torch, torch_geometric, dagster, polars, duckdb; print(f"installed: torch {torch.__version__} (cuda={torch.cuda.is_available()}), torch_geometric {torch_geometric.__version__}, dagster {dagster.__version__}, polars {polars.__version__}, duckdb {duckdb.__version__}")'
