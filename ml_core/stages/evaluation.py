"""Stage 6, model_evaluation: GAUC / AUC / logloss per task of the candidate (trained_model[D])
on day D's samples, a day neither the model nor its graphs saw, next to the production model's
metrics on the same day; stored as ``evaluation.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ml_core.bundles import BundleStore, load_model, read_manifest
from ml_core.config import PipelineConfig
from ml_core.stages.inputs import load_day_inputs
from ml_core.storage import Lake, day_str


@dataclass
class ProductionMetrics:
    """The production model (bundle version) and its metrics per task on the same day."""

    version: str
    metrics: dict[str, dict]


@dataclass
class EvaluationResult:
    """The evaluation of day ``day``: candidate metrics per task, the candidate's manifest, and
    the production model's metrics (``None`` when nothing is in production)."""

    day: str
    candidate: dict[str, dict]
    candidate_manifest: dict
    production: ProductionMetrics | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationResult:
        prod = d.get("production")
        return cls(day=d["day"], candidate=d["candidate"], candidate_manifest=d["candidate_manifest"],
                   production=ProductionMetrics(prod["version"], prod["metrics"]) if prod else None)


def run_model_evaluation(cfg: PipelineConfig, lake: Lake, day) -> EvaluationResult:
    """Evaluate trained_model[D] and the production model (if any) on day D and write the result."""
    from ml_core.inference import evaluate, inference_needs_graph

    cand_dir = lake.partition_dir("trained_model", day)
    model, fspec, _, _ = load_model(cand_dir)
    need_graph = inference_needs_graph(model)
    inputs = load_day_inputs(lake, day, with_graph=need_graph)
    out = EvaluationResult(day=day_str(day), candidate=evaluate(model, fspec, inputs, cfg.train.fanouts),
                           candidate_manifest=read_manifest(cand_dir))
    store = BundleStore(lake.root)
    prod = store.production()
    if prod is not None:
        pmodel, pspec, _, _ = load_model(store.version_dir(prod["version"]))
        p_graph = inference_needs_graph(pmodel)
        pin = inputs if p_graph == need_graph else load_day_inputs(lake, day, p_graph)
        out.production = ProductionMetrics(prod["version"], evaluate(pmodel, pspec, pin, cfg.train.fanouts))
    with lake.write_dir("model_evaluation", day) as tmp:
        (tmp / "evaluation.json").write_text(json.dumps(out.to_dict(), indent=2, default=str))
    return out


def load_evaluation(lake: Lake, day) -> EvaluationResult:
    """The stored evaluation of ``day``; FileNotFoundError when it is not materialized."""
    p = lake.partition_dir("model_evaluation", day) / "evaluation.json"
    if not p.exists():
        raise FileNotFoundError(f"model_evaluation partition {day_str(day)} is not materialized")
    return EvaluationResult.from_dict(json.loads(p.read_text()))


def gauc_table(evaluation: EvaluationResult) -> str:
    """A Markdown table of per-task metrics of the candidate (and production when present)."""
    rows = ["| model | task | GAUC | AUC | logloss | pos rate | users |", "|---|---|---|---|---|---|---|"]
    entries = [("candidate", evaluation.candidate)]
    if evaluation.production:
        entries.append((f"production {evaluation.production.version}", evaluation.production.metrics))
    for name, metrics in entries:
        for task, m in metrics.items():
            rows.append(f"| {name} | {task} | {m['gauc']:.4f} | {m['auc']:.4f} | {m['logloss']:.4f} | "
                        f"{m['pos_rate']:.3f} | {m['gauc_users']} |")
    return "\n".join(rows)
