"""trained_model: the candidate model of day D, trained on days D-T .. D-1."""


import dagster as dg

from assets.automation import TRAINING
from assets.common import code_version, fields_of, lineage_deps, result, settings, stage
from assets.partitions import CONFIG, previous_day, train_window
from ml_core.eval.plots import curve_plot
from ml_core.stages.training import run_trained_model

TRAINING_CODE = code_version("assets.training", "ml_core.stages.training")


@dg.asset(
    **stage("model", {"pytorch"}, model=True, pool="model", automation_condition=TRAINING),
    ins={"training_samples": dg.AssetIn(partition_mapping=train_window)},
    # the same days' features and graphs, read by the stage from the lake, and the model it starts
    # from (train.warm_start = "previous": trained_model[D-1], when it exists): lineage only
    deps=[*lineage_deps(train_window),
          *([dg.AssetDep("trained_model", partition_mapping=previous_day)] if CONFIG.train.warm_start == "previous" else [])],
    code_version=TRAINING_CODE,
)
def trained_model(context: dg.AssetExecutionContext, training_samples) -> dg.MaterializeResult:
    """Model trained on the samples of days D-T .. D-1, each day scored with its own graphs and
    features (built from days before it), warm-started from trained_model[D-1] when compatible
    (``train.warm_start``; ``init`` says which and why), trained until its budget or early stop
    (``stopping``); weights, feature spec, training curve, manifest. Its partitions start with the
    first day whose whole window exists."""
    cfg, lake = settings(context)
    day = context.partition_key
    out = run_trained_model(cfg, lake, day, training_samples.days, code_version=TRAINING_CODE, log=context.log.info)
    curve = [(h["step"], h["loss"]) for h in out.history if "loss" in h]
    plot = curve_plot(curve, f"{out.model} training loss", "step", "loss (running mean)")
    stats = fields_of(out, "history")
    stats["epoch_losses"] = [round(h["epoch_loss"], 5) for h in out.history if "epoch_loss" in h]
    stats["started_from"] = (f"warm: {out.init.get('from')}" if out.init.get("mode") == "warm"
                             else f"scratch: {out.init.get('reason', '')}")
    stats["stopped_by"] = out.stopping.get("reason", "")
    stats["samples_per_s"] = [round(h["samples_per_s"], 1) for h in out.history if "samples_per_s" in h]
    return result(lake, "trained_model", day, stats, plots={"training_curve": plot})
