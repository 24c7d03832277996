"""The flow's three daily partitions definitions and its rolling-window mappings.

All cut days in the source's timezone (``source.timezone``, or a preset's zone), so partition
D holds the events of the source's own calendar day D:

* :data:`daily`: the interaction logs, from ``source.start_date``;
* :data:`derived_daily`: graphs, node features and samples, from the day after (the first day
  with history: a day's graphs read only the days before it). So every derived partition is
  downstream of a log day, and an asset backfill ("Materialize all") over a range of log days
  targets every graph its samples and models read: none is a root left out of the range.
* :data:`model_daily`: the model assets (trained model, evaluation, deployment decision), from
  the first day whose whole training window has samples (``derived start + train.train_days``):
  no model partition lacks training history, so a backfill of "everything" has nothing that
  fails or is skipped on purpose.

Windows come from the pipeline config (``graph.window_days`` = W, ``train.train_days`` = T)
through :mod:`ml_core.stages.windows`, so the lineage graph, backfills and the stage code agree
on which days feed which partition.
"""

from __future__ import annotations

import warnings
from datetime import date, timedelta

import dagster as dg

from ml_core.config import load_config
from ml_core.data.sources import source_timezone
from ml_core.preflight import check_runnable
from ml_core.stages.windows import (
    Window,
    derived_start,
    graph_window_of,
    model_start,
    train_and_eval_window_of,
    train_window_of,
)

CONFIG = load_config()
check_runnable(CONFIG)  # a wrong source.* or train.model fails the code location load, not a run

#: The zone the source's days (and so the partitions) are cut in.
TIMEZONE = source_timezone(CONFIG.source)

# source.end_date is inclusive; Dagster's end_date is exclusive.
_end = (date.fromisoformat(CONFIG.source.end_date) + timedelta(days=1)).isoformat() if CONFIG.source.end_date else None



def _days_from(start: date | str) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=str(start), end_date=_end, timezone=TIMEZONE)


daily = _days_from(CONFIG.source.start_date)
derived_daily = _days_from(derived_start(CONFIG))
model_daily = _days_from(model_start(CONFIG))


def mapping(window: Window) -> dg.TimeWindowPartitionMapping:
    """Partition D reads the upstream partitions of ``window`` (missing early days are dropped)."""
    with warnings.catch_warnings():  # the flag is marked beta; its behaviour is what we need
        warnings.simplefilter("ignore")
        return dg.TimeWindowPartitionMapping(start_offset=window.start_offset, end_offset=window.end_offset,
                                             allow_nonexistent_upstream_partitions=True)


#: D-W .. D-1: the logs of a day's graphs and node features.
graph_window_mapping = mapping(graph_window_of(CONFIG))
#: D-T .. D-1: the training days of a day's model.
train_window_mapping = mapping(train_window_of(CONFIG))
#: The training days of D and D itself (the held-out evaluation day of the model comparison).
train_and_eval_mapping = mapping(train_and_eval_window_of(CONFIG))
#: D-1: the previous deployment decision (the production model day D is judged against).
previous_day_mapping = mapping(Window(-1, -1))
