"""node_features: user and item feature tables of day D (profiles + behavioural aggregates over
days D-W .. D-1)."""


import dagster as dg

from assets.automation import DATA
from assets.common import code_version, fields_of, result, settings, stage, stoppable
from assets.partitions import graph_window
from ml_core.stages.features import run_node_features


@dg.asset(
    **stage("features", {"polars", "parquet"}, automation_condition=DATA),
    ins={"interaction_logs": dg.AssetIn(partition_mapping=graph_window)},
    code_version=code_version("assets.features", "ml_core.stages.features"),
)
@stoppable
def node_features(context: dg.AssetExecutionContext, interaction_logs) -> dg.MaterializeResult:
    """Feature vectors of every user and item: profile columns (when the source has profiles)
    and behavioural aggregates over the graph window (never day D)."""
    cfg, lake = settings(context)
    day = context.partition_key
    out = run_node_features(cfg, lake, day, interaction_logs.days)
    return result(lake, "node_features", day, fields_of(out))
