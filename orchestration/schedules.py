"""Schedules: run the daily flow for yesterday's partition every morning."""

from __future__ import annotations

import dagster as dg

from orchestration.jobs import daily_flow

# 02:30 UTC: yesterday's partition is complete; the schedule targets the latest partition.
daily_flow_schedule = dg.build_schedule_from_partitioned_job(
    daily_flow, hour_of_day=2, minute_of_hour=30, name="daily_flow_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
