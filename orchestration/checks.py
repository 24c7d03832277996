"""Asset checks: properties the flow guards, each reporting what it observed and expected.

A check judges the partition of the run it runs in (the ``dagster/partition`` tag: checks run
in their asset's partition run). A run without a partition fails the check and says so: there
is no partition to judge, and guessing one (say, the newest stored) would judge another day.
"""


import json
import math

import dagster as dg

from ml_core.stages.evaluation import load_evaluation
from ml_core.storage import Lake


def _lake(context) -> Lake:
    return context.resources.pipeline.lake()


def _no_partition(asset: str) -> dg.AssetCheckResult:
    msg = (f"this run has no partition (no dagster/partition tag): the check judges one day of {asset}; "
           f"run it with the asset's partition (e.g. in the daily_logs or daily_model run of that day)")
    return dg.AssetCheckResult(passed=False, description=msg, metadata={"observed": msg})


@dg.asset_check(asset="model_evaluation", blocking=True, required_resource_keys={"pipeline"},
                description="Every task's GAUC is a number (not NaN): promotion is blocked otherwise.")
def check_gauc_is_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    day = context.run.tags.get("dagster/partition")
    if not day:
        return _no_partition("model_evaluation")
    lake = _lake(context)
    if not lake.exists("model_evaluation", day):
        return dg.AssetCheckResult(passed=False, metadata={"observed": f"no evaluation partition {day}"})
    ev = load_evaluation(lake, day)
    gaucs = {t: m["gauc"] for t, m in ev.candidate.items()}
    ok = all(isinstance(v, float) and math.isfinite(v) for v in gaucs.values())
    return dg.AssetCheckResult(passed=ok, metadata={"partition": day, "observed": json.dumps(gaucs),
                                                    "expected": "finite GAUC for every task"})


@dg.asset_check(asset="interaction_logs", required_resource_keys={"pipeline"},
                description="Quarantined rows stay under 5% of the day's rows.")
def check_quarantine_share(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    day = context.run.tags.get("dagster/partition")
    if not day:
        return _no_partition("interaction_logs")
    lake = _lake(context)
    if not lake.exists("interaction_logs", day):
        return dg.AssetCheckResult(passed=False, metadata={"observed": f"no partition {day}"})
    rows = lake.read_table("interaction_logs", day).height
    q = lake.read_table("interaction_logs", day, "quarantine").height
    share = q / max(rows + q, 1)
    return dg.AssetCheckResult(passed=share <= 0.05, metadata={"partition": day, "observed_share": share,
                                                                "expected": "<= 0.05", "quarantined": q})


CHECKS = [check_gauc_is_finite, check_quarantine_share]
