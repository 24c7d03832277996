"""The code location loads, every job resolves, and the asset graph is the flow of DESIGN.md."""

import dagster as dg

from orchestration.definitions import defs

FLOW = {"interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features",
        "training_samples", "trained_model", "model_evaluation", "deployed_model"}


def test_definitions_resolve_every_job_and_schedule():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert FLOW <= keys
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    # the two jobs of the UI plus Dagster's implicit asset job (what "Materialize" on the lineage page runs)
    assert set(jobs) == {"daily_flow", "model_comparison_job", "__ASSET_JOB"}, sorted(jobs)
    for name, job in jobs.items():
        keys = job.asset_layer.selected_asset_keys
        assert keys, f"{name} selects no asset"
        assert job.partitions_def == graph.get(next(iter(keys))).partitions_def, name  # the one daily partitioning
    # the named jobs run in process: a multiprocess step would re-import torch per step
    assert {n: jobs[n].executor_def.name for n in ("daily_flow", "model_comparison_job")} == {
        "daily_flow": "in_process", "model_comparison_job": "in_process"}
    job = jobs["daily_flow"]
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} >= FLOW
    sched = defs.resolve_schedule_def("daily_flow_schedule")
    assert sched.cron_schedule == "30 2 * * *"
    # the comparison runs on demand: its own job, outside the scheduled daily flow
    assert "model_comparison" not in {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    cmp_job = defs.resolve_job_def("model_comparison_job")
    assert {k.to_user_string() for k in cmp_job.asset_layer.selected_asset_keys} == {"model_comparison"}


def test_every_asset_is_daily_partitioned_versioned_described_and_grouped():
    graph = defs.resolve_asset_graph()
    partitions = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.code_version, key
        assert node.description, key
        assert node.group_name in {"ingest", "graph", "features", "samples", "model", "comparison"}, key
        partitions.add(id(node.partitions_def))
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
    assert len(partitions) == 1  # one DailyPartitionsDefinition for all


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


def test_checks_fail_without_a_partition(tmp_path):
    """A run with no partition does not judge some stored day (here: a stored, clean one)."""
    from ml_core.stages.logs import run_interaction_logs
    from ml_core.storage import Lake
    from orchestration.checks import CHECKS
    from orchestration.definitions import FLOW_ASSETS
    from orchestration.resources import LakeIOManager, PipelineResource
    from tests.conftest import make_config

    run_interaction_logs(make_config(tmp_path), Lake(tmp_path), "2026-01-01")
    res = {"pipeline": PipelineResource(overrides=[f'storage.root="{tmp_path}"']), "lake_io": LakeIOManager()}
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
