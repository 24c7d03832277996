"""interaction_logs: the validated, de-duplicated events of day D from the configured source,
with a quarantine of rejected rows (reasons and counts in the metadata)."""


import dagster as dg

from assets.common import COMMON, code_version, result, settings, stage
from ml_core import pipeline


@dg.asset(
    **stage("ingest", {"polars", "parquet"}),
    code_version=code_version(*COMMON, "ml_core/data", "assets/logs.py"),
)
def interaction_logs(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Validated events of day D (user_id, item_id, behavior, ts, category, ds) and the
    quarantine of rows that could not be read, each with its reason."""
    cfg, lake = settings(context)
    day = context.partition_key
    stats = pipeline.run_interaction_logs(cfg, lake, day)
    if stats["quarantined"]:
        context.log.warning(f"{stats['quarantined']} rows quarantined on {day}: {stats['quarantine_reasons']}")
    return result(lake, "interaction_logs", day, stats)
