"""Asset checks: properties the flow guards, each reporting what it observed and expected.

A check judges the partitions of the run it runs in: the day of a one-day run (the
``dagster/partition`` tag), or every day of a ranged run (a backfill chunk, a catch-up, the run
command's ``--range``: the ``dagster/asset_partition_range_start/end`` tags); it passes when
every day does, and lists the days that did not. A run without a partition fails the check and
says so: there is no partition to judge, and guessing one (say, the newest stored) would judge
another day.
"""


import json
import math

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.partitions import daily, model_daily
from ml_core.stages.evaluation import load_evaluation
from ml_core.storage import Lake


def _lake(context) -> Lake:
    return context.resources.pipeline.lake()


def run_days(context, partitions_def: dg.PartitionsDefinition) -> list[str]:
    """The days of ``partitions_def`` that the check's run materializes (none: not a partitioned run)."""
    tags = context.run.tags
    if tags.get("dagster/partition"):
        return [tags["dagster/partition"]]
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if start and end:
        return list(partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))
    return []


def _no_partition(asset: str) -> dg.AssetCheckResult:
    msg = (f"this run has no partition (no dagster/partition tag nor partition range): the check judges the days "
           f"of {asset} that its run materializes; run it with the asset (e.g. in the daily_logs or daily_model run)")
    return dg.AssetCheckResult(passed=False, description=msg, metadata={"observed": msg})


def _over_days(days: list[str], judge) -> dg.AssetCheckResult:
    """One result for the run's days: ``judge(day)`` gives ``(passed, metadata)``; a single day's
    metadata is kept as it is, a range's per day, with the days that failed."""
    verdicts = {d: judge(d) for d in days}
    if len(days) == 1:
        passed, md = verdicts[days[0]]
        return dg.AssetCheckResult(passed=passed, metadata=md)
    failed = [d for d, (ok, _) in verdicts.items() if not ok]
    return dg.AssetCheckResult(passed=not failed, metadata={
        "partitions": f"{days[0]}..{days[-1]}", "failed_days": json.dumps(failed),
        "per_day": dg.MetadataValue.json({d: {k: str(v) for k, v in md.items()} for d, (_, md) in verdicts.items()})},
        description=f"failed on {failed}" if failed else None)


@dg.asset_check(asset="model_evaluation", blocking=True, required_resource_keys={"pipeline"},
                description="Every task's GAUC is a number (not NaN): promotion is blocked otherwise.")
def check_gauc_is_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    days = run_days(context, model_daily)
    if not days:
        return _no_partition("model_evaluation")
    lake = _lake(context)

    def judge(day: str) -> tuple[bool, dict]:
        if not lake.exists("model_evaluation", day):
            return False, {"observed": f"no evaluation partition {day}"}
        gaucs = {t: m["gauc"] for t, m in load_evaluation(lake, day).candidate.items()}
        ok = all(isinstance(v, float) and math.isfinite(v) for v in gaucs.values())
        return ok, {"partition": day, "observed": json.dumps(gaucs), "expected": "finite GAUC for every task"}

    return _over_days(days, judge)


@dg.asset_check(asset="interaction_logs", required_resource_keys={"pipeline"},
                description="Quarantined rows stay under 5% of the day's rows.")
def check_quarantine_share(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    days = run_days(context, daily)
    if not days:
        return _no_partition("interaction_logs")
    lake = _lake(context)

    def judge(day: str) -> tuple[bool, dict]:
        if not lake.exists("interaction_logs", day):
            return False, {"observed": f"no partition {day}"}
        rows = lake.read_table("interaction_logs", day).height
        q = lake.read_table("interaction_logs", day, "quarantine").height
        share = q / max(rows + q, 1)
        return share <= 0.05, {"partition": day, "observed_share": share, "expected": "<= 0.05", "quarantined": q}

    return _over_days(days, judge)


CHECKS = [check_gauc_is_finite, check_quarantine_share]
