"""The ``[automation]`` section of the configuration (:mod:`ml_core.config`): the unattended daily
operation (catch-up, freshness) and how many days one backfill or catch-up run takes."""

from __future__ import annotations

from dataclasses import dataclass

from ml_core.typed import ConfigError


@dataclass
class AutomationConfig:
    """The unattended daily operation (Dagster's declarative automation, docs/operations.md)."""

    #: Days of deployment decisions (deployed_model, the newest partitions) the automation brings
    #: into being when it is turned on, after an empty lake or after downtime; the data partitions
    #: those days read (their train.train_days and graph.window_days) are caught up with them.
    #: Older missing days are a backfill.
    catch_up_days: int = 7
    #: When the source is observed for newly arrived or changed days (cron, source timezone).
    #: A changed day is re-ingested and its dependents re-materialized.
    observe_cron: str = "*/15 * * * *"
    #: deployed_model[D-1] is expected by this hour of day D (source timezone): freshness policy.
    fresh_by_hour: int = 6
    #: Source days observed for late data: the newest ``observe_days`` partitions (0 = the
    #: catch-up horizon: catch_up_days + train.train_days + graph.window_days).
    observe_days: int = 0
    #: Days of a data asset (logs, graphs, features, samples) one backfill or catch-up run
    #: materializes (Dagster's ``BackfillPolicy.multi_run``); chunks run in parallel where the
    #: window mappings allow. 0 = the whole requested range in one run (``single_run``). 10:
    #: each run's 12-14 s of imports is paid once per 10 days, and a 30-day backfill still
    #: has 3 chunks per stage to run side by side.
    data_days_per_run: int = 10
    #: Days of the model chain (trained_model, model_evaluation, deployed_model) one run takes, in
    #: date order in one process (each day reads the previous day's model and decision).
    #: 0 = the whole requested range in one run (``single_run``, what ``dagster asset
    #: materialize --partition-range`` requires); N = chunks of N days, one after another.
    model_days_per_run: int = 0


def check_automation(auto: AutomationConfig) -> None:
    """Raise :class:`~ml_core.typed.ConfigError` naming the first bad ``automation.*`` value."""
    if auto.catch_up_days < 1 or auto.observe_days < 0 or not 0 <= auto.fresh_by_hour <= 23:
        raise ConfigError("automation: catch_up_days >= 1, observe_days >= 0 and 0 <= fresh_by_hour <= 23")
    if auto.data_days_per_run < 0 or auto.model_days_per_run < 0:
        raise ConfigError(f"automation.data_days_per_run = {auto.data_days_per_run}, model_days_per_run = "
                          f"{auto.model_days_per_run}: expected >= 0 (0 = a whole range in one run)")
    if len(auto.observe_cron.split()) != 5:
        raise ConfigError(f"automation.observe_cron = {auto.observe_cron!r}: expected a 5-field cron expression")
