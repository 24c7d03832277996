"""The unattended daily operation: one automation sensor and the freshness check.

``daily_automation`` evaluates the assets' catch-up conditions (``assets/automation.py``) every
30 s once a user turns it on (Automation page of the UI, or ``dagster sensor start``): the
source is observed, then every missing or outdated partition of the catch-up horizon is
requested, as one asset backfill when there are several. It is off by default, like any
schedule, so that ``make dev`` on a laptop does not start training on its own.
"""

from datetime import datetime

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from assets.logs import source_logs
from assets.partitions import CONFIG, TIMEZONE, model_daily

daily_automation = dg.AutomationConditionSensorDefinition(
    "daily_automation",
    # with the observable source: without it the sensor never observes source_logs, and every
    # asset of the flow waits for it (its partitions stay "missing") on every tick. Named, rather
    # than AssetSelection.all(include_sources=True), whose parameter is beta (docs/dagster.md).
    target=dg.AssetSelection.all() | dg.AssetSelection.assets(source_logs.key),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Catch-up and daily refresh of the whole flow (docs/operations.md: daily automation and catch-up).",
)

FRESH_BY = f"0 {CONFIG.automation.fresh_by_hour} * * *"
#: The asset whose partitions the freshness check expects.
DECISIONS = dg.AssetKey("deployed_model")


def catch_up_in_progress(instance: dg.DagsterInstance) -> str | None:
    """What is writing deployment decisions now, or None: an asset backfill in progress that
    targets deployed_model (the automation submits its catch-up as one), or a run in progress
    that materializes it."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    for b in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        if DECISIONS in (b.asset_selection or ()):
            return f"backfill {b.backfill_id}"
    runs = instance.get_run_records(dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES)))
    for r in runs:
        if DECISIONS in (r.dagster_run.asset_selection or ()):
            return f"run {r.dagster_run.run_id[:8]}"
    return None


def freshness(expected: str, decided: bool, latest: str, catching_up: str | None) -> tuple[bool, str, str | None]:
    """``(passed, state, description)`` of the freshness check: ``fresh`` when day ``expected`` is
    decided; ``catching up`` (passed) while ``catching_up`` is writing decisions, with the day
    reached (``latest``); else ``late`` (failed)."""
    if decided:
        return True, "fresh", None
    if catching_up:
        return True, "catching up", (f"catching up: decisions reached {latest}, {expected} expected "
                                     f"({catching_up} in progress)")
    return False, "late", f"no deployment decision for {expected} yet (latest: {latest})"


@dg.asset_check(
    asset="deployed_model",
    required_resource_keys={"pipeline"},
    automation_condition=dg.AutomationCondition.cron_tick_passed(FRESH_BY, TIMEZONE),
    description=f"The newest complete day's deployment decision exists by {CONFIG.automation.fresh_by_hour}:00 "
    f"({TIMEZONE}): run by the automation at that hour, or by hand. While a catch-up that writes "
    "decisions is in progress it passes as 'catching up', with the day reached.",
)
def check_decision_is_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    now = datetime.now().astimezone()
    keys = model_daily.get_partition_keys(current_time=now)
    day = keys[-1] if keys else None
    if day is None:
        return dg.AssetCheckResult(passed=True, metadata={"observed": "no model partition has ended yet"})
    lake = context.resources.pipeline.lake()
    exists = lake.exists("deployed_model", day)
    latest = max(lake.days("deployed_model"), default="none")
    passed, state, description = freshness(day, exists, latest, None if exists else catch_up_in_progress(context.instance))
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=description,
        metadata={"expected_partition": day, "latest_decision": latest, "state": state, "checked_at": now.isoformat()})
