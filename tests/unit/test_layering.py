"""The shape of the codebase, checked: one-way layers, no private names across packages, small
modules and ruff clean (ml_core free of Dagster: test_no_dagster.py). docs/development.md "Architecture"
draws the same layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ML_CORE = REPO / "ml_core"
MAX_LINES = 400

#: Layers of ml_core, bottom first. A module may import its own layer and the layers below it,
#: never a layer above. Top-level modules and packages of ml_core are named without the prefix.
LAYERS: list[set[str]] = [
    # no ml_core imports but their own layer: typed builder (+ the registries of pluggable things), the flow's
    # catalogue of asset names, the lake (+ its integrity checks), metrics and plots, rates/ETA,
    # linear-time counting sorts, the stop a signal asks for
    {"typed", "catalog", "storage", "integrity", "eval", "progress", "sorting", "mixing", "stop"},
    # the one configuration system (a package: [source], [tuning], [registry], [train] distributed, [cf] and
    # [automation] in modules of their own)
    {"config"},
    {"data", "sampling"},  # raw events -> canonical events; negative-sampled samples
    {"node_features", "history", "graph"},  # node features; the users' window history; the user-item graph and the similarity graphs
    {"contracts"},  # what models, training and inference exchange: batches, feature specs, day contexts
    {"nn", "batching"},  # neural building blocks; batches with sampled subgraphs
    {"models"},  # the model zoo: contracts + nn, never training
    # a model on disk, the registries of bundles (local, MLflow) and their signatures (a package); predict /
    # evaluate; the sanity and CF scorers
    {"registry", "inference", "sanity", "cf"},
    {"train"},  # the one trainer and its extensions (optimizers, post-training steps)
    {"compare", "tuning", "preflight", "serving"},  # the zoo comparison; the hyper-parameter search; load-time checks; the model server
    {"stages"},  # one module per daily stage (what the Dagster assets call)
    {"cli"},  # the `moge` command
]


def _modules() -> list[Path]:
    return sorted(p for p in ML_CORE.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(path: Path) -> str:
    """The package (or top-level module) of ml_core that ``path`` belongs to."""
    rel = path.relative_to(ML_CORE).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` of every import of ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*base, mod] if mod else base)
            out.append((mod, [a.name for a in node.names], node.lineno))
    return out


def test_models_never_import_training():
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in (ML_CORE / "models").rglob("*.py")
           for mod, _, line in _imports(p) if mod == "ml_core.train" or mod.startswith("ml_core.train.")]
    assert not bad, bad


def test_layers_are_one_way():
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    units = {_unit(p) for p in _modules()} - {"__init__"}
    assert units <= set(rank), f"ml_core units with no layer: {sorted(units - set(rank))}"
    bad = []
    for p in _modules():
        me = _unit(p)
        if me == "__init__":
            continue
        for mod, _, line in _imports(p):
            parts = mod.split(".")
            if parts[0] != "ml_core" or len(parts) < 2:
                continue
            if rank[parts[1]] > rank[me]:
                bad.append(f"{p.relative_to(REPO)}:{line}: {me} (layer {rank[me]}) imports {mod} (layer {rank[parts[1]]})")
    assert not bad, "\n".join(bad)


def test_no_private_name_crosses_a_package():
    """``from ml_core.x.y import _name`` is allowed only inside package ``x``."""
    bad = []
    for root in (ML_CORE, REPO / "assets", REPO / "orchestration"):
        for p in root.rglob("*.py"):
            me = p.relative_to(REPO).parts[:2]
            for mod, names, line in _imports(p):
                parts = mod.split(".")
                if parts[0] not in ("ml_core", "assets", "orchestration"):
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private and tuple(parts[:2]) != tuple(x.removesuffix(".py") for x in me):
                    bad.append(f"{p.relative_to(REPO)}:{line}: {private} from {mod}")
    assert not bad, bad


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(REPO)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_ruff_is_clean():
    pytest.importorskip("ruff")  # installed by the dev extra; a skip fails under CI
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
