"""deployed_model: the deployment decision of day D (a promoted, versioned bundle or a recorded
refusal), taken after day D-1's."""

from collections.abc import Iterator

import dagster as dg

from assets.automation import DECISION
from assets.common import code_version, result, settings, stage, stoppable
from assets.partitions import previous_day_mapping
from assets.ranges import materialize_days
from ml_core.catalog import DEPLOYED_MODEL, STAGE_INPUTS
from ml_core.stages.deployment import run_deployed_model
from ml_core.stages.evaluation import gauc_table, load_evaluation

DEPLOYMENT_CODE = code_version("assets.deployment", "ml_core.stages.deployment")


@dg.asset(
    **stage("model", {"pytorch"}, model=True, pool="model", automation_condition=DECISION),
    # the stage reads model_evaluation[D], scores the production and recently promoted models on
    # day D's samples and graphs (so it runs after deployed_model[D-1]) and copies trained_model[D]
    deps=[*(dg.AssetDep(name) for name in STAGE_INPUTS[DEPLOYED_MODEL]),
          dg.AssetDep(DEPLOYED_MODEL, partition_mapping=previous_day_mapping)],
    code_version=DEPLOYMENT_CODE,
)
@stoppable
def deployed_model(context: dg.AssetExecutionContext) -> Iterator:
    """The deployment decision of day D: the candidate compared with the production model and the
    last promoted ones on day D (paired bootstrap intervals), then the gate: the promoted,
    versioned bundle (weights, config, id maps, graph snapshot and features) when it passes,
    otherwise the refusal and its reasons. Only this asset moves the bundle store's production
    pointer; day D is decided after day D-1 (over a range: in date order, in this process)."""
    cfg, lake = settings(context)
    yield from materialize_days(context, lambda day: day_decision(context, cfg, lake, day))


def day_decision(context: dg.AssetExecutionContext, cfg, lake, day: str) -> dg.MaterializeResult:
    """deployed_model[day]: the gate's decision, taken and recorded, with its GAUC table."""
    decision = run_deployed_model(cfg, lake, day, log=context.log.info)
    if not decision.promoted:
        context.log.warning(f"{day}: candidate not promoted: {decision.reasons}")
    ev = load_evaluation(lake, day, judged=True)
    stats = {"promoted": decision.promoted, "version": decision.version,
             "reasons": decision.reasons or ["passed"], "production_before": decision.production_before or "none",
             "reference_versions": list(ev.references)}
    for task, m in ev.candidate.items():
        stats[f"gauc_{task}"] = m["gauc"]
    if ev.production:
        for task, m in ev.production.metrics.items():
            stats[f"production_gauc_{task}"] = m["gauc"]
    return result(lake, DEPLOYED_MODEL, day, stats, markdown={"gauc_table": gauc_table(ev)})
