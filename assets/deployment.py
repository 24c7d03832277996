"""deployed_model: the deployment decision of day D (a promoted, versioned bundle or a recorded
refusal)."""


import dagster as dg

from assets.common import code_version, result, settings, stage
from ml_core.stages.deployment import run_deployed_model

DEPLOYMENT_CODE = code_version("assets.deployment", "ml_core.stages.deployment")


@dg.asset(
    **stage("model", {"pytorch"}),
    # the stage reads model_evaluation[D] and copies trained_model[D] from the lake
    deps=[dg.AssetDep("model_evaluation"), dg.AssetDep("trained_model")],
    code_version=DEPLOYMENT_CODE,
)
def deployed_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The deployment decision of day D: the promoted, versioned bundle (weights, config, id maps,
    graph snapshot and features) when the evaluation passes the gate, otherwise the refusal and
    its reasons. Only this asset moves the bundle store's production pointer."""
    cfg, lake = settings(context)
    day = context.partition_key
    decision = run_deployed_model(cfg, lake, day)
    if not decision.promoted:
        context.log.warning(f"{day}: candidate not promoted: {decision.reasons}")
    stats = {"promoted": decision.promoted, "version": decision.version,
             "reasons": decision.reasons or ["passed"], "production_before": decision.production_before or "none"}
    return result(lake, "deployed_model", day, stats)
