"""The code location loads, every job resolves, and the asset graph is the flow of DESIGN.md."""

import dagster as dg

from orchestration.definitions import defs

FLOW = {"interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features",
        "training_samples", "trained_model", "model_evaluation", "deployed_model"}


LOGS = {"interaction_logs"}
DATA = {"bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features", "training_samples"}
MODEL = {"trained_model", "model_evaluation", "deployed_model"}


def test_definitions_resolve_every_job_and_the_automation():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert FLOW <= keys
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    # the named jobs plus Dagster's implicit asset job (what "Materialize" and backfills on the lineage page run)
    assert set(jobs) == {"daily_logs", "daily_data", "daily_model", "model_comparison_job", "tuning_job",
                         "__ASSET_JOB"}, sorted(jobs)
    for name, job in jobs.items():
        keys = job.asset_layer.selected_asset_keys
        assert keys, f"{name} selects no asset"
        # every run executes in process, the implicit job's too: a step per process would re-import torch
        assert job.executor_def.name == "in_process", name
        if name != "__ASSET_JOB":
            assert job.partitions_def == graph.get(next(iter(keys))).partitions_def, name

    def selected(name):
        return {k.to_user_string() for k in jobs[name].asset_layer.selected_asset_keys}

    assert selected("daily_logs") == LOGS and selected("daily_data") == DATA and selected("daily_model") == MODEL
    assert selected("model_comparison_job") == {"model_comparison"}
    assert selected("tuning_job") == {"hyperparameter_search"}
    assert not list(defs.schedules or [])  # the automation sensor replaced the schedule
    sensor = defs.resolve_sensor_def("daily_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # a person turns it on
    conditions = {k.to_user_string(): graph.get(k).automation_condition for k in graph.get_all_asset_keys()}
    assert {k for k, c in conditions.items() if c is not None} == FLOW | {"source_logs"}  # not the comparison, the search


def test_assets_are_partitioned_in_the_source_timezone_derived_data_from_the_second_day():
    from datetime import date, timedelta

    from assets.partitions import CONFIG, TIMEZONE
    from ml_core.data.sources import source_timezone

    graph = defs.resolve_asset_graph()
    defs_by_kind = {"logs": set(), "data": set(), "model": set()}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.to_user_string() != "source_logs":
            assert node.code_version, key
        assert node.description, key
        assert node.group_name in {"ingest", "graph", "features", "samples", "model", "comparison"}, key
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.partitions_def.timezone == TIMEZONE == source_timezone(CONFIG.source)
        kind = {"model": "model", "comparison": "model", "ingest": "logs"}.get(node.group_name, "data")
        defs_by_kind[kind].add(node.partitions_def)
    logs, data, model = (defs_by_kind[k] for k in ("logs", "data", "model"))
    assert len(logs) == len(data) == len(model) == 1
    start = date.fromisoformat(CONFIG.source.start_date)
    assert next(iter(logs)).start.date() == start
    # the source's first day has no history: its graphs would read nothing, so derived data start the day after
    assert next(iter(data)).start.date() == start + timedelta(days=1)
    assert next(iter(model)).start.date() == start + timedelta(days=1 + CONFIG.train.train_days)


def test_decisions_run_in_date_order():
    """deployed_model[D] depends on deployed_model[D-1] (the production model D is judged
    against), and on the evaluation of its candidate."""
    graph = defs.resolve_asset_graph()
    dep = dg.AssetKey("deployed_model")
    assert dep in graph.get(dep).parent_keys
    up = graph.get_partition_mapping(dep, dep).get_upstream_mapped_partitions_result_for_partitions(
        graph.get(dep).partitions_def.subset_with_partition_keys(["2026-01-20"]),
        graph.get(dep).partitions_def, graph.get(dep).partitions_def).partitions_subset.get_partition_keys()
    assert list(up) == ["2026-01-19"]
    assert dg.AssetKey("model_evaluation") in graph.get(dep).parent_keys


def test_window_dependencies_are_partition_mappings():
    from assets.partitions import CONFIG

    graph = defs.resolve_asset_graph()
    day = "2026-01-20"
    bip = dg.AssetKey("bipartite_graph")
    logs = dg.AssetKey("interaction_logs")
    mapping = graph.get_partition_mapping(bip, logs)
    up = mapping.get_upstream_mapped_partitions_result_for_partitions(
        graph.get(bip).partitions_def.subset_with_partition_keys([day]),
        graph.get(bip).partitions_def, graph.get(logs).partitions_def,
    ).partitions_subset.get_partition_keys()
    assert sorted(up) == [f"2026-01-{d:02d}" for d in range(20 - CONFIG.graph.window_days, 20)]
    model = dg.AssetKey("trained_model")
    samples = dg.AssetKey("training_samples")
    up = graph.get_partition_mapping(model, samples).get_upstream_mapped_partitions_result_for_partitions(
        graph.get(model).partitions_def.subset_with_partition_keys([day]),
        graph.get(model).partitions_def, graph.get(samples).partitions_def,
    ).partitions_subset.get_partition_keys()
    assert sorted(up) == [f"2026-01-{d:02d}" for d in range(20 - CONFIG.train.train_days, 20)]


def test_assets_load_only_the_inputs_they_read():
    """Inputs an asset body does not read are deps (lineage only); the window an asset reads
    the days of stays an input (its PartitionRefs list the days)."""
    loaded = {}
    for a in defs.assets:
        if isinstance(a, dg.SourceAsset):
            continue  # source_logs is observed, not materialized: it loads nothing
        for key in a.keys:
            loaded[key.to_user_string()] = {a.keys_by_input_name[i.name].to_user_string()
                                            for i in a.node_def.input_defs if not i.dagster_type.is_nothing}
    assert loaded["interaction_logs"] == set()
    assert loaded["bipartite_graph"] == {"interaction_logs"}
    assert loaded["node_features"] == {"interaction_logs"}
    assert loaded["training_samples"] == set()
    assert loaded["trained_model"] == {"training_samples"}
    assert loaded["model_evaluation"] == set()
    assert loaded["deployed_model"] == set()
    assert loaded["model_comparison"] == {"training_samples"}
    assert loaded["hyperparameter_search"] == {"training_samples"}


def test_checks_fail_without_a_partition(tmp_path):
    """A run with no partition does not judge some stored day (here: a stored, clean one)."""
    from ml_core.stages.logs import run_interaction_logs
    from ml_core.storage import Lake
    from orchestration.checks import CHECKS
    from orchestration.definitions import FLOW_ASSETS
    from orchestration.resources import PipelineResource, flow_resources
    from tests.conftest import make_config

    run_interaction_logs(make_config(tmp_path), Lake(tmp_path), "2026-01-01")
    res = flow_resources(PipelineResource(overrides=[f'storage.root="{tmp_path}"']))
    result = dg.materialize([*FLOW_ASSETS, *CHECKS], selection=dg.AssetSelection.checks(*CHECKS), resources=res,
                            raise_on_error=False)
    evaluations = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"check_quarantine_share", "check_gauc_is_finite"}
    for e in evaluations.values():
        assert not e.passed and "this run has no partition" in e.metadata["observed"].value


def test_editing_the_gate_changes_only_deployed_models_code_version(tmp_path):
    """Each asset's code version hashes its own stage module(s): the gate is deployed_model's."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    for d in ("ml_core", "assets", "orchestration"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    script = ("import json; from orchestration.definitions import defs; g = defs.resolve_asset_graph(); "
              "print(json.dumps({k.to_user_string(): g.get(k).code_version for k in g.get_all_asset_keys()}))")

    def versions() -> dict:
        out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    before = versions()
    with open(tmp_path / "ml_core" / "stages" / "gate.py", "a") as fh:
        fh.write("\n# edited\n")
    after = versions()
    assert {k for k in before if before[k] != after[k]} == {"deployed_model"}


def test_partitions_follow_the_source_timezone(tmp_path):
    """A source in Los Angeles: its day 2026-01-19 ends at 08:00 UTC on the 20th, and only then
    is it a partition (the code location loads the zone from the config, in a fresh process)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    cfg = tmp_path / "pipeline.toml"
    cfg.write_text('[source]\nkind = "synthetic"\nstart_date = "2026-01-01"\ntimezone = "America/Los_Angeles"\n'
                   f'[storage]\nroot = "{tmp_path}"\n')
    script = (
        "import json, datetime as dt; from assets.partitions import daily, model_daily, TIMEZONE\n"
        "from orchestration.automation import check_decision_is_fresh as c\n"
        "at = lambda h: daily.get_partition_keys(current_time=dt.datetime(2026, 1, 20, h, tzinfo=dt.timezone.utc))[-1]\n"
        "print(json.dumps({'tz': TIMEZONE, 'daily': daily.timezone, 'model': model_daily.timezone,"
        " 'at7': at(7), 'at9': at(9), 'check_tz': next(iter(c.check_specs)).automation_condition.cron_timezone}))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "MOGE_CONFIG": str(cfg)})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"tz": "America/Los_Angeles", "daily": "America/Los_Angeles", "model": "America/Los_Angeles",
                   "at7": "2026-01-18", "at9": "2026-01-19", "check_tz": "America/Los_Angeles"}


def _materialize_all_target(days: list[str]) -> dict[str, set[str]]:
    """What the lineage page's "Materialize all" over ``days`` targets: Dagster's asset backfill
    from those days of the root (interaction_logs) and everything downstream of them."""
    import time

    from dagster._core.execution.asset_backfill import AssetBackfillData

    graph = defs.resolve_asset_graph()
    with dg.DagsterInstance.ephemeral() as instance:
        data = AssetBackfillData.from_asset_partitions(
            asset_graph=graph, partition_names=days, dynamic_partitions_store=instance,
            asset_selection=[dg.AssetKey(k) for k in FLOW], backfill_start_timestamp=time.time(), all_partitions=False)
    return {k.to_user_string(): set(data.target_subset.get_partitions_subset(k).get_partition_keys())
            for k in data.target_subset.asset_keys}


def _upstream(child: str, parent: str, keys: set[str]) -> set[str]:
    graph = defs.resolve_asset_graph()
    c, p = dg.AssetKey(child), dg.AssetKey(parent)
    return set(graph.get_partition_mapping(c, p).get_upstream_mapped_partitions_result_for_partitions(
        graph.get(c).partitions_def.subset_with_partition_keys(sorted(keys)), graph.get(c).partitions_def,
        graph.get(p).partitions_def).partitions_subset.get_partition_keys())


def test_materialize_all_from_the_first_day_targets_every_partition_it_reads():
    """On an empty lake, "Materialize all" over the source's days from its first one must not
    read any partition it does not materialize itself: every input of every targeted partition
    is targeted too (the first day's graphs were a root left out when derived data started on
    the source's first day, and that backfill failed)."""
    from assets.partitions import daily, derived_daily, model_daily

    days = daily.get_partition_keys()[:12]
    target = _materialize_all_target(days)
    assert target["interaction_logs"] == set(days)
    # the derived data of every day after the first, the models of every day with a window
    assert target["bipartite_graph"] >= set(days[1:]) and min(target["bipartite_graph"]) == derived_daily.get_first_partition_key()
    assert min(target["deployed_model"]) == model_daily.get_first_partition_key()
    graph = defs.resolve_asset_graph()
    for asset, keys in target.items():
        for parent in graph.get(dg.AssetKey(asset)).parent_keys:
            if parent.to_user_string() == "source_logs":
                continue  # observed, not materialized
            needed = _upstream(asset, parent.to_user_string(), keys)
            # days after the range are outside it by choice (docs/operations.md: a range ending before the newest
            # day also re-materializes the windows that read its last days, and they read later days)
            outside = {d for d in needed - target.get(parent.to_user_string(), set()) if d <= days[-1]}
            assert not outside, (asset, parent.to_user_string(), sorted(outside))
