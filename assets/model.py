"""The model stages of day D: the trained candidate, its evaluation on day D, and the deployment
decision (a promoted, versioned bundle or a recorded refusal)."""


import dagster as dg

from assets.common import COMMON, code_version, result, settings, stage
from assets.partitions import train_window
from ml_core import pipeline
from ml_core.eval.plots import curve_plot

MODEL_CODE = code_version(*COMMON, "ml_core/models", "ml_core/train", "ml_core/model_registry.py", "assets/model.py")
_window_in = dict(partition_mapping=train_window)


@dg.asset(
    **stage("model", {"pytorch"}),
    ins={
        "training_samples": dg.AssetIn(**_window_in),
        "node_features": dg.AssetIn(**_window_in),
        "bipartite_graph": dg.AssetIn(**_window_in),
        "user_similarity_graph": dg.AssetIn(**_window_in),
        "item_similarity_graph": dg.AssetIn(**_window_in),
    },
    code_version=MODEL_CODE,
    output_required=False,
)
def trained_model(context: dg.AssetExecutionContext, training_samples, node_features, bipartite_graph,
                  user_similarity_graph, item_similarity_graph):
    """Model trained on the samples of days D-T .. D-1, each day scored with its own graphs and
    features (built from days before it); weights, feature spec, training curve, manifest.
    Not materialized when the window has no day yet (the first partition)."""
    cfg, lake = settings(context)
    day = context.partition_key
    if not training_samples.days:
        context.log.warning(f"{day}: no training days before this partition yet; trained_model skipped")
        return
    stats = pipeline.run_trained_model(cfg, lake, day, training_samples.days, code_version=MODEL_CODE,
                                       log=context.log.info)
    history = stats.pop("history")
    curve = [(h["step"], h["loss"]) for h in history if "loss" in h]
    plot = curve_plot(curve, f"{stats['model']} training loss", "step", "loss (running mean)")
    stats["epoch_losses"] = [round(h["epoch_loss"], 5) for h in history if "epoch_loss" in h]
    stats["samples_per_s"] = [round(h["samples_per_s"], 1) for h in history if "samples_per_s" in h]
    yield result(lake, "trained_model", day, stats, plots={"training_curve": plot})


@dg.asset(
    **stage("model", {"pytorch"}),
    ins={name: dg.AssetIn() for name in ("trained_model", "training_samples", "node_features", "bipartite_graph",
                                          "user_similarity_graph", "item_similarity_graph")},
    code_version=MODEL_CODE,
)
def model_evaluation(context: dg.AssetExecutionContext, trained_model, training_samples, node_features,
                     bipartite_graph, user_similarity_graph, item_similarity_graph) -> dg.MaterializeResult:
    """GAUC / AUC / logloss per task of trained_model[D] on day D's samples, a day neither the
    model nor its graphs saw, next to the production model's metrics on the same day."""
    cfg, lake = settings(context)
    day = context.partition_key
    ev = pipeline.run_model_evaluation(cfg, lake, day)
    manifest = ev["candidate_manifest"]
    # what was evaluated: an ablation (train.model_args) or optimizer choice shows next to its GAUC
    stats = {"model": manifest["model"], "model_args": manifest.get("model_args", {}),
             "optimizer": manifest.get("optimizer", "adam"), "post_training": manifest.get("post_training", [])}
    for task, m in ev["candidate"].items():
        stats[f"gauc_{task}"] = m["gauc"]
        stats[f"auc_{task}"] = m["auc"]
        stats[f"logloss_{task}"] = m["logloss"]
    if ev["production"]:
        stats["production_version"] = ev["production"]["version"]
        for task, m in ev["production"]["metrics"].items():
            stats[f"production_gauc_{task}"] = m["gauc"]
    stats["metrics"] = ev["candidate"]
    return result(lake, "model_evaluation", day, stats, markdown={"gauc_table": pipeline.gauc_table(ev)})


@dg.asset(
    **stage("model", {"pytorch"}),
    ins={"model_evaluation": dg.AssetIn(), "trained_model": dg.AssetIn()},
    code_version=MODEL_CODE,
)
def deployed_model(context: dg.AssetExecutionContext, model_evaluation, trained_model) -> dg.MaterializeResult:
    """The deployment decision of day D: the promoted, versioned bundle (weights, config, id maps,
    graph snapshot and features) when the evaluation passes the gate, otherwise the refusal and
    its reasons. Only this asset moves the registry's production pointer."""
    cfg, lake = settings(context)
    day = context.partition_key
    decision = pipeline.run_deployed_model(cfg, lake, day)
    if not decision["promoted"]:
        context.log.warning(f"{day}: candidate not promoted: {decision['reasons']}")
    stats = {"promoted": decision["promoted"], "version": decision["version"],
             "reasons": decision["reasons"] or ["passed"], "production_before": decision["production_before"] or "none"}
    return result(lake, "deployed_model", day, stats)
