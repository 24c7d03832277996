"""Ranged runs (a backfill chunk, a catch-up, ``run_flow --range``) when a day fails: the days before
it stay materialized, the error names the day, and a retry (the step's own, or a re-execution of
the failed run) resumes from it. Two to four days of logs: seconds, not minutes."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

import assets.logs as logs
from ml_core.storage import Lake
from orchestration.definitions import defs
from tests.conftest import FAST

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]


def _range(first: str, last: str) -> dict:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def _recorded(instance, key: str) -> dict[str, int]:
    """Materializations of ``key`` per day."""
    out: dict[str, int] = {}
    for r in instance.fetch_materializations(dg.AssetKey(key), limit=100).records:
        out[r.partition_key] = out.get(r.partition_key, 0) + 1
    return out


@pytest.fixture
def faulty_logs(monkeypatch):
    """interaction_logs whose stage fails on chosen days: ``plan[day]`` = how many first attempts fail
    (a large number: every attempt). Returns (plan, calls)."""
    real, plan, calls = logs.run_interaction_logs, {}, []

    def stage(cfg, lake, day):
        calls.append(day)
        if calls.count(day) <= plan.get(day, 0):
            raise OSError(f"injected fault on {day}")
        return real(cfg, lake, day)

    monkeypatch.setattr(logs, "run_interaction_logs", stage)
    return plan, calls


def _logs_job():
    return defs.resolve_job_def("daily_logs")


def test_a_failure_on_day_k_keeps_the_days_before_names_k_and_a_retry_resumes_from_k(tmp_path, faulty_logs):
    """Day 2 fails once: the step's retry, in the same run, resumes from it without redoing day 1.
    Day 3 fails every time: the run fails naming day 3, days 1-2 are materialized once each, 3-4
    not. Re-executed from the failure (what Dagster's run retries and "Re-execute from failure" do),
    the new run resumes from day 3: days 1-2 are not computed again."""
    plan, calls = faulty_logs
    plan.update({DAYS[1]: 1, DAYS[2]: 99})
    run_config = {"resources": {"pipeline": {"config": {"overrides": [f'storage.root="{tmp_path}"', *FAST]}}}}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        job = dg.reconstructable(_logs_job)
        with dg.execute_job(job, instance, run_config=run_config, tags=_range(DAYS[0], DAYS[3])) as res:
            assert not res.success
            failure = next(ev for ev in res.all_events if ev.is_step_failure).step_failure_data.error.to_string()
            failed_run = res.run_id
        assert calls == [DAYS[0], DAYS[1], DAYS[1], DAYS[2]]  # the step retry passed day 1, resumed on day 2
        assert f"day {DAYS[2]} of the range {DAYS[0]}..{DAYS[3]}" in failure
        assert f"a retry resumes from {DAYS[2]}" in failure
        assert _recorded(instance, "interaction_logs") == {DAYS[0]: 1, DAYS[1]: 1}
        assert Lake(tmp_path).days("interaction_logs") == DAYS[:2]

        plan.clear()  # the fault is gone: re-execute the failed run from its failure
        del calls[:]
        options = dg.ReexecutionOptions.from_failure(failed_run, instance)
        with dg.execute_job(job, instance, run_config=run_config, tags=_range(DAYS[0], DAYS[3]),
                            reexecution_options=options) as res:  # the range tags, as a re-execution copies them
            assert res.success
        assert calls == DAYS[2:]  # resumed from day 3
        assert _recorded(instance, "interaction_logs") == dict.fromkeys(DAYS, 1)
        assert Lake(tmp_path).days("interaction_logs") == DAYS


def test_a_ranged_model_step_holds_the_model_pool_only_while_it_runs(tmp_path):
    """The ``model`` pool (limit 1): a ranged step of a pool-``model`` asset (the body every model
    asset runs, :func:`assets.ranges.materialize_days`) holds the slot while it computes its days,
    frees it while it waits for its retry after a failed day, and leaves it free when it ends."""
    import threading
    import time

    from assets.ranges import materialize_days

    attempts = []

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date=DAYS[0]), pool="model",
              backfill_policy=dg.BackfillPolicy.single_run(), retry_policy=dg.RetryPolicy(max_retries=1, delay=3))
    def model_like(context):
        def day_result(day):
            attempts.append(day)
            time.sleep(0.5)
            if day == DAYS[1] and attempts.count(day) == 1:
                raise OSError("injected")
            return dg.MaterializeResult(metadata={"day": day})

        yield from materialize_days(context, day_result)

    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"concurrency": {"pools": {"default_limit": 1}}}) as inst:
        samples, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                info = inst.event_log_storage.get_concurrency_info("model")
                samples.append((time.time(), len(info.claimed_slots)))
                time.sleep(0.1)

        t = threading.Thread(target=poll)
        t.start()
        try:
            res = dg.materialize([model_like], instance=inst, tags=_range(DAYS[0], DAYS[2]))
        finally:
            stop.set()
            t.join()
        assert res.success and attempts == [DAYS[0], DAYS[1], DAYS[1], DAYS[2]]
        ev = {e.dagster_event.event_type_value: e.timestamp for e in inst.all_logs(res.run_id) if e.dagster_event}
        waiting = [n for at, n in samples if ev["STEP_UP_FOR_RETRY"] + 0.3 < at < ev["STEP_RESTARTED"] - 0.3]
        working = [n for at, n in samples if ev["STEP_START"] < at < ev["STEP_UP_FOR_RETRY"] - 0.1]
        assert waiting and not any(waiting), samples  # free while it waits for its retry
        assert working and all(working), samples  # held while it computes
        assert inst.event_log_storage.get_concurrency_info("model").claimed_slots == []
