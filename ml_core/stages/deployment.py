"""Stage 7, deployed_model: the deployment decision of day D.

Under the bundle store's lock, the candidate's evaluation (model_evaluation[D]) goes through
the gate (:mod:`ml_core.stages.gate`) and three checks: the pointer must not have moved since
the evaluation nor serve a later partition, and trained_model[D] must still be the version the
evaluation scored (a model re-materialized after its evaluation is never promoted on the old
metrics). An evaluation that scored nothing (no samples on D) is a refusal with its reason.
A promoted candidate is
assembled into a bundle (trained_model[D] + the graphs and features it was evaluated with),
published and made production; every decision is written to the partition and the store's log.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ml_core.bundles import BundleStore, read_manifest, write_manifest
from ml_core.config import PipelineConfig
from ml_core.stages.evaluation import EvaluationResult, load_evaluation
from ml_core.stages.gate import Decision, gate
from ml_core.storage import Lake, day_str

#: The partitions of day D a bundle serves with (copied into ``bundle/context``).
SERVING_CONTEXT = ("bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features")


@dataclass
class DeploymentResult:
    """The recorded decision: partition, bundle version, whether it was promoted and why not,
    the candidate's metrics and the production version before the decision."""

    partition: str
    version: str
    promoted: bool
    reasons: list[str]
    candidate: dict[str, dict]
    production_before: str | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pointer_checks(day: str, evaluated_against: str | None, production: dict | None) -> list[str]:
    """Reasons to refuse whatever the metrics: production moved since the evaluation, or it
    already serves a later partition. Pure: ``production`` is the pointer's record (or None)."""
    reasons = []
    now = production["version"] if production else None
    if now != evaluated_against:
        reasons.append(f"production changed since the evaluation (evaluated against {evaluated_against}, "
                       f"now {now}): re-run model_evaluation")
    if production is not None and production.get("partition", "") > day:
        reasons.append(f"production already serves a later partition ({production['partition']})")
    return reasons


def assemble_bundle(lake: Lake, day, target: Path, version: str, metrics: dict) -> None:
    """Write into ``target`` the bundle of trained_model[D] with its serving context and a
    manifest carrying ``version``, ``metrics`` and the context's data versions."""
    shutil.copytree(lake.partition_dir("trained_model", day), target, dirs_exist_ok=True)
    for asset in SERVING_CONTEXT:
        shutil.copytree(lake.partition_dir(asset, day), target / "context" / asset, dirs_exist_ok=True)
    manifest = read_manifest(target)
    manifest.update({"version": version, "metrics": metrics,
                     "serving_context": {a: lake.version(a, day) for a in SERVING_CONTEXT}})
    write_manifest(target, manifest)


def run_deployed_model(cfg: PipelineConfig, lake: Lake, day) -> DeploymentResult:
    """Promote trained_model[D] to production if model_evaluation[D] passes the gate."""
    ev = load_evaluation(lake, day)
    store = BundleStore(lake.root)
    with store.lock():  # the pointer is read, judged and moved as one step
        return _decide_and_deploy(cfg, lake, day, ev, store)


def _decide_and_deploy(cfg: PipelineConfig, lake: Lake, day, ev: EvaluationResult,
                       store: BundleStore) -> DeploymentResult:
    prod = store.production()
    refs = dict(ev.references)
    if ev.production and ev.production.version not in refs:  # an evaluation written before references
        refs[ev.production.version] = ev.production.metrics
    if ev.skipped:  # nothing was scored (a day without samples): refused with the evaluation's reason
        verdict = Decision(promote=False, reasons=[ev.skipped])
    else:
        verdict = gate(ev.candidate, refs, cfg.deploy, ev.sanity, ev.differences)
    stale = pointer_checks(day_str(day), ev.production.version if ev.production else None, prod)
    current = lake.version("trained_model", day)
    if ev.candidate_version != current:
        stale.append(f"the evaluation scored trained_model version {ev.candidate_version or '(unrecorded)'}, "
                     f"the partition now holds {current}: re-run model_evaluation")
    decision = Decision(promote=verdict.promote and not stale, reasons=verdict.reasons + stale)
    version = f"{day_str(day)}-{current[:10]}"
    result = DeploymentResult(partition=day_str(day), version=version, promoted=decision.promote,
                              reasons=decision.reasons, candidate=ev.candidate,
                              production_before=prod["version"] if prod else None)
    record = json.dumps(result.to_dict(), indent=2, default=str)
    with lake.write_dir("deployed_model", day) as tmp:
        if decision.promote:
            assemble_bundle(lake, day, tmp / "bundle", version, ev.candidate)
        (tmp / "decision.json").write_text(record)
    if decision.promote:
        store.publish(lake.partition_dir("deployed_model", day) / "bundle", version)
        store.set_production(version, {"partition": day_str(day), "metrics": ev.candidate})
    store.record_decision(result.to_dict())
    return result
