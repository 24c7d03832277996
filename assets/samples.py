"""training_samples: day D's positive (user, item) pairs with K task labels plus sampled
negatives."""

from collections.abc import Iterator

import dagster as dg

from assets.automation import DATA
from assets.common import code_version, fields_of, result, settings, stage, stoppable
from assets.ranges import materialize_days
from ml_core.catalog import BIPARTITE_GRAPH, INTERACTION_LOGS, TRAINING_SAMPLES
from ml_core.stages.samples import run_training_samples


@dg.asset(
    **stage("samples", {"polars", "parquet"}, automation_condition=DATA),
    # read by the stage from the lake (day D's logs and its graph's item pool): lineage only
    deps=[dg.AssetDep(INTERACTION_LOGS), dg.AssetDep(BIPARTITE_GRAPH)],
    code_version=code_version("assets.samples", "ml_core.stages.samples"),
)
@stoppable
def training_samples(context: dg.AssetExecutionContext) -> Iterator:
    """Samples of day D: positives labelled per task (default click = any behaviour, purchase =
    buy) and popularity-sampled negatives of items the user did not touch that day."""
    cfg, lake = settings(context)
    yield from materialize_days(
        context, lambda day: result(lake, TRAINING_SAMPLES, day, fields_of(run_training_samples(cfg, lake, day))))
