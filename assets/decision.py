"""model_evaluation and deployed_model of day D: one step, run day after day.

The evaluation judges trained_model[D] against the production model and the last promoted
ones, which deployed_model[D-1] may just have changed; the deployment decision then moves the
production pointer. So the two are computed together, and deployed_model[D] depends on
deployed_model[D-1]: a backfill or the catch-up automation decides days in date order, while
every other step of those days runs in parallel.
"""


import dagster as dg

from assets.automation import DECISION
from assets.common import LAKE_IO, RETRY, code_version, result, settings
from assets.partitions import model_daily, previous_day
from ml_core.stages.deployment import run_deployed_model
from ml_core.stages.evaluation import gauc_table, run_model_evaluation

EVALUATION_CODE = code_version("ml_core.stages.evaluation", shallow=("assets.decision",))
DEPLOYMENT_CODE = code_version("ml_core.stages.deployment", shallow=("assets.decision",))

_DAY_INPUTS = ("trained_model", "training_samples", "node_features", "bipartite_graph", "user_similarity_graph",
               "item_similarity_graph")
_common = {"partitions_def": model_daily, "group_name": "model", "kinds": {"pytorch"}, "owners": ["team:recsys"],
           "automation_condition": DECISION}


@dg.multi_asset(
    specs=[spec.with_io_manager_key(LAKE_IO) for spec in (
        dg.AssetSpec("model_evaluation", code_version=EVALUATION_CODE,
                     deps=[dg.AssetDep(name) for name in _DAY_INPUTS], description=(
            "GAUC / AUC / logloss per task of trained_model[D] on day D's samples (a day neither the model "
            "nor its graphs saw), next to the production model, the last promoted models and the sanity "
            "scorers on the same samples, with paired bootstrap intervals. Computed with deployed_model[D] "
            "once deployed_model[D-1] has decided which model is in production."), **_common),
        dg.AssetSpec("deployed_model", code_version=DEPLOYMENT_CODE,
                     deps=["model_evaluation", "trained_model",
                           dg.AssetDep("deployed_model", partition_mapping=previous_day)], description=(
            "The deployment decision of day D: the promoted, versioned bundle (weights, config, id maps, graph "
            "snapshot and features) when model_evaluation[D] passes the gate, otherwise the refusal and its "
            "reasons. Only this asset moves the bundle store's production pointer; day D is decided after "
            "day D-1."), **_common),
    )],
    required_resource_keys={"pipeline"},
    retry_policy=RETRY,
    can_subset=False,
    pool="model",
)
def model_decision(context: dg.AssetExecutionContext):
    cfg, lake = settings(context)
    day = context.partition_key
    ev = run_model_evaluation(cfg, lake, day)
    yield result(lake, "model_evaluation", day, _evaluation_stats(ev), markdown={"gauc_table": gauc_table(ev)})
    decision = run_deployed_model(cfg, lake, day)
    if not decision.promoted:
        context.log.warning(f"{day}: candidate not promoted: {decision.reasons}")
    stats = {"promoted": decision.promoted, "version": decision.version,
             "reasons": decision.reasons or ["passed"], "production_before": decision.production_before or "none"}
    yield result(lake, "deployed_model", day, stats)


def _evaluation_stats(ev) -> dict:
    manifest = ev.candidate_manifest
    # what was evaluated: an ablation (train.model_args) or optimizer choice shows next to its GAUC
    stats = {"model": manifest["model"], "model_args": manifest.get("model_args", {}),
             "optimizer": manifest.get("optimizer", "adam"), "post_training": manifest.get("post_training", [])}
    for task, m in ev.candidate.items():
        stats[f"gauc_{task}"] = m["gauc"]
        stats[f"auc_{task}"] = m["auc"]
        stats[f"logloss_{task}"] = m["logloss"]
    if ev.production:
        stats["production_version"] = ev.production.version
        for task, m in ev.production.metrics.items():
            stats[f"production_gauc_{task}"] = m["gauc"]
    for scorer, metrics in (ev.sanity or {}).items():
        for task, m in metrics.items():
            stats[f"sanity_{scorer}_gauc_{task}"] = m["gauc"]
    stats["metrics"] = ev.candidate
    stats["trained_model_version"] = ev.candidate_version
    stats["reference_versions"] = list(ev.references)
    return stats
