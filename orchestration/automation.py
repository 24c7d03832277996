"""The unattended daily operation: one automation sensor and the freshness check.

``daily_automation`` evaluates the assets' catch-up conditions (``assets/automation.py``) every
30 s once a user turns it on (Automation page of the UI, or ``dagster sensor start``): the
source is observed, then every missing or outdated partition of the catch-up horizon is
requested, as one asset backfill when there are several. It is off by default, like any
schedule, so that ``make dev`` on a laptop does not start training on its own.
"""

from datetime import datetime

import dagster as dg

from assets.partitions import CONFIG, TIMEZONE, model_daily

daily_automation = dg.AutomationConditionSensorDefinition(
    "daily_automation",
    # with the observable source: without it the sensor never observes source_logs, and every
    # asset of the flow waits for it (its partitions stay "missing") on every tick
    target=dg.AssetSelection.all(include_sources=True),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    description="Catch-up and daily refresh of the whole flow (README: 'Using the Dagster UI', daily automation and catch-up).",
)

FRESH_BY = f"0 {CONFIG.automation.fresh_by_hour} * * *"


@dg.asset_check(
    asset="deployed_model",
    required_resource_keys={"pipeline"},
    automation_condition=dg.AutomationCondition.cron_tick_passed(FRESH_BY, TIMEZONE),
    description=f"The newest complete day's deployment decision exists by {CONFIG.automation.fresh_by_hour}:00 "
    f"({TIMEZONE}): run by the automation at that hour, or by hand.",
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
    return dg.AssetCheckResult(
        passed=exists, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"expected_partition": day, "latest_decision": latest, "checked_at": now.isoformat()},
        description=None if exists else f"no deployment decision for {day} yet (latest: {latest})")
