"""model_evaluation: the candidate of day D, the sanity and the CF scorers, measured on day D (the
comparison with the production and recently promoted models is the deployment decision's, made
day after day)."""

from collections.abc import Iterator

import dagster as dg

from assets.automation import MODEL
from assets.common import code_version, result, settings, stage, stoppable
from assets.ranges import materialize_days
from ml_core.catalog import MODEL_EVALUATION, STAGE_INPUTS
from ml_core.stages.evaluation import gauc_table, run_model_evaluation

EVALUATION_CODE = code_version("assets.evaluation", "ml_core.stages.evaluation")


@dg.asset(
    **stage("model", {"pytorch"}, model=True, pool="model", automation_condition=MODEL),
    # the stage loads trained_model[D] and day D's samples, features and graphs from the lake
    deps=[dg.AssetDep(name) for name in STAGE_INPUTS[MODEL_EVALUATION]],
    code_version=EVALUATION_CODE,
)
@stoppable
def model_evaluation(context: dg.AssetExecutionContext) -> Iterator:
    """GAUC / AUC / logloss per task of trained_model[D] on day D's samples, a day neither the
    model nor its graphs saw, next to the sanity and the CF scorers on the same samples; the candidate's
    scores are kept for the deployment decision's paired comparison with the production model."""
    cfg, lake = settings(context)
    yield from materialize_days(context, lambda day: day_evaluation(context, cfg, lake, day))


def day_evaluation(context: dg.AssetExecutionContext, cfg, lake, day: str) -> dg.MaterializeResult:
    """model_evaluation[day], written, with its GAUC table."""
    ev = run_model_evaluation(cfg, lake, day, log=context.log.info)
    manifest = ev.candidate_manifest
    # what was evaluated: an ablation (train.model_args) or optimizer choice shows next to its GAUC
    stats = {"model": manifest["model"], "model_args": manifest.get("model_args", {}),
             "optimizer": manifest.get("optimizer", "adam"), "post_training": manifest.get("post_training", [])}
    for task, m in ev.candidate.items():
        stats[f"gauc_{task}"] = m["gauc"]
        stats[f"auc_{task}"] = m["auc"]
        stats[f"logloss_{task}"] = m["logloss"]
    for kind, scorers in (("sanity", ev.sanity), ("cf", ev.cf)):
        for scorer, metrics in (scorers or {}).items():
            for task, m in metrics.items():
                stats[f"{kind}_{scorer}_gauc_{task}"] = m["gauc"]
    stats["cf_info"] = ev.cf_info  # what each CF scorer cost; EASE's item cap and the items it kept
    stats["metrics"] = ev.candidate
    stats["trained_model_version"] = ev.candidate_version
    return result(lake, MODEL_EVALUATION, day, stats, markdown={"gauc_table": gauc_table(ev)})
