"""The code location: assembles assets, checks, jobs, schedules and resources. Nothing else."""

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
)
from orchestration.checks import CHECKS
from orchestration.jobs import daily_flow, model_comparison_job
from orchestration.recovery import RECOVERY_SENSORS
from orchestration.resources import LakeIOManager, PipelineResource
from orchestration.schedules import daily_flow_schedule

#: The daily flow (logs -> deployed model) and the on-demand comparison.
FLOW_ASSETS = dg.load_assets_from_modules([logs, graphs, features, samples, training, evaluation, deployment])
ALL_ASSETS = [*FLOW_ASSETS, *dg.load_assets_from_modules([comparison])]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=CHECKS,
    jobs=[daily_flow, model_comparison_job],
    schedules=[daily_flow_schedule],
    sensors=RECOVERY_SENSORS,
    resources={"pipeline": PipelineResource(), "lake_io": LakeIOManager()},
)
