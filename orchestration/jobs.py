"""Jobs: the daily flow of one day as two runs, data then model (the model assets' partitions
start once a training window exists), and the on-demand model comparison.

The automation (``orchestration/automation.py``) and asset backfills need no job: they target
assets. These jobs are for ``make run`` (``orchestration/run_flow.py``) and for launching one
day by hand from the UI's Jobs page.
"""

from __future__ import annotations

import dagster as dg

from assets.partitions import daily, model_daily
from orchestration.automation import check_decision_is_fresh

DATA_GROUPS = ("ingest", "graph", "features", "samples")
MODEL_GROUPS = ("model",)

daily_data = dg.define_asset_job(
    name="daily_data",
    selection=dg.AssetSelection.groups(*DATA_GROUPS),
    partitions_def=daily,
    description="The data stages of one day: logs -> graphs -> node features -> training samples.",
    # One process per run: every step of a day shares the imports (torch, polars) instead of
    # paying 10-20 s of interpreter start-up per step.
    executor_def=dg.in_process_executor,
)

daily_model = dg.define_asset_job(
    name="daily_model",
    # with the model assets' checks, less the freshness check (it judges the newest day, not this run's)
    selection=dg.AssetSelection.groups(*MODEL_GROUPS) - dg.AssetSelection.checks(check_decision_is_fresh),
    partitions_def=model_daily,
    description="The model stages of one day (its data stages and those of its window first): trained "
    "model -> evaluation -> deployment decision.",
    executor_def=dg.in_process_executor,
)

model_comparison_job = dg.define_asset_job(
    name="model_comparison_job",
    selection=dg.AssetSelection.assets("model_comparison"),
    partitions_def=model_daily,
    description="On demand: every comparison variant trained and evaluated on the chosen day "
    "(its data stages must be materialized). Not automated.",
    executor_def=dg.in_process_executor,
)

tuning_job = dg.define_asset_job(
    name="tuning_job",
    selection=dg.AssetSelection.assets("hyperparameter_search"),
    partitions_def=model_daily,
    description="On demand: the [tuning] hyper-parameter search of one model on the chosen day "
    "(its data stages must be materialized). Not automated.",
    executor_def=dg.in_process_executor,
)

#: (job, first day) in the order ``make run`` runs them for each day.
DAILY_JOBS = (daily_data, daily_model)
