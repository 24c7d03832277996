"""Fault injection 1: the run command SIGKILLed during each stage's partition write.

A flow is run once through the first model day D (every asset of D materialized, a deployment
decision taken). Each case copies it and re-runs day D with a crash point in one stage's write
(:mod:`tests.reliability.crashpoint`), kills the process there, and checks: the partition being
rewritten still holds its previous, complete version (nothing half-published, nothing lost),
serving still loads a promoted model, the next run command marks the killed run failed and
re-runs the day to success, and every partition and bundle then passes its integrity check.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from orchestration.recovery import recover
from tests.reliability.faults import (
    copy_flow,
    corrupt_entries,
    crash_run,
    data_lost,
    hidden_entries,
    report,
    run_flow_here,
    run_outcomes,
    stored,
    wrong_models_served,
)

#: (the write to crash in, the job that runs it, when). The graphs multi-asset writes its three
#: partitions in turn: its last (the item similarity graph) is killed, after the other two were replaced.
CASES = [
    ("interaction_logs", "daily_logs", "publish"),
    ("item_similarity_graph", "daily_data", "publish"),
    ("node_features", "daily_data", "publish"),
    ("training_samples", "daily_data", "publish"),
    ("trained_model", "daily_model", "publish"),
    ("model_evaluation", "daily_model", "publish"),
    ("deployed_model", "daily_model", "publish"),
    ("interaction_logs", "daily_logs", "mid_write"),
    ("bipartite_graph", "daily_data", "mid_write"),
    ("trained_model", "daily_model", "mid_write"),
]
STAGE_OF = {"item_similarity_graph": "window_graphs", "bipartite_graph": "window_graphs"}


@pytest.mark.slow
@pytest.mark.parametrize(("asset", "job", "when"), CASES, ids=[f"{a}-{w}" for a, _, w in CASES])
def test_kill_during_a_stage_write(flow, tmp_path, capsys, record_property, asset, job, when):
    base, day = flow
    root = copy_flow(base, tmp_path) / "data"
    before = stored(root)
    published = (root / "lake" / asset / f"ds={day}" / "_VERSION").read_text()

    crash_run(tmp_path, f"{asset}/{day}", day, 1, when)

    # at the fault: the partition being rewritten is its previous complete version; the killed
    # writer's temp directory is all it left; what serves is still a promoted, complete bundle
    assert (root / "lake" / asset / f"ds={day}" / "_VERSION").read_text() == published
    left = hidden_entries(root)
    assert [p.parent.name for p in left] == [asset] and left[0].name.startswith(f".tmp-ds={day}-"), left
    if when == "mid_write":
        assert not (left[0] / "_VERSION").exists()  # stopped before the partition was complete
    lost_at_fault, wrong_at_fault = data_lost(before, root), wrong_models_served(root)
    assert lost_at_fault == [] and wrong_at_fault == []

    # detection: what the next run command (and the sensor) does first
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    [killed] = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
    assert (killed.job_name, killed.tags["dagster/partition"]) == (job, day)
    t0 = time.perf_counter()
    lines = recover(instance, root)
    detection = time.perf_counter() - t0
    assert any(killed.run_id in line for line in lines) and any("removed" in line for line in lines), lines

    rc, out, err = run_flow_here(tmp_path, day, 1, capsys)
    assert rc == 0, out[-3000:] + err[-3000:]
    failed, recovered = run_outcomes(instance, job, day)
    assert failed == [killed.run_id] and len(recovered) == 1
    assert hidden_entries(root) == [] and corrupt_entries(root) == []
    lost, wrong = data_lost(before, root), wrong_models_served(root)
    assert lost == [] and wrong == []
    report(record_property, f"SIGKILL in {STAGE_OF.get(asset, asset)} ({asset}, {when.replace('_', ' ')})",
           failed=len(failed), recovered=len(recovered), lost=lost, wrong=wrong, detection_s=detection,
           detected_by="next run command")


def _daily_logs():
    from orchestration.definitions import defs

    return defs.resolve_job_def("daily_logs")


def test_kill_inside_a_range_keeps_the_days_before_and_its_re_execution_resumes(tmp_path):
    """The run command's ``--range`` SIGKILLed while it publishes day 2 of a 3-day range of logs:
    day 1 stays materialized (once), day 2 is its killer's temp directory only; the run is marked
    failed, and its re-execution from the failure (Dagster's run retry) resumes from day 2."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ml_core.storage import Lake
    from tests.conftest import FAST
    from tests.reliability.faults import write_config

    write_config(tmp_path)
    root, days = tmp_path / "data", ["2026-01-01", "2026-01-02", "2026-01-03"]
    crash_run(tmp_path, f"interaction_logs/{days[1]}", days[0], 3, extra=("--range", "--data-only"))
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))

    def recorded() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in instance.fetch_materializations(dg.AssetKey("interaction_logs"), limit=100).records:
            out.setdefault(r.partition_key, []).append(r.run_id)
        return out

    [killed] = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
    rng = {ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}
    assert {k: killed.tags[k] for k in rng} == rng
    assert recorded() == {days[0]: [killed.run_id]} and Lake(root).days("interaction_logs") == days[:1]
    assert any(killed.run_id in line for line in recover(instance, root))  # marked failed, temp dir cleared

    run_config = {"resources": {"pipeline": {"config": {"overrides": [f'storage.root="{root}"', *FAST]}}}}
    options = dg.ReexecutionOptions.from_failure(killed.run_id, instance)
    with dg.execute_job(dg.reconstructable(_daily_logs), instance, run_config=run_config, tags=rng,
                        reexecution_options=options) as res:
        assert res.success
    got = recorded()
    assert got[days[0]] == [killed.run_id]  # day 1 not computed again
    assert sorted(got) == days and all(got[d] == [res.run_id] for d in days[1:])
    assert Lake(root).days("interaction_logs") == days
