"""The data stages of one day in their order (logs, graphs, features, samples): the one place
scripts, benchmarks and tests take that order from (the daily flow's assets declare it as
lineage)."""

from __future__ import annotations

from ml_core.catalog import TRAINING_SAMPLES
from ml_core.config import PipelineConfig
from ml_core.stages.features import run_node_features
from ml_core.stages.graphs import run_window_graphs
from ml_core.stages.logs import run_interaction_logs
from ml_core.stages.samples import run_training_samples
from ml_core.stages.windows import graph_window_days
from ml_core.storage import Lake


def run_data_day(cfg: PipelineConfig, lake: Lake, day, only_missing: bool = False) -> bool:
    """Every data stage of ``day`` in order; run days in date order so each window's earlier
    days exist. With ``only_missing``, stored logs are kept and a day whose samples are stored
    is left as it is. Returns whether the graphs, features and samples were computed."""
    if not (only_missing and lake.exists("interaction_logs", day)):
        run_interaction_logs(cfg, lake, day)
    if only_missing and lake.exists(TRAINING_SAMPLES, day):
        return False
    days = graph_window_days(cfg, day)
    run_window_graphs(cfg, lake, day, days)
    run_node_features(cfg, lake, day, days)
    run_training_samples(cfg, lake, day)
    return True


def run_data_days(cfg: PipelineConfig, lake: Lake, days: list[str]) -> None:
    """:func:`run_data_day` for each of ``days``, in date order."""
    for d in sorted(days):
        run_data_day(cfg, lake, d)
