"""On-demand stage, hyperparameter_search: ``tuning.trials`` trials of ``tuning.model`` trained on
days D-T .. D-2 and validated on D-1 (day D is never seen by the search), then the best and the
default configuration trained on D-T .. D-1 and evaluated on D; stores results.json, report.md
and tuning.png in the partition."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ml_core.config import PipelineConfig
from ml_core.stages.inputs import load_day_inputs
from ml_core.storage import Lake, day_str


@dataclass
class TuningResult:
    """The searched model, the days, the best trial's parameters and validation value (and the
    default configuration's, trial 0, when it lies in the space), every trial, the held-out day's
    default-vs-best evaluation (empty with ``tuning.evaluate_best = false``), the Markdown report
    and the plot (PNG); ``results`` is everything stored in results.json."""

    model: str
    train_days: list[str]
    validation_day: str
    best_params: dict
    best_value: float
    default_value: float | None
    trials: list[dict]
    held_out: dict
    seconds: float
    report: str
    plot: bytes
    results: dict = field(default_factory=dict, repr=False)


def _inputs(lake: Lake, day: str, what: str):
    inputs = load_day_inputs(lake, day)
    if inputs.samples.height == 0:
        raise ValueError(f"no {what} samples: {day} has no samples (a day without data); nothing to tune on")
    return inputs


def run_hyperparameter_search(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], log=None) -> TuningResult:
    """The ``[tuning]`` search for partition ``day`` whose training days are ``sample_days``."""
    from ml_core.eval.plots import tuning_plot
    from ml_core.tuning import evaluate_best, markdown_report, run_search

    if len(sample_days) < 2:
        raise ValueError(f"{day_str(day)}: the search needs >= 2 training days (trials train on all but the last "
                         f"and are validated on the last); got {sample_days}. Set train.train_days >= 2")
    t0 = time.perf_counter()
    tasks = list(cfg.samples.tasks)
    fit_days, valid = sample_days[:-1], sample_days[-1]
    train_in = [load_day_inputs(lake, d) for d in fit_days]
    if sum(d.samples.height for d in train_in) == 0:
        raise ValueError(f"no training samples: the trials' training days {fit_days} have none; nothing to tune on")
    valid_in = _inputs(lake, valid, "validation")
    out = run_search(train_in, valid_in, tasks, cfg.train, cfg.tuning, log=log)
    if cfg.tuning.evaluate_best:
        out["held_out"] = evaluate_best([*train_in, valid_in], _inputs(lake, day_str(day), "evaluation"), tasks,
                                        cfg.train, cfg.tuning, out["best_params"], log=log)
    seconds = time.perf_counter() - t0
    out["meta"] = {"model": out["model"], "trials' training days": ", ".join(fit_days), "validation day": valid,
                   "evaluation day": day_str(day) if cfg.tuning.evaluate_best else "not evaluated",
                   "trials": cfg.tuning.trials, "seed": cfg.tuning.seed,
                   "budget": cfg.tuning.budget() or "the [train] settings", "source": cfg.source.kind,
                   "seconds": round(seconds, 1)}
    report = markdown_report(out, f"Hyper-parameter search of {out['model']}, {day_str(day)}")
    png = tuning_plot(out["trials"], out["space"], out["importances"], out["metric"])
    with lake.write_dir("hyperparameter_search", day) as tmp:
        (tmp / "results.json").write_text(json.dumps(out, indent=2, default=str))
        (tmp / "report.md").write_text(report)
        (tmp / "tuning.png").write_bytes(png)
    default = out["trials"][0]["value"] if out["default_trial"] is not None else None
    return TuningResult(model=out["model"], train_days=fit_days, validation_day=valid, best_params=out["best_params"],
                        best_value=out["best_value"], default_value=default, trials=out["trials"],
                        held_out=out.get("held_out", {}), seconds=round(seconds, 1), report=report, plot=png, results=out)
