"""Fault injection 5: the deployment killed in the middle of a promotion.

Production serves day D's bundle. Day D+1's deployment decision promotes its candidate (the
gate is replaced by one that promotes: the promotion is under test) and is SIGKILLed at one of
the promotion's moments (:data:`tests.reliability.crashpoint.PROMOTION_POINTS`): while its bundle
is copied into the store, after the copy and before the pointer moves, with the new pointer
written beside ``production.json`` but not renamed over it, and after the pointer moved but
before the decision is logged. At each, the pointer names a complete bundle that serving loads
(the old or the new one, never a partial one), and the next deployment run promotes D+1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ml_core.config import load_config
from ml_core.registry.bundles import BundleStore
from ml_core.stages.deployment import run_deployed_model
from ml_core.storage import Lake, sweep_stale_writes
from tests.conftest import REPO
from tests.reliability.crashpoint import PROMOTION_POINTS
from tests.reliability.faults import (
    always_promote,
    copy_flow,
    corrupt_entries,
    data_lost,
    flow_env,
    hidden_entries,
    next_day,
    report,
    stored,
    wrong_models_served,
)

DEPLOY = """
import sys
from pathlib import Path
from tests.reliability.crashpoint import install
from tests.reliability.faults import always_promote
import ml_core.stages.deployment as deployment
from ml_core.config import load_config
from ml_core.storage import Lake
install("registry", sys.argv[2], Path(sys.argv[3]))
deployment.gate = always_promote
cfg = load_config(sys.argv[1])
deployment.run_deployed_model(cfg, Lake(cfg.storage.root), sys.argv[4])
"""


@pytest.mark.slow  # the shared flow takes minutes to build; each case ~40-60 s
@pytest.mark.parametrize("point", PROMOTION_POINTS)
def test_promotion_killed(flow, tmp_path, monkeypatch, record_property, point):
    base, day = flow
    root = copy_flow(base, tmp_path) / "data"
    cfg, store, new_day = load_config(tmp_path / "pipeline.toml"), BundleStore(root), next_day(day)
    old = store.production()["version"]
    before = stored(root)
    marker = tmp_path / "crashed"
    proc = subprocess.Popen([sys.executable, "-c", DEPLOY, str(tmp_path / "pipeline.toml"), point, str(marker),
                             new_day], cwd=REPO, env=flow_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            assert time.monotonic() - t0 < 300, f"{point} not reached in 300 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)

    new = f"{new_day}-{Lake(root).version('trained_model', new_day)[:10]}"
    serving = store.production()["version"]
    expected = new if point == "before_decision" else old  # the pointer moved only in the last case
    assert serving == expected, (point, serving)
    wrong_at_fault = wrong_models_served(root)
    assert wrong_at_fault == [] and data_lost(before, root) == [] and corrupt_entries(root) == []
    if point in ("mid_publish", "mid_pointer"):
        assert hidden_entries(root), "the killed promotion left its temp copy"

    t0 = time.perf_counter()
    swept = sweep_stale_writes(root)  # what the next run command and the crash_recovery sensor do first
    detection = time.perf_counter() - t0
    assert hidden_entries(root) == [] and len(swept) == (1 if point in ("mid_publish", "mid_pointer") else 0), swept

    monkeypatch.setattr("ml_core.stages.deployment.gate", always_promote)
    result = run_deployed_model(cfg, Lake(root), new_day)  # the next deployment run of D+1
    assert result.promoted and result.version == new and store.production()["version"] == new
    assert [d["version"] for d in store.decisions() if d.get("promoted")][-1] == new
    if point == "before_decision":  # the promotion the pointer carried was logged first, as recovered
        assert [d["version"] for d in store.decisions() if d.get("recovered")] == [new]
    lost, wrong = data_lost(before, root), wrong_models_served(root)
    assert lost == [] and wrong == [] and corrupt_entries(root) == []
    report(record_property, f"SIGKILL in a promotion: {point.replace('_', ' ')} (serving {'new' if expected == new else 'old'})",
           failed=1, recovered=1, lost=lost, wrong=wrong_at_fault + wrong, detection_s=detection,
           detected_by="leftovers swept at the next start" if swept else "nothing left to detect")


def test_a_torn_decision_line_does_not_block_later_deployments(tmp_path):
    """An append to decisions.jsonl cut short (killed mid-write, disk full) leaves a partial line:
    it is skipped with a warning, and the next decision starts on a line of its own."""
    store = BundleStore(tmp_path)
    store.record_decision({"version": "a", "promoted": True})
    with open(store.root / "decisions.jsonl", "a") as fh:
        fh.write('{"promoted": true, "vers')  # the torn append
    with pytest.warns(UserWarning, match="decisions.jsonl:2 is not a complete decision record"):
        assert [d["version"] for d in store.decisions()] == ["a"]
    store.record_decision({"version": "b", "promoted": False})
    with pytest.warns(UserWarning, match=":2 is not"):
        assert [d["version"] for d in store.decisions()] == ["a", "b"]
