"""On-demand hyper-parameter search of day D: ``tuning.trials`` trials of one model (Optuna's TPE,
seeded) trained on D-T .. D-2 and validated on D-1, then the best and the default configuration
trained on D-T .. D-1 and evaluated on D, which the search never saw.

Not part of the daily jobs nor of the automation: materialize it from the asset page or run
``tuning_job`` for the partitions you want; its size is the ``[tuning]`` section.
"""


import dagster as dg

from assets.common import code_version, on_demand, result, settings, stoppable
from ml_core.stages.tuning import run_hyperparameter_search

TUNING_CODE = code_version("assets.tuning", "ml_core.stages.tuning")


@dg.asset(
    **on_demand({"pytorch", "optuna"}),
    code_version=TUNING_CODE,
)
@stoppable
def hyperparameter_search(context: dg.AssetExecutionContext, training_samples) -> dg.MaterializeResult:
    """The best training configuration of one model for day D: best parameters and validation
    GAUC, every trial (parameters, GAUC, seconds, state), the optimisation history and parameter
    plot, and the held-out day's GAUC of the best vs the default configuration; report.md."""
    cfg, lake = settings(context)
    day = context.partition_key
    out = run_hyperparameter_search(cfg, lake, day, [d for d in training_samples.days if d < day], log=context.log.info)
    stats = {"model": out.model, "best_params": out.best_params, "best_value": out.best_value,
             "default_value": out.default_value if out.default_value is not None else "not in the space",
             "trials": len(out.trials), "failed_trials": sum(t["state"] != "COMPLETE" for t in out.trials),
             "train_days": out.train_days, "validation_day": out.validation_day, "seconds": out.seconds}
    for task, d in out.held_out.get("differences", {}).items():
        stats[f"gauc_{task}_default"] = out.held_out["default"]["metrics"][task]["gauc"]
        stats[f"gauc_{task}_best"] = out.held_out["best"]["metrics"][task]["gauc"]
        stats[f"gauc_{task}_best_minus_default"] = {k: d[k] for k in ("diff", "low", "high")}
    names = list(out.results["space"])
    table = dg.MetadataValue.table(records=[dg.TableRecord({
        "trial": t["number"], "state": t["state"], "value": round(t["value"], 5) if t["value"] is not None else None,
        "seconds": round(t["seconds"] or 0.0, 2),
        **{n: round(v, 6) if isinstance(v, float) else v if isinstance(v, (int, str)) else str(v)
           for n in names if (v := t["params"].get(n)) is not None},
    }) for t in out.trials])
    res = result(lake, "hyperparameter_search", day, stats, plots={"tuning_plot": out.plot}, markdown={"report": out.report})
    res.metadata["trials_table"] = table
    return res
