"""The catch-up automation, tick by tick, on the real definitions (the tests' settings: W = 3,
T = 2, automation.catch_up_days = 7; synthetic source from 2026-01-01, UTC).

Runs are simulated: every partition a tick requests is reported materialized, in dependency
order, before the next tick; the source is observed the way ``source_logs`` reports it. What is
under test is what the automation asks for and in which order, not the stages (the daemon
drives the real stages in tests/e2e/test_dagster_dev.py).
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from assets.partitions import CONFIG
from orchestration.definitions import defs
from tests.conftest import FAST

#: Materialization order of one simulated tick (a topological order of the flow).
ORDER = ["interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features",
         "training_samples", "trained_model", "model_evaluation", "deployed_model"]
H, T, W = CONFIG.automation.catch_up_days, CONFIG.train.train_days, CONFIG.graph.window_days


def days_back(last: str, n: int) -> set[str]:
    end = date.fromisoformat(last)
    return {(end - timedelta(days=i)).isoformat() for i in range(n) if end - timedelta(days=i) >= CONFIG.start_date}


class Sim:
    """An instance, the automation's cursor and the simulated clock."""

    def __init__(self):
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None
        self.source = {}  # day -> content version, as source_logs would observe it
        self.history = []  # every tick's requests
        self.done: dict[str, set[str]] = {}  # every partition materialized so far

    def observe(self, now: datetime, changed: dict[str, str] | None = None):
        self.source.update(changed or {})
        last = (now.astimezone(UTC).date() - timedelta(days=1))
        for d in sorted(days_back(last.isoformat(), H + T + W)):
            self.source.setdefault(d, f"v1-{d}")
        for d, v in (changed or self.source).items():
            self.instance.report_runless_asset_event(
                dg.AssetObservation(asset_key="source_logs", partition=d, tags={DATA_VERSION_TAG: v}))

    def materialize(self, asset: str, days):
        self.done.setdefault(asset, set()).update(days)
        for d in sorted(days):
            self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=d))

    def tick(self, now: datetime) -> dict[str, set[str]]:
        res = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor,
                                                evaluation_time=now)
        self.cursor = res.cursor
        req = {}
        for key in ORDER + ["source_logs"]:
            parts = res.get_requested_partitions(dg.AssetKey(key))
            if parts:
                req[key] = set(parts)
        self.history.append(req)
        return req

    def run_until_idle(self, now: datetime, max_ticks: int = 12) -> dict[str, set[str]]:
        """Tick every 30 s, 'running' what each tick requests, until a tick requests nothing
        but observations; returns everything materialized."""
        done: dict[str, set[str]] = {}
        for _ in range(max_ticks):
            req = self.tick(now)
            if "source_logs" in req:
                self.observe(now)
            work = {k: v for k, v in req.items() if k != "source_logs"}
            if not work and "source_logs" not in req:
                return done
            for key in ORDER:  # a dependency before its dependents, as the backfill runs them
                if key in work:
                    self.check_order(key, work)
                    self.materialize(key, work[key])
                    done.setdefault(key, set()).update(work[key])
            now += timedelta(seconds=30)
        raise AssertionError(f"still requesting after {max_ticks} ticks: {self.history[-3:]}")

    def check_order(self, key: str, work: dict[str, set[str]]):
        """Every input partition of what a tick requests exists already, or is requested on the
        same tick (and so materialized first), or is the asset's own day before the horizon
        (the previous decision, the model it warm-starts from)."""
        graph = defs.resolve_asset_graph()
        for day in work[key]:
            for parent in graph.get_parents_partitions(dg.AssetKey(key), day).parent_partitions:
                name, pday = parent.asset_key.to_user_string(), parent.partition_key
                if name == "source_logs" or pday in self.done.get(name, set()) | work.get(name, set()):
                    continue
                # the own previous day of a self-dependent asset before the horizon: it may never exist
                assert name == key in ("deployed_model", "trained_model"), f"{key}[{day}] requested before {name}[{pday}]"


def utc(y, m, d, h=10):
    return datetime(y, m, d, h, tzinfo=UTC)


@pytest.fixture
def sim():
    return Sim()


def test_turned_on_over_an_empty_lake_it_catches_up_the_horizon_only(sim):
    now = utc(2026, 1, 30)
    yesterday = "2026-01-29"
    done = sim.run_until_idle(now)
    assert sim.history[0] == {"source_logs": {yesterday}}  # first the source is observed, in one run
    assert done["deployed_model"] == days_back(yesterday, H) == done["trained_model"]
    assert done["training_samples"] == days_back(yesterday, H + T) == done["bipartite_graph"]
    assert done["interaction_logs"] == days_back(yesterday, H + T + W)
    assert yesterday in done["deployed_model"]
    # every model day on one tick (so one asset backfill, whose policies run them as one range in
    # date order), not one day per tick as when a decision waited for the previous day's request
    for key in ("trained_model", "model_evaluation", "deployed_model"):
        assert [t[key] for t in sim.history if key in t] == [days_back(yesterday, H)], key


def test_after_the_demo_and_a_week_away_it_starts_at_once_and_fills_the_gap(sim):
    """The lake holds the demo's 2026-01-01..08; the automation is turned on on the 20th."""
    demo = [(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(8)]
    sim.observe(utc(2026, 1, 9))
    for key in ORDER:
        sim.materialize(key, [d for d in demo if key in ORDER[:6] or d >= "2026-01-03"])
    done = sim.run_until_idle(utc(2026, 1, 20, 0) + timedelta(minutes=5))  # minutes after midnight
    assert "2026-01-19" in done["deployed_model"]
    assert done["deployed_model"] == days_back("2026-01-19", H)
    assert not any(d <= "2026-01-08" for ds in done.values() for d in ds)  # the demo's days stay as they are


def test_the_next_day_requests_only_the_new_day(sim):
    sim.run_until_idle(utc(2026, 1, 30))
    done = sim.run_until_idle(utc(2026, 1, 31, 0) + timedelta(minutes=20))
    assert done == {k: {"2026-01-30"} for k in ORDER}


def test_a_changed_source_day_is_re_ingested_with_every_window_that_reads_it(sim):
    sim.run_until_idle(utc(2026, 1, 30))
    late = "2026-01-25"
    sim.observe(utc(2026, 1, 30), {late: "v2-late-rows"})
    done = sim.run_until_idle(utc(2026, 1, 30, 11))
    after = {(date.fromisoformat(late) + timedelta(days=i)).isoformat() for i in range(1, W + 1)}
    after = {d for d in after if d <= "2026-01-29"}
    assert done["interaction_logs"] == {late}
    assert done["bipartite_graph"] == after == done["node_features"]
    assert done["training_samples"] == {late} | after  # samples of D read D's logs and D's graph (the item pool)
    # the newest model reads graphs of the changed days: re-trained, re-evaluated, re-decided; older
    # model days are not (their decisions can no longer move production)
    assert done["trained_model"] == done["model_evaluation"] == done["deployed_model"] == {"2026-01-29"}


def test_a_decision_waits_for_the_previous_days_inside_the_horizon(sim):
    """The horizon is caught up but for the evaluation of the day before yesterday, still in
    progress (an asset backfill targets it): yesterday's decision must wait for that day's, not
    be taken first (found by tests/e2e/test_dagster_dev.py, where a tick requested
    deployed_model[D] while model_evaluation[D-1] was running)."""
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.backfill import PartitionBackfill

    now, yesterday, before = utc(2026, 1, 30), "2026-01-29", "2026-01-28"
    sim.observe(now)
    for key in ORDER:
        n = H + T + W if key == "interaction_logs" else H + T if key in ORDER[1:6] else H
        skip = {"model_evaluation": {before}, "deployed_model": {before, yesterday}}.get(key, set())
        sim.materialize(key, days_back(yesterday, n) - skip)
    target = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(dg.AssetKey("model_evaluation"), before)}, defs.resolve_asset_graph())
    sim.instance.add_backfill(PartitionBackfill.from_asset_graph_subset(
        backfill_id="running", asset_graph_subset=target, dynamic_partitions_store=sim.instance,
        backfill_timestamp=now.timestamp(), tags={}, title=None, description=None, run_config=None))
    req = sim.tick(now)
    assert "deployed_model" not in req, req


def test_the_sensor_evaluates_the_source_too():
    """The sensor's target decides what it evaluates: without the observable source it never
    observes source_logs and the whole flow waits for it (found by tests/e2e/test_dagster_dev.py)."""
    from orchestration.automation import daily_automation

    keys = daily_automation.asset_selection.resolve(defs.resolve_asset_graph())
    assert {k.to_user_string() for k in keys} >= {*ORDER, "source_logs"}


def test_settings_of_the_tests():
    assert (W, T) == (3, 2) and "graph.window_days=3" in FAST and H == 7


def test_the_freshness_check_judges_the_newest_complete_day(tmp_path):
    from orchestration.automation import check_decision_is_fresh
    from orchestration.definitions import ALL_ASSETS
    from orchestration.resources import PipelineResource, flow_resources

    res = flow_resources(PipelineResource(overrides=[f'storage.root="{tmp_path}"']))

    def run():
        result = dg.materialize([*ALL_ASSETS, check_decision_is_fresh], resources=res,
                                selection=dg.AssetSelection.checks(check_decision_is_fresh))
        (ev,) = result.get_asset_check_evaluations()
        return ev

    newest = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()  # the tests' source is in UTC
    ev = run()
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert ev.metadata["expected_partition"].value == newest and ev.metadata["latest_decision"].value == "none"
    (tmp_path / "lake" / "deployed_model" / f"ds={newest}").mkdir(parents=True)
    assert run().passed


def test_the_freshness_check_reports_catching_up_while_a_catch_up_writes_decisions(tmp_path):
    """No decision for the newest day, but a run that materializes deployed_model is in progress
    (a catch-up): the check passes as "catching up", naming the day reached; once nothing is in
    progress, the same lake fails it."""
    from orchestration.automation import check_decision_is_fresh, freshness
    from orchestration.definitions import ALL_ASSETS
    from orchestration.resources import PipelineResource, flow_resources

    assert freshness("2026-01-09", True, "2026-01-09", "run x")[:2] == (True, "fresh")
    assert freshness("2026-01-09", False, "2026-01-05", None)[:2] == (False, "late")
    passed, state, text = freshness("2026-01-09", False, "2026-01-05", "backfill abc")
    assert (passed, state) == (True, "catching up") and "reached 2026-01-05" in text and "backfill abc" in text
    reached = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    (tmp_path / "lake" / "deployed_model" / f"ds={reached}").mkdir(parents=True)
    res = flow_resources(PipelineResource(overrides=[f'storage.root="{tmp_path}"']))
    with dg.instance_for_test() as instance:
        def check():
            result = dg.materialize([*ALL_ASSETS, check_decision_is_fresh], resources=res, instance=instance,
                                    selection=dg.AssetSelection.checks(check_decision_is_fresh))
            (ev,) = result.get_asset_check_evaluations()
            return ev

        catching_up = dg.DagsterRun(job_name="__ASSET_JOB", run_id="catchup0-0000-0000-0000-000000000000",
                                    status=dg.DagsterRunStatus.STARTED,
                                    asset_selection=frozenset({dg.AssetKey("deployed_model")}))
        instance.add_run(catching_up)
        ev = check()
        assert ev.passed and ev.metadata["state"].value == "catching up"
        assert ev.metadata["latest_decision"].value == reached and "run catchup0" in ev.description
        instance.report_run_failed(catching_up)
        ev = check()
        assert not ev.passed and ev.metadata["state"].value == "late"


def test_the_run_command_observes_the_source_before_it_ingests_the_newest_days():
    """So that the automation, turned on later, finds the versions the run command's logs read
    and re-ingests nothing (the catch-up benchmark re-ingested ten such days before this)."""
    from assets.logs import observed_days
    from ml_core.data.sources import day_versions
    from orchestration.run_flow import observe_source

    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey("source_logs")
    observe_source(instance, defs, CONFIG, [CONFIG.source.start_date])  # an old day: no observation
    assert not instance.fetch_observations(key, limit=10).records
    days = observed_days(CONFIG)
    observe_source(instance, defs, CONFIG, days[-2:])
    got = {r.partition_key: r.asset_observation.data_version
           for r in instance.fetch_observations(key, limit=100).records}
    assert got == {d: v for d, v in day_versions(CONFIG.source, days).items() if v is not None}
    assert sorted(got) == days
