"""training_samples: day D's positive (user, item) pairs with K task labels plus sampled
negatives."""


import dagster as dg

from assets.common import COMMON, code_version, result, settings, stage
from ml_core import pipeline


@dg.asset(
    **stage("samples", {"polars", "parquet"}),
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
