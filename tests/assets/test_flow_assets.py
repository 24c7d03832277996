"""Materialize the whole flow over a range of partitions on an ephemeral instance."""

import json
import re

import dagster as dg
import numpy as np
import pytest

from ml_core.config.cf import CF_SCORERS
from ml_core.registry.bundles import BundleStore
from ml_core.sanity import SCORERS
from ml_core.stages.deployment import run_deployed_model
from ml_core.stages.evaluation import load_evaluation
from ml_core.storage import Lake
from orchestration.definitions import ALL_ASSETS, CHECKS, FLOW_ASSETS
from orchestration.resources import PipelineResource, flow_resources
from tests.conftest import FAST, materialize_day, materialize_range
from tests.helpers import best_floor, doctor_evaluation

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
#: The days with derived data (graphs, features, samples): from the second (the first with history).
DATA_DAYS = DAYS[1:]
#: The days with a model: the training window (T = 2 in the tests' settings) has samples from the fourth day.
MODEL_DAYS = DAYS[3:]


def resources(root, *extra):
    return flow_resources(PipelineResource(overrides=[f'storage.root="{root}"', *FAST, *extra]))


def _latest(instance, key, day):
    ev = instance.get_latest_materialization_event(dg.AssetKey(key)) if day is None else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day]), limit=1).records
    return records[0].asset_materialization if records else ev


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    instance = dg.DagsterInstance.ephemeral()
    # The gate's floor is tested on its own (tests/unit/train/test_trainer.py); these 40-step models are
    # not meant to be good (MoGE's purchase GAUC here: 0.31-0.64 by day), and the pointer must move.
    res = resources(root, "deploy.min_gauc=0.0")
    for day in DAYS:
        results = materialize_day([*FLOW_ASSETS, *CHECKS], day, instance=instance, resources=res)
        assert len(results) == 1 + (day in DATA_DAYS) + (day in MODEL_DAYS) and all(r.success for r in results), day
    return root, instance, res


def test_every_day_materializes_with_its_own_windows(flow):
    root, instance, _ = flow
    assert _latest(instance, "interaction_logs", DAYS[0]) is not None
    assert _latest(instance, "bipartite_graph", DAYS[0]) is None  # the first day has no history: no graph
    for day in DATA_DAYS:
        for key in ("interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph",
                    "node_features", "training_samples"):
            assert _latest(instance, key, day) is not None, (key, day)
        bip = _latest(instance, "bipartite_graph", day).metadata
        # graph window = the W (=3 in FAST) days before D that exist
        expected = [d for d in DAYS if d < day][-3:]
        assert bip["window_days"].value == expected
        assert bip["mode"].value == ("full" if day <= DAYS[1] else "incremental")  # day 2: no prior window
    # the first days have no whole training window: they have no model partition at all
    assert _latest(instance, "trained_model", DAYS[2]) is None
    for day in MODEL_DAYS:
        md = _latest(instance, "trained_model", day).metadata
        assert md["train_days"].value == [d for d in DAYS if d < day][-2:]
        assert "training_curve" in md and md["n_params"].value > 0
        ev = _latest(instance, "model_evaluation", day).metadata
        assert 0.0 <= ev["gauc_click"].value <= 1.0 and "gauc_table" in ev
        dep = _latest(instance, "deployed_model", day).metadata
        assert isinstance(dep["promoted"].value, bool)


#: What a materialization's tags say of its day: its data version, code version and input versions.
VERSION_TAGS = ("dagster/data_version", "dagster/code_version", "dagster/data_version_is_user_provided")
#: Metadata that differs between two runs of the same day: where, how fast and with how much memory
#: it was written (``path``, ``seconds``, ``wall_time_s``, ``samples_per_s``, ``peak_mem_delta_mb``...).
RUN_METADATA = re.compile(r"^path$|seconds|_s$|per_s|_mb$")


def _scrub(v):
    """``v`` without the run-dependent entries of :data:`RUN_METADATA`, at any depth."""
    if isinstance(v, dict):
        return {k: _scrub(x) for k, x in v.items() if not RUN_METADATA.search(str(k))}
    if isinstance(v, list):
        return [_scrub(x) for x in v]
    return v


def _days_as_recorded(instance, key) -> dict:
    """Per day of ``key``: its materializations' count, version tags, input versions, metadata keys
    and the metadata values that do not depend on the run (timings and paths aside)."""
    out = {}
    for r in instance.fetch_materializations(dg.AssetKey(key), limit=1000).records:
        m = r.asset_materialization
        tags = m.tags or {}
        md = _scrub({k: v.value for k, v in m.metadata.items() if not isinstance(v, dg.MarkdownMetadataValue)})
        entry = out.setdefault(r.partition_key, {"n": 0})
        entry["n"] += 1
        entry.update(tags={k: v for k, v in tags.items() if k in VERSION_TAGS or k.startswith("dagster/input_data_version")},
                     metadata=json.dumps(md, sort_keys=True, default=str), keys=sorted(m.metadata))
    return out


def test_a_range_run_writes_every_day_as_day_by_day_runs_do(flow, tmp_path):
    """The whole flow as three ranged runs (logs, data, models: what a backfill with the policies
    runs) gives the partitions, data versions, code and input versions, metadata and deployment
    decisions that one run per day and job gives: each day once, in date order, as a day alone."""
    root, instance, _ = flow
    ranged = dg.DagsterInstance.ephemeral()
    results = materialize_range([*FLOW_ASSETS, *CHECKS], DAYS[0], DAYS[-1], instance=ranged,
                                resources=resources(tmp_path, "deploy.min_gauc=0.0"))
    assert [r.success for r in results] == [True, True, True]
    assert len(ranged.get_runs()) == 3
    keys = [k.to_user_string() for a in FLOW_ASSETS if isinstance(a, dg.AssetsDefinition) and a.is_materializable
            for k in a.keys]
    for key in keys:
        by_day, in_range = _days_as_recorded(instance, key), _days_as_recorded(ranged, key)
        assert sorted(in_range) == sorted(by_day), key
        assert all(e["n"] == 1 for e in in_range.values()), (key, in_range)  # one event per day, none for the range
        for day in by_day:
            assert in_range[day]["tags"] == by_day[day]["tags"], (key, day)
            assert in_range[day]["keys"] == by_day[day]["keys"], (key, day)
            assert in_range[day]["metadata"] == by_day[day]["metadata"], (key, day)
            assert in_range[day]["tags"]["dagster/data_version"] == Lake(tmp_path).version(key, day)
    decisions = [{k: d[k] for k in ("partition", "promoted", "version", "reasons", "production_before")}
                 for d in BundleStore(tmp_path).decisions()]
    assert decisions == [{k: d[k] for k in ("partition", "promoted", "version", "reasons", "production_before")}
                         for d in BundleStore(root).decisions()]
    assert [d["partition"] for d in decisions] == MODEL_DAYS


def test_metadata_is_useful(flow):
    _, instance, _ = flow
    logs = _latest(instance, "interaction_logs", DAYS[-1]).metadata
    assert logs["rows"].value > 1000 and logs["quarantined"].value == 0
    bip = _latest(instance, "bipartite_graph", DAYS[-1]).metadata
    assert bip["edges"].value > 0 and "degree_distribution" in bip and bip["user_degree"].value["max"] > 1
    sim = _latest(instance, "user_similarity_graph", DAYS[-1]).metadata
    assert 0.0 <= sim["no_neighbor_share"].value < 1.0 and sim["engine"].value == "local"
    samples = _latest(instance, "training_samples", DAYS[-1]).metadata
    assert samples["label_rates"].value["label_click"] == pytest.approx(0.2, abs=0.01)


def test_every_decision_is_recorded_and_is_the_gates(flow):
    """Each model day's decision is logged, and promoted exactly when the gate passes its
    evaluation (the 40-step models here usually do not beat the sanity scorers: then the
    reasons say so, and nothing is promoted on luck)."""
    root, _, _ = flow
    lake = Lake(root)
    reg = BundleStore(root)
    decisions = reg.decisions()
    assert [d["partition"] for d in decisions] == MODEL_DAYS
    for i, d in enumerate(decisions):
        ev = load_evaluation(lake, d["partition"], judged=True)  # as the decision judged it
        # the references are the models promoted before this day, production among them
        promoted_before = [x["version"] for x in decisions[:i] if x["promoted"]]
        assert set(ev.references) == set(promoted_before[-7:])
        assert (ev.production.version if ev.production else None) == d["production_before"]
        assert ev.sanity and set(ev.sanity) == set(SCORERS)
        assert ev.cf is not None and set(ev.cf) == set(CF_SCORERS) and "seconds" not in ev.cf_info["ease"]  # timings: metadata only
        assert ev.candidate_version == lake.version("trained_model", d["partition"])
        assert set(ev.differences) == set(ev.references)  # every reference with its interval
        for per_task in ev.differences.values():
            assert all(x["low"] <= x["diff"] <= x["high"] for x in per_task.values()), per_task
        assert d["promoted"] == (not d["reasons"]), d
        if not d["promoted"]:
            assert all(isinstance(r, str) and r for r in d["reasons"])


def test_gate_on_stored_partitions_promotes_only_what_it_evaluated(flow):
    from ml_core.stages.evaluation import SCORES_FILE, judge_against_references
    from ml_core.storage import INTEGRITY_FILE, VERSION_FILE

    root, _, res = flow
    lake, reg = Lake(root), BundleStore(root)
    cfg = res["pipeline"].config()
    day = DAYS[-1]
    part = lake.partition_dir("model_evaluation", day)
    saved = {f: (part / f).read_bytes() for f in ("evaluation.json", SCORES_FILE, VERSION_FILE, INTEGRITY_FILE)}
    ev = load_evaluation(lake, day)
    beat = {t: min(0.99, best_floor(ev, t) + 0.05) for t in ev.candidate}
    below = {t: max(s[t]["gauc"] for s in ev.sanity.values()) - 0.01 for t in ev.candidate}
    prod = reg.production()
    try:
        # (d) a model that does not beat every sanity scorer is refused, first deployment or not
        doctor_evaluation(lake, day, below)
        d = run_deployed_model(cfg, lake, day)
        assert not d.promoted and any("sanity scorer" in r for r in d.reasons), d.reasons
        # (a) an evaluation of another trained_model version never promotes the partition's weights
        doctor_evaluation(lake, day, beat, candidate_version="0" * 64)
        d = run_deployed_model(cfg, lake, day)
        assert not d.promoted and any("scored trained_model version" in r for r in d.reasons), d.reasons
        assert reg.production() == prod
        # the evaluated version, beating every scorer and, on the same samples, every reference
        # (its stored scores are the labels: a clearly better candidate): promoted, pointer moved
        for f, data in saved.items():
            (part / f).write_bytes(data)
        doctor_evaluation(lake, day, beat, probs=lambda labels: (0.05 + 0.9 * labels).astype(np.float32))
        d = run_deployed_model(cfg, lake, day)
        assert d.promoted, d.reasons
        now = reg.production()
        assert now["version"] == d.version and d.version in reg.versions()
        assert d.version.endswith(lake.version("trained_model", day)[:10])
        bundle = reg.version_dir(now["version"])
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["train_days"] and manifest["input_versions"]["training_samples"]
        assert (bundle / "context" / "bipartite_graph" / "meta.json").exists()
        judged = load_evaluation(lake, day, judged=True)
        if prod is not None:
            assert prod["version"] in judged.references and judged.production.version == prod["version"]
            assert all(x["diff"] > 0 for x in judged.differences[prod["version"]].values())
        # judged again with the real scores, the day's model is its own reference: zero difference
        for f, data in saved.items():
            (part / f).write_bytes(data)
        again = judge_against_references(cfg, lake, day, reg)
        assert d.version in again.references and again.production.version == d.version
        for x in again.differences[d.version].values():
            assert x["diff"] == x["low"] == x["high"] == 0.0, x
    finally:
        for f, data in saved.items():
            (part / f).write_bytes(data)


def test_rematerializing_a_partition_is_idempotent(flow):
    root, instance, res = flow
    before = _latest(instance, "interaction_logs", DAYS[1]).metadata["data_version"].value
    bip_before = _latest(instance, "bipartite_graph", DAYS[1]).metadata["data_version"].value
    samples_before = _latest(instance, "training_samples", DAYS[1]).metadata["data_version"].value
    wanted = {"interaction_logs", "bipartite_graph", "training_samples"}
    chosen = [a for a in FLOW_ASSETS if isinstance(a, dg.AssetsDefinition) and wanted & {k.path[-1] for k in a.keys}]
    assert all(r.success for r in materialize_day(chosen, DAYS[1], instance=instance, resources=res))
    assert _latest(instance, "interaction_logs", DAYS[1]).metadata["data_version"].value == before
    assert _latest(instance, "training_samples", DAYS[1]).metadata["data_version"].value == samples_before
    assert len(list((root / "lake" / "interaction_logs").iterdir())) == len(DAYS)
    assert _latest(instance, "bipartite_graph", DAYS[1]).metadata["data_version"].value == bip_before


def test_model_comparison_on_demand(flow):
    """The comparison asset reads the flow's stored partitions: two variants x two seeds."""
    root, instance, _ = flow
    day = DAYS[-1]
    res = resources(root, 'comparison.variants=["mmoe", "moge"]', "comparison.seeds=[0, 1]",
                    "comparison.max_steps_per_epoch=10")
    comparison = [a for a in ALL_ASSETS if a not in FLOW_ASSETS and dg.AssetKey("model_comparison") in a.keys]
    result = dg.materialize([*comparison, *FLOW_ASSETS], selection=comparison, partition_key=day,
                            instance=instance, resources=res)
    assert result.success
    md = _latest(instance, "model_comparison", day).metadata
    assert md["variants"].value == 2 and md["seeds"].value == [0, 1]
    assert md["train_days"].value == [d for d in DAYS if d < day][-2:]
    rows = {r["variant"]: r for r in md["summary"].value}
    assert set(rows) == {"mmoe", "moge"} and all(0.0 <= r["gauc_click"] <= 1.0 for r in rows.values())
    assert "report" in md and "gauc_plot" in md and "table" in md
    part = root / "lake" / "model_comparison" / f"ds={day}"
    report = (part / "report.md").read_text()
    assert "| moge |" in report and "| mmoe |" in report and "best paper baseline mmoe" in report
    # the sanity scorers on the same samples, the nested-task GAUC, and the differences with intervals
    assert all(f"| sanity: {s} | sanity |" in report for s in SCORERS)
    assert all(f"| cf: {s} | cf |" in report for s in CF_SCORERS)
    assert "GAUC purchase within click" in report
    results = json.loads((part / "results.json").read_text())
    diffs = results["differences"]["click"]
    assert {(d["variant"], d["seed"]) for d in diffs} >= {("moge", 0), ("moge", 1)}  # moge vs the baseline mmoe
    assert all(d["low"] <= d["diff"] <= d["high"] for rows in results["differences"].values() for d in rows)
    assert "click: moge - mmoe, seed 0" in report and "paired bootstrap" in report
    runs = json.loads((part / "results.json").read_text())["runs"]
    assert sorted((r["variant"], r["seed"]) for r in runs) == [("mmoe", 0), ("mmoe", 1), ("moge", 0), ("moge", 1)]


def test_hyperparameter_search_on_demand(flow):
    """The search asset reads the flow's stored partitions: trials on D-2 validated on D-1, then the
    best and the default configuration trained on D-2 .. D-1 and evaluated on D."""
    root, instance, _ = flow
    day = DAYS[-1]
    res = resources(root, 'tuning.model="mmoe"', "tuning.trials=3", "tuning.max_steps_per_epoch=8",
                    'tuning.space={lr=[1e-4, 1e-2, "log"], "model_args.n_experts"=[2, 4]}')
    search = [a for a in ALL_ASSETS if a not in FLOW_ASSETS and dg.AssetKey("hyperparameter_search") in a.keys]
    result = dg.materialize([*search, *FLOW_ASSETS], selection=search, partition_key=day, instance=instance,
                            resources=res)
    assert result.success
    md = _latest(instance, "hyperparameter_search", day).metadata
    assert md["model"].value == "mmoe" and md["trials"].value == 3 and md["failed_trials"].value == 0
    assert md["train_days"].value == [DAYS[-3]] and md["validation_day"].value == DAYS[-2]
    assert set(md["best_params"].value) == {"lr", "model_args.n_experts"}
    assert 0.0 <= md["best_value"].value <= 1.0 and md["best_value"].value >= md["default_value"].value
    for task in ("click", "purchase"):
        assert 0.0 <= md[f"gauc_{task}_best"].value <= 1.0 and 0.0 <= md[f"gauc_{task}_default"].value <= 1.0
        d = md[f"gauc_{task}_best_minus_default"].value
        assert d["low"] <= d["diff"] <= d["high"]
    rows = md["trials_table"].value.records
    assert [r.data["trial"] for r in rows] == [0, 1, 2] and rows[0].data["model_args.n_experts"] == 4  # the default
    assert "report" in md and "tuning_plot" in md
    part = root / "lake" / "hyperparameter_search" / f"ds={day}"
    results = json.loads((part / "results.json").read_text())
    assert results["best_params"] == md["best_params"].value and len(results["trials"]) == 3
    assert set(results["held_out"]) == {"default", "best", "differences", "same"}
    assert (part / "tuning.png").read_bytes().startswith(b"\x89PNG")
    assert "| model_args.n_experts | 2 .. 4 | 4 |" in (part / "report.md").read_text()
