"""interaction_logs: the validated, de-duplicated events of day D from the configured source,
with a quarantine of rejected rows (reasons and counts in the metadata)."""


import dagster as dg

from assets.common import code_version, fields_of, result, settings, stage
from ml_core.stages.logs import run_interaction_logs


@dg.asset(
    **stage("ingest", {"polars", "parquet"}),
    code_version=code_version("assets.logs", "ml_core.stages.logs"),
)
def interaction_logs(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Validated events of day D (user_id, item_id, behavior, ts, category, ds) and the
    quarantine of rows that could not be read, each with its reason."""
    cfg, lake = settings(context)
    day = context.partition_key
    out = run_interaction_logs(cfg, lake, day)
    if out.quarantined:
        context.log.warning(f"{out.quarantined} rows quarantined on {day}: {out.quarantine_reasons}")
    return result(lake, "interaction_logs", day, fields_of(out))
