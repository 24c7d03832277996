"""Asset checks: properties the flow guards, each reporting what it observed and expected."""


import json
import math

import dagster as dg

from assets.partitions import CONFIG
from ml_core.pipeline import load_evaluation
from ml_core.storage import Lake


def _lake(context) -> Lake:
    return context.resources.pipeline.lake()


@dg.asset_check(asset="model_evaluation", blocking=True, required_resource_keys={"pipeline"},
                description="Every task's GAUC is a number (not NaN): promotion is blocked otherwise.")
def check_gauc_is_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    lake = _lake(context)
    days = lake.days("model_evaluation")
    if not days:
        return dg.AssetCheckResult(passed=False, metadata={"observed": "no evaluation partition"})
    ev = load_evaluation(lake, days[-1])
    gaucs = {t: m["gauc"] for t, m in ev["candidate"].items()}
    ok = all(isinstance(v, float) and math.isfinite(v) for v in gaucs.values())
    return dg.AssetCheckResult(passed=ok, metadata={"partition": days[-1], "observed": json.dumps(gaucs),
                                                    "expected": "finite GAUC for every task"})


@dg.asset_check(asset="interaction_logs", required_resource_keys={"pipeline"},
                description="Quarantined rows stay under 5% of the day's rows.")
def check_quarantine_share(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    lake = _lake(context)
    days = lake.days("interaction_logs")
    if not days:
        return dg.AssetCheckResult(passed=False, metadata={"observed": "no partition"})
    day = days[-1]
    rows = lake.read_table("interaction_logs", day).height
    q = lake.read_table("interaction_logs", day, "quarantine").height
    share = q / max(rows + q, 1)
    return dg.AssetCheckResult(passed=share <= 0.05, metadata={"partition": day, "observed_share": share,
                                                                "expected": "<= 0.05", "quarantined": q})


CHECKS = [check_gauc_is_finite, check_quarantine_share]
