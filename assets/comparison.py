"""On-demand model comparison of day D: every configured variant trained on D-T .. D-1 and
evaluated on D with the same budget and seeds (the MoGE paper's Table 2 for our data).

Not part of the daily jobs nor of the automation: materialize it from the asset page or run
``model_comparison_job`` for the partitions you want; its size is the ``[comparison]`` section.
"""


import dagster as dg

from assets.common import code_version, on_demand, result, settings, stoppable
from ml_core.stages.comparison import run_model_comparison

COMPARISON_CODE = code_version("assets.comparison", "ml_core.stages.comparison")


@dg.asset(
    **on_demand({"pytorch"}),
    code_version=COMPARISON_CODE,
)
@stoppable
def model_comparison(context: dg.AssetExecutionContext, training_samples) -> dg.MaterializeResult:
    """GAUC / AUC / logloss per task, training time and parameter count of every comparison
    variant (baselines, +Graph variants, MoGE, E2E-GRec, LightGODE, SEvo, MGOE), mean ± std over
    seeds, the relative improvement of the best over the best baseline; table, plot, report.md."""
    cfg, lake = settings(context)
    day = context.partition_key
    out = run_model_comparison(cfg, lake, day, [d for d in training_samples.days if d < day], log=context.log.info)
    stats = {"variants": len(out.summary), "seeds": out.seeds, "train_days": out.train_days,
             "improvements": out.improvements, "summary": out.summary}
    table = dg.MetadataValue.table(
        records=[dg.TableRecord({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()
                                 if not isinstance(v, (list, dict))}) for r in out.summary])
    res = result(lake, "model_comparison", day, stats, plots={"gauc_plot": out.plot},
                 markdown={"report": out.report})
    res.metadata["table"] = table
    return res
