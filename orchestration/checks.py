"""Asset checks: properties the flow guards, each reporting what it observed and expected."""


import json
import math

import dagster as dg

from ml_core.pipeline import load_evaluation
from ml_core.storage import Lake


def _lake(context) -> Lake:
    return context.resources.pipeline.lake()


def _partition(context, lake: Lake, asset: str) -> str | None:
    """The run's partition (checks run in the partition's run), else the newest stored one."""
    day = context.run.tags.get("dagster/partition")
    if day:
        return day
    days = lake.days(asset)
    return days[-1] if days else None


@dg.asset_check(asset="model_evaluation", blocking=True, required_resource_keys={"pipeline"},
                description="Every task's GAUC is a number (not NaN): promotion is blocked otherwise.")
def check_gauc_is_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    lake = _lake(context)
    day = _partition(context, lake, "model_evaluation")
    if day is None or not lake.exists("model_evaluation", day):
        return dg.AssetCheckResult(passed=False, metadata={"observed": f"no evaluation partition {day}"})
    ev = load_evaluation(lake, day)
    gaucs = {t: m["gauc"] for t, m in ev["candidate"].items()}
    ok = all(isinstance(v, float) and math.isfinite(v) for v in gaucs.values())
    return dg.AssetCheckResult(passed=ok, metadata={"partition": day, "observed": json.dumps(gaucs),
                                                    "expected": "finite GAUC for every task"})


@dg.asset_check(asset="interaction_logs", required_resource_keys={"pipeline"},
                description="Quarantined rows stay under 5% of the day's rows.")
def check_quarantine_share(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    lake = _lake(context)
    day = _partition(context, lake, "interaction_logs")
    if day is None or not lake.exists("interaction_logs", day):
        return dg.AssetCheckResult(passed=False, metadata={"observed": f"no partition {day}"})
    rows = lake.read_table("interaction_logs", day).height
    q = lake.read_table("interaction_logs", day, "quarantine").height
    share = q / max(rows + q, 1)
    return dg.AssetCheckResult(passed=share <= 0.05, metadata={"partition": day, "observed_share": share,
                                                                "expected": "<= 0.05", "quarantined": q})


CHECKS = [check_gauc_is_finite, check_quarantine_share]
