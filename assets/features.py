"""node_features: user and item feature tables of day D (profiles + behavioural aggregates over
days D-W .. D-1)."""

from collections.abc import Iterator

import dagster as dg

from assets.automation import DATA
from assets.common import code_version, fields_of, result, settings, stage, stoppable
from assets.partitions import graph_window_mapping
from assets.ranges import materialize_days, upstream_days
from ml_core.catalog import INTERACTION_LOGS, NODE_FEATURES
from ml_core.stages.features import run_node_features


@dg.asset(
    **stage("features", {"polars", "parquet"}, automation_condition=DATA),
    ins={INTERACTION_LOGS: dg.AssetIn(partition_mapping=graph_window_mapping)},
    code_version=code_version("assets.features", "ml_core.stages.features"),
)
@stoppable
def node_features(context: dg.AssetExecutionContext, interaction_logs) -> Iterator:
    """Feature vectors of every user and item: profile columns (when the source has profiles)
    and behavioural aggregates over the graph window (never day D)."""
    cfg, lake = settings(context)

    def day_result(day: str) -> dg.MaterializeResult:
        out = run_node_features(cfg, lake, day, upstream_days(context, "interaction_logs", day))
        return result(lake, NODE_FEATURES, day, fields_of(out))

    yield from materialize_days(context, day_result)
