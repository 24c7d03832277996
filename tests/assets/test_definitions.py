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
