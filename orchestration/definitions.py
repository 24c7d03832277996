"""The code location: assembles assets, checks, jobs, schedules and resources. Nothing else."""

from __future__ import annotations

import dagster as dg

from assets import features, graphs, logs, model, samples
from orchestration.checks import CHECKS
from orchestration.jobs import daily_flow
from orchestration.resources import LakeIOManager, PipelineResource
from orchestration.schedules import daily_flow_schedule

ALL_ASSETS = dg.load_assets_from_modules([logs, graphs, features, samples, model])

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=CHECKS,
    jobs=[daily_flow],
    schedules=[daily_flow_schedule],
    resources={"pipeline": PipelineResource(), "lake_io": LakeIOManager()},
)
