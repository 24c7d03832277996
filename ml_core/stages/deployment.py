"""Stage 7, deployed_model: the deployment decision of day D.

Under the registry's lock (:mod:`ml_core.registry.interface`: the local store's ``fcntl`` lock or
the MLflow backend's lease), the candidate's evaluation (model_evaluation[D]) is completed
with the reference models as the store holds them now (:func:`judge_against_references`: the
production model and the last promoted ones, scored on day D) and goes through the gate
(:mod:`ml_core.stages.gate`) and two checks: the pointer must not serve a later partition, and
trained_model[D] must still be the version the evaluation scored (a model re-materialized after
its evaluation is never promoted on the old metrics). A promoted candidate is assembled into a
bundle (trained_model[D] + the graphs and features it was evaluated with + every snapshot node's
representations, ``node_reps.npz``, as model_evaluation[D] encoded them), published and made
production; every decision is written to the partition (``decision.json``, with the completed
``evaluation.json``) and the store's log. Days are decided in date order (the Dagster asset
depends on its previous partition). An evaluation that scored nothing (no samples on D) is a
refusal with its reason.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ml_core.catalog import SERVING_CONTEXT
from ml_core.config import PipelineConfig
from ml_core.config.registry import RegistryConfig
from ml_core.registry.bundles import check_version_name, read_manifest, write_manifest
from ml_core.registry.interface import BundleRegistry, open_bundle_registry
from ml_core.serving.scorer import write_node_reps
from ml_core.stages.evaluation import EvaluationResult, evaluated_snapshot, judge_against_references
from ml_core.stages.gate import Decision, gate
from ml_core.storage import INTEGRITY_FILE, VERSION_FILE, Lake, day_str, link_tree


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


def pointer_checks(day: str, production: dict | None) -> list[str]:
    """Reasons to refuse whatever the metrics: production already serves a later partition (a
    day re-decided after later ones). Pure: ``production`` is the pointer's record (or None)."""
    reasons = []
    if production is not None and production.get("partition", "") > day:
        reasons.append(f"production already serves a later partition ({production['partition']})")
    return reasons


def assemble_bundle(lake: Lake, day, target: Path, version: str, metrics: dict) -> None:
    """Write into ``target`` the bundle of trained_model[D] with its serving context and a
    manifest carrying ``version``, ``metrics`` and the context's data versions."""
    # the partition's own version and file list do not describe the bundle (publishing writes its own)
    # (hard links: the lake's copy of a bundle shares the sealed partitions' bytes; the registry's is a copy)
    src = lake.checked_dir("trained_model", day)
    link_tree(src, target, ignore=lambda d, names: [VERSION_FILE, INTEGRITY_FILE] if Path(d) == src else [])
    for asset in SERVING_CONTEXT:
        link_tree(lake.checked_dir(asset, day), target / "context" / asset)
    # every snapshot node encoded once (what serving scores from): model_evaluation[D]'s encoding
    # when it was encoded from these very partitions (linked), else encoded now
    evaluated = evaluated_snapshot(lake, day)
    if evaluated is not None:
        link_tree(evaluated[0].parent, target, ignore=lambda d, names: [n for n in names if n != evaluated[0].name])
    manifest = read_manifest(target)
    manifest.update({"version": version, "metrics": metrics,
                     "serving_context": {a: lake.version(a, day) for a in SERVING_CONTEXT}})
    if evaluated is not None:
        manifest["node_reps"] = evaluated[1]
    write_manifest(target, manifest)
    if evaluated is None:
        write_node_reps(target)


def republish(lake: Lake, version: str, registry: RegistryConfig | None = None) -> Path:
    """Publish bundle ``version`` again from the deployed_model partition it was assembled in (the
    store's copy was found corrupt): that partition is checked first and must hold that version."""
    day = check_version_name(version)[:10]
    src = lake.checked_dir("deployed_model", day) / "bundle"
    held = read_manifest(src).get("version") if (src / "manifest.json").is_file() else None
    if held != version:
        raise FileNotFoundError(f"deployed_model partition {day} holds bundle {held or '(none)'}, not {version}: "
                                "point production.json at another version, or deploy again")
    return open_bundle_registry(registry, lake.root).publish(src, version)


def run_deployed_model(cfg: PipelineConfig, lake: Lake, day, log=None) -> DeploymentResult:
    """Promote trained_model[D] to production if model_evaluation[D], judged against the
    reference models, passes the gate. ``log``: the reference models' scoring progress."""
    store = open_bundle_registry(cfg.registry, lake.root)
    with store.lock():  # the references are scored, judged and the pointer moved as one step
        recover_decision_log(store)
        ev = judge_against_references(cfg, lake, day, store, log=log)
        return _decide_and_deploy(cfg, lake, day, ev, store)


def _decide_and_deploy(cfg: PipelineConfig, lake: Lake, day, ev: EvaluationResult,
                       store: BundleRegistry) -> DeploymentResult:
    prod = store.production()
    if ev.skipped:  # nothing was scored (a day without samples): refused with the evaluation's reason
        verdict = Decision(promote=False, reasons=[ev.skipped])
    else:
        verdict = gate(ev.candidate, ev.references, cfg.deploy, ev.sanity, ev.differences, cf=ev.cf)
    stale = pointer_checks(day_str(day), prod)
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
        (tmp / "evaluation.json").write_text(json.dumps(ev.to_dict(), indent=2, default=str))
    if decision.promote:
        store.publish(lake.partition_dir("deployed_model", day) / "bundle", version)
        # the decision travels in the pointer: killed before the append below, the next
        # deployment finds it there and logs it (recover_decision_log)
        store.set_production(version, {"partition": day_str(day), "metrics": ev.candidate,
                                       "decision": result.to_dict()})
    store.record_decision(result.to_dict())
    return result


def recover_decision_log(store: BundleRegistry) -> dict | None:
    """Log the promotion the production pointer carries when the decisions log lacks it (the
    deployer was killed, or the machine lost power, between moving the pointer and appending its
    decision): the pointer and the log then tell the same story. Returns the record appended, or
    None when the log already holds a promotion of that version (or the pointer carries none)."""
    prod = store.production()
    pending = (prod or {}).get("decision")
    if not isinstance(pending, dict) or not pending.get("promoted"):
        return None
    if any(d.get("promoted") and d.get("version") == pending.get("version") for d in store.decisions()):
        return None
    record = {**pending, "recovered": "the pointer had moved but its decision was not logged; logged at the "
                                      "next deployment"}
    store.record_decision(record)
    return record
