"""When the automation materializes what: one catch-up condition for every asset of the flow.

Dagster's declarative automation (the ``daily_automation`` sensor, off until a user turns it
on) evaluates these every 30 s. A partition is requested when

* it is one of the newest partitions of its catch-up horizon (:func:`ml_core.stages.windows.catch_up_of`:
  the last ``automation.catch_up_days`` decisions, plus the sample, feature, graph and log days
  those decisions' models read), and
* it is missing (and its last run did not fail: a failed day waits for a person, after the
  instance's one automatic retry), or an input was updated since it was last requested (late
  data: a source day whose content changed is re-ingested, and every window of the horizon that
  reads it is rebuilt; the model assets are re-run for the newest day only, since a decision
  for an older day can no longer move production), and
* no input is missing (unless it is requested on the same tick), or in progress, and it is not
  in progress itself.

A tick that requests many partitions submits them as one asset backfill, which runs them with
the assets' backfill policies (:mod:`assets.ranges`): the data days ``automation.data_days_per_run``
a run, in parallel where the partition mappings allow, the model chain's days in one run in date
order (the decision of D after the decision of D-1). So a catch-up after a week away is a few
runs, not one per day and asset group. Older missing days are a backfill a person launches.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from assets.partitions import CONFIG, TIMEZONE
from ml_core.stages.windows import catch_up_of

AC = dg.AutomationCondition
HORIZON = catch_up_of(CONFIG)


def catch_up(days: int, refresh_days: int | None = None, ignore_missing: str | None = None) -> dg.AutomationCondition:
    """Materialize the newest ``days`` partitions when missing, and the newest ``refresh_days``
    (default: ``days``) when an input was updated since.

    ``ignore_missing``: the asset's own previous day (a self-dependency), whose missing
    partitions do not hold this one back: before the horizon it may never have been decided, and
    inside the horizon a missing previous day is requested on the same tick (its inputs are a
    window one day earlier), and the asset backfill that tick submits runs the days in date
    order, as one range (:mod:`assets.ranges`). Dagster cannot tell that from the condition
    (``will_be_requested`` of another partition of the same asset is not known while the asset is
    evaluated): waiting for it requested one model day per tick. A missing previous day that
    cannot be requested now does hold it back: its last run failed, or one of its inputs is in
    progress or missing (other than its own previous day, judged the same way on its own day)."""
    missing = AC.missing() & ~AC.will_be_requested()
    blocked = AC.any_deps_match(missing)
    if ignore_missing:
        dep = dg.AssetSelection.assets(ignore_missing)
        held = AC.execution_failed() | AC.any_deps_in_progress() | AC.any_deps_match(missing).ignore(dep)
        blocked = (blocked.ignore(dep)
                   | AC.any_deps_match(AC.in_latest_time_window(timedelta(days=days)) & AC.missing() & held).allow(dep))
    return (
        AC.in_latest_time_window(timedelta(days=days))
        & ((AC.missing() & ~AC.execution_failed())
           | (AC.in_latest_time_window(timedelta(days=refresh_days or days))
              & AC.any_deps_updated().since_last_handled()))
        & ~blocked
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label(f"catch_up({days} days)")


#: interaction_logs: every day the horizon's graphs read.
LOGS = catch_up(HORIZON.logs)
#: graphs, node features, training samples: the days the horizon's models train on.
DATA = catch_up(HORIZON.data)
#: model_evaluation.
MODEL = catch_up(HORIZON.model, refresh_days=1)
#: trained_model (warm-started from trained_model[D-1] when it exists: before the horizon it may not).
TRAINING = catch_up(HORIZON.model, refresh_days=1, ignore_missing="trained_model")
#: deployed_model (after the previous day's).
DECISION = catch_up(HORIZON.model, refresh_days=1, ignore_missing="deployed_model")
#: The source is observed on ``automation.observe_cron`` (its timezone) and when the automation starts:
#: one run, for the newest partition (one observation reports the versions of the newest
#: ``automation.observe_days`` days, whichever partition it runs for; requesting every partition
#: would launch one identical observation run per day since source.start_date).
OBSERVE = (AC.in_latest_time_window()
           & (AC.initial_evaluation() | AC.cron_tick_passed(CONFIG.automation.observe_cron, TIMEZONE))
           ).with_label("observe")
