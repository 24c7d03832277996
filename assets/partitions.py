"""The one DailyPartitionsDefinition of the flow and its rolling-window mappings.

Windows come from the pipeline config (``graph.window_days`` = W, ``train.train_days`` = T) so
the lineage graph, backfills and the stage code agree on which days feed which partition.
"""

from __future__ import annotations

import warnings
from datetime import date, timedelta

import dagster as dg

from ml_core.checks import check_runnable
from ml_core.config import load_config

CONFIG = load_config()
check_runnable(CONFIG)  # a wrong source.* or train.model fails the code location load, not a run

# source.end_date is inclusive; Dagster's end_date is exclusive.
_end = (date.fromisoformat(CONFIG.source.end_date) + timedelta(days=1)).isoformat() if CONFIG.source.end_date else None

daily = dg.DailyPartitionsDefinition(start_date=CONFIG.source.start_date, end_date=_end)


def days_before(n: int, include_day: bool = False) -> dg.TimeWindowPartitionMapping:
    """Partition D reads upstream partitions D-n .. D-1 (.. D with ``include_day``; missing early
    days are dropped)."""
    with warnings.catch_warnings():  # the flag is marked beta; its behaviour is what we need
        warnings.simplefilter("ignore")
        return dg.TimeWindowPartitionMapping(start_offset=-n, end_offset=0 if include_day else -1,
                                             allow_nonexistent_upstream_partitions=True)


graph_window = days_before(CONFIG.graph.window_days)
train_window = days_before(CONFIG.train.train_days)
#: The training days of D and D itself (the held-out evaluation day of the model comparison).
train_and_eval_window = days_before(CONFIG.train.train_days, include_day=True)
