"""The code location: assembles assets, checks, jobs, the automation and resources. Nothing else."""

from __future__ import annotations

import dagster as dg

from assets import (
    comparison,
    deployment,
    evaluation,
    features,
    graphs,
    logs,
    samples,
    training,
    tuning,
)
from orchestration.automation import check_decision_is_fresh, daily_automation
from orchestration.checks import CHECKS
from orchestration.jobs import ALL_JOBS
from orchestration.recovery import RECOVERY_SENSORS
from orchestration.resources import flow_resources

#: The daily flow (source -> logs -> deployed model), the on-demand comparison and search.
FLOW_ASSETS = dg.load_assets_from_modules([logs, graphs, features, samples, training, evaluation, deployment])
ALL_ASSETS = [*FLOW_ASSETS, *dg.load_assets_from_modules([comparison, tuning])]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=[*CHECKS, check_decision_is_fresh],
    jobs=list(ALL_JOBS),
    sensors=[daily_automation, *RECOVERY_SENSORS],
    resources=flow_resources(),
    # what asset backfills and the automation's runs use too: one process per run (a step per
    # process would re-import torch and polars for every step)
    executor=dg.in_process_executor,
)
