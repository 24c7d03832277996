"""What the fault-injection tests share: a flow on a temp root (config, environment, the run
command in process and with a crash point in a subprocess) and the checks every scenario reports:
runs failed, runs recovered, data lost, wrong models served, time to detection.

"Data lost" counts partitions (and bundle versions) that were complete before the fault and are
missing or fail their integrity check after it; "wrong models served" counts production pointers
that do not load as a complete, gate-promoted bundle (:func:`wrong_models_served`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from ml_core.config import load_config
from ml_core.registry.bundles import BundleStore
from ml_core.stages.windows import model_start
from ml_core.storage import CorruptPartitionError, verify_dir
from tests.conftest import REPO

#: The flow's settings in these tests: the windows the test session's code location was loaded
#: with (tests/conftest.py), a tiny training budget.
CONFIG = ('[source]\nkind = "synthetic"\nstart_date = "2026-01-01"\n'
          "[graph]\nwindow_days = 3\n"
          "[train]\ntrain_days = 2\nepochs = 1\nmax_steps_per_epoch = 20\nbatch_size = 512\ndim = 16\n")


def write_config(base: Path) -> Path:
    """``base/pipeline.toml``: :data:`CONFIG` with its storage root at ``base/data``."""
    cfg = base / "pipeline.toml"
    cfg.write_text(CONFIG + f'[storage]\nroot = "{base / "data"}"\n')
    return cfg


def first_model_day(cfg_path: Path) -> tuple[str, str, int]:
    """(the source's first day, the first day with a model partition (``stages.windows.model_start``),
    the number of days from one to the other, both included) of that config."""
    cfg = load_config(cfg_path)
    start, day = cfg.start_date, model_start(cfg)
    return start.isoformat(), day.isoformat(), (day - start).days + 1


def next_day(day: str, n: int = 1) -> str:
    from datetime import date

    return (date.fromisoformat(day) + timedelta(days=n)).isoformat()


def flow_env(base: Path) -> dict:
    """The environment of a run command on ``base`` (its config, its Dagster home)."""
    return {**os.environ, "MOGE_CONFIG": str(base / "pipeline.toml"), "DAGSTER_HOME": str(base / "dagster_home"),
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def copy_flow(src: Path, dst: Path) -> Path:
    """A copy of a flow's root (lake, registry, Dagster home) at ``dst``, its config pointing there."""
    for part in ("data", "dagster_home"):
        shutil.copytree(src / part, dst / part, symlinks=True)
    write_config(dst)
    return dst


def run_flow_here(base: Path, start: str, days: int, capsys=None) -> tuple[int, str, str]:
    """The run command (``orchestration.run_flow``) in this process on ``base``: (exit code, out, err)."""
    from orchestration.run_flow import main

    with pytest.MonkeyPatch.context() as mp:
        for k in ("MOGE_CONFIG", "DAGSTER_HOME"):
            mp.setenv(k, flow_env(base)[k])
        if capsys is not None:
            capsys.readouterr()
        rc = main(["--start", start, "--days", str(days)])
        out, err = capsys.readouterr() if capsys is not None else ("", "")
    return rc, out, err


def crash_run(base: Path, crash_at: str, start: str, days: int = 1, when: str = "publish",
              timeout_s: float = 300, extra: tuple[str, ...] = ()) -> float:
    """Start the run command on ``base`` with a crash point (:mod:`tests.reliability.crashpoint`)
    and the command's ``extra`` arguments (``--range``), SIGKILL it once the point is reached;
    returns the seconds it ran."""
    marker, log = base / "crashed", base / "crashed.log"
    env = {**flow_env(base), "MOGE_CRASH_AT": crash_at, "MOGE_CRASH_MARKER": str(marker), "MOGE_CRASH_WHEN": when}
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.crashpoint", "--start", start,
                                 "--days", str(days), *extra], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while not marker.exists():
            assert proc.poll() is None, f"the run command ended before {crash_at}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() - t0 < timeout_s, f"{crash_at} not reached in {timeout_s} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    return time.monotonic() - t0


def run_outcomes(instance, job: str, day: str) -> tuple[list[str], list[str]]:
    """The runs of ``job`` for partition ``day``: (ids of the failed ones, ids of the successful
    ones started after the first failure: the runs that recovered it)."""
    import dagster as dg

    records = sorted((r for r in instance.get_run_records() if r.dagster_run.job_name == job
                      and r.dagster_run.tags.get("dagster/partition") == day), key=lambda r: r.create_timestamp)
    failed = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    if not failed:
        return [], []
    recovered = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
                 and r.create_timestamp > failed[0].create_timestamp]
    return [r.dagster_run.run_id for r in failed], [r.dagster_run.run_id for r in recovered]


def hidden_entries(root: Path) -> list[Path]:
    """What writers left: hidden temp and set-aside directories and files."""
    return [p for p in root.rglob(".*") if p.name.startswith((".tmp-", ".old-"))]


def stored(root: Path) -> dict[str, Path]:
    """Every published partition and bundle version under ``root``: ``asset/ds=D`` or
    ``registry/<version>`` -> its directory."""
    out = {f"{p.parent.name}/{p.name}": p for p in (root / "lake").glob("*/ds=*") if p.is_dir()}
    out.update({f"registry/{p.name}": p for p in (root / "registry" / "versions").glob("*")
                if p.is_dir() and not p.name.startswith(".")})
    return out


def corrupt_entries(root: Path) -> list[str]:
    """The stored partitions and bundles under ``root`` that fail their integrity check."""
    bad = []
    for name, d in stored(root).items():
        try:
            verify_dir(d, name, "")
        except CorruptPartitionError:
            bad.append(name)
    return bad


def data_lost(before: dict[str, Path], root: Path) -> list[str]:
    """The entries of ``before`` (:func:`stored` before the fault) missing or corrupt now."""
    now = stored(root)
    return sorted({n for n in before if n not in now} | (set(corrupt_entries(root)) & set(before)))


def wrong_models_served(root: Path) -> list[str]:
    """Why what serving would load from ``root`` is wrong (empty when right): the production
    pointer must name a bundle a deployment promoted, and the scorer must load it (complete,
    unchanged). No pointer at all serves nothing, which is not a wrong model."""
    from ml_core.serving.scorer import Scorer

    store = BundleStore(root)
    prod = store.production()
    if prod is None:
        return []
    promoted = {d["version"] for d in store.decisions() if d.get("promoted")}
    gate = root / "lake" / "deployed_model" / f"ds={prod.get('partition')}" / "decision.json"
    if gate.is_file() and json.loads(gate.read_text()).get("promoted"):  # decided, killed before the log line
        promoted.add(json.loads(gate.read_text())["version"])
    problems = [] if prod["version"] in promoted else [f"{prod['version']} was never promoted by a decision"]
    try:
        scorer = Scorer.from_registry(root)
        if scorer.version != prod["version"]:
            problems.append(f"serving loaded {scorer.version}, the pointer names {prod['version']}")
    except Exception as e:  # any failure to load is a wrong (absent) model
        problems.append(f"serving cannot load {prod['version']}: {e}")
    return problems


def promote_by_hand(root: Path, day: str) -> str:
    """Make trained_model[day] production as an operator would by hand (the pointer "may be set by
    hand", ``stages.evaluation.reference_versions``), with a decision line saying so: the tests'
    tiny models do not pass the gate, and a fault must be shown to leave a served model alone."""
    import tempfile

    from ml_core.stages.deployment import assemble_bundle
    from ml_core.storage import Lake

    lake, store = Lake(root), BundleStore(root)
    version = f"{day}-{lake.version('trained_model', day)[:10]}"
    with tempfile.TemporaryDirectory(dir=root.parent) as t:
        assemble_bundle(lake, day, Path(t) / "bundle", version, metrics={})
        store.publish(Path(t) / "bundle", version)
    store.set_production(version, {"partition": day, "metrics": {}})
    store.record_decision({"partition": day, "version": version, "promoted": True, "reasons": ["promoted by hand"]})
    return version


def always_promote(candidate, references, *args, **kwargs):
    """The deployment gate replaced by one that promotes (the promotion is under test, not the gate)."""
    from ml_core.stages.gate import Decision

    return Decision(promote=True, reasons=["promoted by the test's gate"])


def report(record_property, scenario: str, *, failed: int, recovered: int, lost: list, wrong: list,
           detection_s: float | None, detected_by: str) -> None:
    """Record (for the suite's fault-injection table) and print a scenario's figures."""
    fig = {"scenario": scenario, "runs_failed": failed, "runs_recovered": recovered, "data_lost": len(lost),
           "wrong_models_served": len(wrong), "detection_s": None if detection_s is None else round(detection_s, 2),
           "detected_by": detected_by}
    record_property("fault", fig)
    print(f"\nFAULT {fig}")
