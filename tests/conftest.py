"""Shared fixtures (small configs on temp lakes, the real-data location) and two suite rules:

* **Kinds.** Every test is marked by its folder: ``unit`` (tests/unit: ml_core alone, no Dagster
  process, the fast inner loop of ``make test-fast``), ``assets`` (tests/assets: the Dagster
  definitions and assets in process), ``reliability`` (tests/reliability: bad input, crashes) and
  ``e2e`` (tests/e2e: ``dagster dev``, the run command, a browser, the real logs). ``make test``
  runs them all.
* **No skip in CI.** When ``CI`` is set (CI runs the suite next to ../shared, with Chromium
  installed by ``make test``), a test that would skip fails instead, with the skip's reason:
  a missing browser or data set is a broken CI machine, not a pass.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# A small, fast budget: the flow's code paths with a few optimiser steps.
FAST = ["graph.window_days=3", "train.train_days=2", "train.epochs=1", "train.max_steps_per_epoch=40",
        "train.batch_size=512", "train.dim=16"]

# The code location reads its windows from $MOGE_CONFIG when it loads: point it at the test
# settings before anything imports the Definitions (storage roots are overridden per test).
_cfg_file = Path(tempfile.mkdtemp(prefix="moge-test-")) / "pipeline.toml"
_cfg_file.write_text(
    '[source]\nkind = "synthetic"\nstart_date = "2026-01-01"\n'
    "[graph]\nwindow_days = 3\n[train]\ntrain_days = 2\n"
    f'[storage]\nroot = "{_cfg_file.parent / "data"}"\n'
)
os.environ["MOGE_CONFIG"] = str(_cfg_file)

from ml_core.config import load_config  # noqa: E402 - after $MOGE_CONFIG is set
from ml_core.stages.data_day import run_data_days  # noqa: E402 - after $MOGE_CONFIG is set
from ml_core.stages.windows import window  # noqa: E402 - after $MOGE_CONFIG is set
from ml_core.storage import Lake  # noqa: E402 - after $MOGE_CONFIG is set

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TAOBAO_HEAD = SHARED_DATA / "taobao-userbehavior" / "UserBehavior_head_84475.csv"

KINDS = ("unit", "assets", "reliability", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(KINDS)}}}/, not tests/{kind}/")
        item.add_marker(getattr(pytest.mark, kind))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


def pytest_terminal_summary(terminalreporter):
    """The model-zoo margins (tests/unit/models/test_zoo.py): each model's GAUC minus its threshold, the
    smallest over the data seeds run, per task."""
    margins: dict[str, dict[str, list[float]]] = {}
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) != "call":
                continue
            for key, value in getattr(rep, "user_properties", ()):
                if isinstance(key, str) and key.startswith("zoo_margin/"):
                    _, model, _seed, task = key.split("/")
                    margins.setdefault(model, {}).setdefault(task, []).append(value)
    if not margins:
        return
    tasks = sorted({t for m in margins.values() for t in m})
    n_seeds = max(len(v) for m in margins.values() for v in m.values())
    terminalreporter.write_sep("-", f"model zoo margins: GAUC - threshold, smallest over {n_seeds} data seed(s)")
    for model in sorted(margins, key=lambda m: min(min(v) for v in margins[m].values())):
        cells = "  ".join(f"{t} {min(margins[model][t]):+.3f}" for t in tasks if t in margins[model])
        terminalreporter.write_line(f"{model:22s} {cells}")


def make_config(root: Path, *overrides: str):
    return load_config(None, [f'storage.root="{root}"', *FAST, *overrides])


def materialize_day(assets, day: str, **kwargs):
    """``dagster.materialize`` of ``assets`` (and their asset checks) for day ``day``, once per
    partitions definition: the data assets', then the model assets' (which start later).
    Assets whose partitions do not include ``day`` are left out. Returns the results."""
    import dagster as dg

    groups: dict = {}
    for a in assets:
        if isinstance(a, dg.AssetsDefinition) and not isinstance(a, dg.AssetChecksDefinition) \
                and a.partitions_def.has_partition_key(day):
            groups.setdefault(a.partitions_def, set()).update(a.keys)
    ordered = sorted(groups.items(), key=lambda kv: kv[0].start)  # data first: the model assets read them
    return [dg.materialize(assets, selection=dg.AssetSelection.assets(*keys), partition_key=day, **kwargs)
            for _, keys in ordered]


def materialize_range(assets, first: str, last: str, **kwargs):
    """``dagster.materialize`` of ``assets`` (and their asset checks) over the days ``first`` ..
    ``last`` as partition ranges, one ranged run per partitions definition (data first), each
    from its own first day in the range. Returns the results."""
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    groups: dict = {}
    for a in assets:
        if isinstance(a, dg.AssetsDefinition) and not isinstance(a, dg.AssetChecksDefinition) and a.is_materializable \
                and a.partitions_def is not None and a.backfill_policy is not None:
            groups.setdefault(a.partitions_def, set()).update(a.keys)
    out, tags = [], kwargs.pop("tags", {})
    for pd, keys in sorted(groups.items(), key=lambda kv: kv[0].start):
        days = [d for d in pd.get_partition_keys() if first <= d <= last]
        if days:
            out.append(dg.materialize(assets, selection=dg.AssetSelection.assets(*keys), **kwargs, tags={
                **tags, ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}))
    return out


def build_data_days(cfg, lake: Lake, days: list[str]) -> None:
    """Materialize the data stages (logs .. samples) of ``days`` in order."""
    run_data_days(cfg, lake, days)


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory):
    """Five days of the default synthetic source through the data stages (shared, read-only)."""
    root = tmp_path_factory.mktemp("lake")
    cfg = make_config(root)
    lake = Lake(root)
    days = window("2026-01-05", -4, 0)
    build_data_days(cfg, lake, days)
    return cfg, lake, days


@pytest.fixture(scope="session")
def served_deployments(tmp_path_factory):
    """``get(model)``: that model trained, evaluated and published as production on 3 small
    synthetic days (tests/unit/serving/deployed.py), built once per session; shared by the
    serving tests and the hostile-request suite of tests/reliability (read-only: copy it)."""
    import shutil

    from tests.unit.serving.deployed import DAYS, MODEL_OVERRIDES, OVERRIDES, Deployment, deploy

    data_root = tmp_path_factory.mktemp("serving-data")
    build_data_days(make_config(data_root, *OVERRIDES), Lake(data_root), DAYS)
    cache: dict = {}

    def get(model: str) -> Deployment:
        if model not in cache:
            root = tmp_path_factory.mktemp(f"flow-{model}")
            shutil.copytree(data_root / "lake", root / "lake")
            cfg = make_config(root, *OVERRIDES, f'train.model="{model}"', *MODEL_OVERRIDES.get(model, []))
            decision = deploy(cfg, root)
            serve_root = tmp_path_factory.mktemp(f"serve-{model}")
            shutil.copytree(root / "registry", serve_root / "registry")
            cache[model] = Deployment(model, root, serve_root, cfg, decision["version"])
        return cache[model]

    return get
