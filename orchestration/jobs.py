"""Jobs: the daily flow (every asset of one partition, logs to deployed model)."""

from __future__ import annotations

import dagster as dg

from assets.partitions import daily

FLOW_GROUPS = ("ingest", "graph", "features", "samples", "model")

daily_flow = dg.define_asset_job(
    name="daily_flow",
    selection=dg.AssetSelection.groups(*FLOW_GROUPS),
    partitions_def=daily,
    description="The whole daily flow for one day: logs -> graphs -> features -> samples -> "
    "trained model -> evaluation -> deployment gate.",
    # One process per run: every step of a day shares the imports (torch, polars) instead of
    # paying 10-20 s of interpreter start-up per step; days run as separate runs.
    executor_def=dg.in_process_executor,
)

model_comparison_job = dg.define_asset_job(
    name="model_comparison_job",
    selection=dg.AssetSelection.assets("model_comparison"),
    partitions_def=daily,
    description="On demand: every comparison variant trained and evaluated on the chosen day "
    "(its data stages must be materialized). Not scheduled.",
    executor_def=dg.in_process_executor,
)
