"""training_samples: day D's positive (user, item) pairs with K task labels plus sampled
negatives."""


import dagster as dg

from assets.common import COMMON, LAKE_IO, code_version, result, settings
from assets.partitions import daily
from ml_core import pipeline


@dg.asset(
    partitions_def=daily,
    group_name="samples",
    kinds={"polars", "parquet"},
    owners=["team:recsys"],
    io_manager_key=LAKE_IO,
    required_resource_keys={"pipeline"},
    ins={"interaction_logs": dg.AssetIn(), "bipartite_graph": dg.AssetIn()},
    code_version=code_version(*COMMON, "ml_core/sampling", "assets/samples.py"),
)
def training_samples(context: dg.AssetExecutionContext, interaction_logs, bipartite_graph) -> dg.MaterializeResult:
    """Samples of day D: positives labelled per task (default click = any behaviour, purchase =
    buy) and popularity-sampled negatives of items the user did not touch that day."""
    cfg, lake = settings(context)
    day = context.partition_key
    stats = pipeline.run_training_samples(cfg, lake, day)
    return result(lake, "training_samples", day, stats)
