"""Jobs: the daily flow of one day as three runs, logs, data then model (one job per partitions
definition: the derived data start the day after the logs, the models once a training window
exists), and the on-demand model comparison and search.

The automation (``orchestration/automation.py``) and asset backfills need no job: they target
assets. These jobs are for ``make run`` (``orchestration/run_flow.py``) and for launching one
day by hand from the UI's Jobs page.
"""

from __future__ import annotations

import dagster as dg

from orchestration.automation import check_decision_is_fresh

LOG_GROUPS = ("ingest",)
DATA_GROUPS = ("graph", "features", "samples")
MODEL_GROUPS = ("model",)

def _job(name: str, selection, description: str):
    # One process per run: every step of a day shares the imports (torch, polars) instead of
    # paying 10-20 s of interpreter start-up per step. The partitions are the selected assets'
    # (Dagster infers them; its partitions_def argument is deprecated).
    return dg.define_asset_job(name=name, selection=selection, description=description,
                               executor_def=dg.in_process_executor)


daily_logs = _job("daily_logs", dg.AssetSelection.groups(*LOG_GROUPS),
                  "The logs of one day: the source's rows of the day, validated (rejects quarantined).")
daily_data = _job("daily_data", dg.AssetSelection.groups(*DATA_GROUPS),
                  "The derived data of one day (its logs and those of its graph window first): graphs -> "
                  "node features -> training samples.")
# with the model assets' checks, less the freshness check (it judges the newest day, not this run's)
daily_model = _job("daily_model",
                   dg.AssetSelection.groups(*MODEL_GROUPS) - dg.AssetSelection.checks(check_decision_is_fresh),
                   "The model stages of one day (its data stages and those of its window first): "
                   "trained model -> evaluation -> deployment decision.")
model_comparison_job = _job("model_comparison_job", dg.AssetSelection.assets("model_comparison"),
                            "On demand: every comparison variant trained and evaluated on the chosen day "
                            "(its data stages must be materialized). Not automated.")
tuning_job = _job("tuning_job", dg.AssetSelection.assets("hyperparameter_search"),
                  "On demand: the [tuning] hyper-parameter search of one model on the chosen day "
                  "(its data stages must be materialized). Not automated.")

#: The jobs ``make run`` runs for each day, in this order (a job without that day's partition is left out).
DAILY_JOBS = (daily_logs, daily_data, daily_model)
#: Every job of the code location.
ALL_JOBS = (*DAILY_JOBS, model_comparison_job, tuning_job)
