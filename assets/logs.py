"""source_logs (the configured source, observed) and interaction_logs: the validated,
de-duplicated events of day D, with a quarantine of rejected rows (reasons and counts in the
metadata)."""

from collections.abc import Iterator

import dagster as dg

from assets.automation import LOGS, OBSERVE
from assets.common import code_version, fields_of, result, settings, stage, stoppable
from assets.partitions import daily
from assets.ranges import materialize_days
from ml_core.data.sources import day_versions
from ml_core.stages.logs import run_interaction_logs
from ml_core.stages.windows import catch_up_of, window


def observed_days(cfg) -> list[str]:
    """The days one observation of the source reports: the newest ``automation.observe_days``
    partitions (default: the logs of the catch-up horizon)."""
    last, n = daily.get_last_partition_key(), cfg.automation.observe_days or catch_up_of(cfg).logs
    return window(last, 1 - n, 0, first_day=cfg.source.start_date) if last else []


@dg.observable_source_asset(
    partitions_def=daily, group_name="ingest", owners=["team:recsys"], required_resource_keys={"pipeline"},
    automation_condition=OBSERVE,
    description="The configured source (source.* in the pipeline config), observed: the data version of "
    "partition D is the content hash of the source's rows of day D, so a day whose data arrives or "
    "changes after it was ingested is noticed and re-ingested by the automation. Days whose data "
    "has not arrived have no version.",
)
def source_logs(context) -> dg.DataVersionsByPartition:
    cfg = context.resources.pipeline.config()
    days = observed_days(cfg)
    versions = day_versions(cfg.source, days)
    arrived = {d: v for d, v in versions.items() if v is not None}
    context.log.info(f"source observed for {len(days)} days: {len(arrived)} have data"
                     + (f" (not arrived: {sorted(set(versions) - set(arrived))})" if len(arrived) < len(days) else ""))
    return dg.DataVersionsByPartition(arrived)


@dg.asset(
    **stage("ingest", {"polars", "parquet"}, automation_condition=LOGS, partitions_def=daily),
    deps=[source_logs],
    code_version=code_version("assets.logs", "ml_core.stages.logs"),
)
@stoppable
def interaction_logs(context: dg.AssetExecutionContext) -> Iterator:
    """Validated events of day D (user_id, item_id, behavior, ts, category, ds) and the
    quarantine of rows that could not be read, each with its reason."""
    cfg, lake = settings(context)

    def day_result(day: str) -> dg.MaterializeResult:
        out = run_interaction_logs(cfg, lake, day)
        if out.quarantined:
            context.log.warning(f"{out.quarantined} rows quarantined on {day}: {out.quarantine_reasons}")
        return result(lake, "interaction_logs", day, fields_of(out))

    yield from materialize_days(context, day_result)

