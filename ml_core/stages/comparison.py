"""On-demand stage, model_comparison: every configured variant trained on days D-T .. D-1 and
evaluated on day D with the same budget and seeds; stores results.json, report.md and
comparison.png in the partition. :func:`compare_days` is the part the benchmark shares."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ml_core.config import PipelineConfig
from ml_core.stages.inputs import load_day_inputs
from ml_core.storage import Lake, day_str


@dataclass
class ComparisonResult:
    """One row per variant in ``summary`` (mean ± std over ``seeds``), the relative improvement
    of the best over the best baseline, the Markdown report and the GAUC plot (PNG);
    ``results`` is everything stored in results.json."""

    train_days: list[str]
    seeds: list[int]
    summary: list[dict]
    improvements: dict
    report: str
    plot: bytes
    results: dict = field(default_factory=dict, repr=False)


def compare_days(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], variants: list, seeds: list[int],
                 budget: dict | None = None, log=None) -> tuple[dict, int]:
    """Train every (variant, seed) on the stored ``sample_days`` and evaluate it on ``day``
    (graphs and features loaded from the lake). Returns :func:`ml_core.compare.run_comparison`'s
    result and the number of evaluation samples."""
    from ml_core.compare import run_comparison

    eval_in = load_day_inputs(lake, day)
    if eval_in.samples.height == 0:
        raise ValueError(f"no evaluation samples: {day_str(day)} has no samples (a day without data); nothing to compare")
    train_in = [load_day_inputs(lake, d) for d in sample_days]
    if sum(d.samples.height for d in train_in) == 0:
        raise ValueError(f"no training samples: the training days {sample_days} have none; nothing to compare")
    out = run_comparison(train_in, eval_in, list(cfg.samples.tasks), cfg.train, variants, seeds, budget, log=log,
                         cf=cfg.cf)
    return out, eval_in.samples.height


def run_model_comparison(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], log=None) -> ComparisonResult:
    """The ``comparison`` section's variants, seeds and budget on ``sample_days`` / ``day``."""
    from ml_core.compare import improvements, markdown_report, parse_variants
    from ml_core.eval.plots import comparison_plot

    if not sample_days:
        raise ValueError(f"{day_str(day)}: no training days before this day; nothing to compare")
    variants = parse_variants(cfg.comparison.variants)
    tasks = list(cfg.samples.tasks)
    out, n_eval = compare_days(cfg, lake, day, sample_days, variants, cfg.comparison.seeds,
                               cfg.comparison.budget(), log=log)
    out["meta"] = {"evaluation day": day_str(day), "training days": ", ".join(sample_days),
                   "source": cfg.source.kind, "evaluation samples": n_eval}
    out["improvements"] = improvements(out["summary"], tasks)
    report = markdown_report(out, f"Model comparison, {day_str(day)}")
    png = comparison_plot(out["summary"], tasks)
    with lake.write_dir("model_comparison", day) as tmp:
        (tmp / "results.json").write_text(json.dumps(out, indent=2, default=str))
        (tmp / "report.md").write_text(report)
        (tmp / "comparison.png").write_bytes(png)
    return ComparisonResult(train_days=sample_days, seeds=out["seeds"], summary=out["summary"],
                            improvements=out["improvements"], report=report, plot=png, results=out)
