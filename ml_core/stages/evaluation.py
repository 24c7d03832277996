"""Stage 6, model_evaluation: GAUC / AUC / logloss per task of the candidate (trained_model[D])
on day D's samples, a day neither the model nor its graphs saw, next to the sanity scorers
(:mod:`ml_core.sanity`) and the classical CF scorers (:mod:`ml_core.cf`) on the same samples, with the content version of the trained_model
partition it scored (the deployment refuses to promote any other). Stored as
``evaluation.json`` with the candidate's scores (``candidate_scores.npz``) and its encoding of the
day's snapshot nodes (``node_reps.npz``, which the deployment puts into the bundle); a non-finite
prediction fails the stage. It reads its inputs from the lake alone (a day read again in the
same process may come from :func:`~ml_core.stages.inputs.scoring_day`'s cache, by data
version), so the evaluations of many days can run in any order, in parallel, in any process.

:func:`judge_against_references` completes it when the day is decided (stage 7, in date order,
under the bundle store's lock): the reference models, the last ``deploy.compare_last``
promoted bundles with production among them, each scored on the same samples with its own
bundle's settings (its fan-outs, not the current configuration's), and the candidate's paired
GAUC difference with each. The completed evaluation is stored with the decision.

A day with no samples (a day without data) is not scored: the stored evaluation has no
metrics, ``samples = 0`` and ``skipped = "no evaluation samples ..."``, and the deployment
refuses the candidate with that reason (never a promotion on NaN metrics)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml_core.catalog import SERVING_CONTEXT, TRAINED_MODEL
from ml_core.config import PipelineConfig
from ml_core.progress import format_duration
from ml_core.registry.bundles import NODE_REPS_FILE, load_model, read_manifest, save_node_reps
from ml_core.registry.interface import BundleRegistry
from ml_core.stages.inputs import scoring_day
from ml_core.storage import Lake, day_str


@dataclass
class ProductionMetrics:
    """The production model (bundle version) and its metrics per task on the same day."""

    version: str
    metrics: dict[str, dict]


@dataclass
class EvaluationResult:
    """The evaluation of day ``day``: candidate metrics per task, the candidate's manifest and
    partition version, the production model's metrics (``None`` when nothing is in production),
    the reference models' (``{version: metrics}``, production among them), the sanity
    scorers' and the CF scorers' (``{scorer: metrics}``; None: an evaluation written before they
    were measured) and what the CF scorers cost and kept (``cf_info``: EASE's item cap)."""

    day: str
    candidate: dict[str, dict]
    candidate_manifest: dict
    production: ProductionMetrics | None = None
    candidate_version: str = ""
    references: dict[str, dict] = dataclasses.field(default_factory=dict)
    sanity: dict[str, dict] | None = None
    cf: dict[str, dict] | None = None
    cf_info: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: ``{reference version: {task: paired bootstrap of candidate - reference GAUC}}``
    differences: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: evaluation samples of the day (None: an evaluation written before this was recorded)
    samples: int | None = None
    #: why nothing was scored (``"no evaluation samples ..."``), empty when scored
    skipped: str = ""

    def to_dict(self) -> dict:
        """What evaluation.json stores: every field but the CF scorers' timings (``*seconds``), so
        the partition's content (its data version) is the same on every run of the same inputs;
        the timings stay on this object for the asset's metadata."""
        d = dataclasses.asdict(self)
        d["cf_info"] = {k: {f: v for f, v in info.items() if not f.endswith("seconds")} for k, info in d["cf_info"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationResult:
        prod = d.get("production")
        return cls(day=d["day"], candidate=d["candidate"], candidate_manifest=d["candidate_manifest"],
                   production=ProductionMetrics(prod["version"], prod["metrics"]) if prod else None,
                   candidate_version=d.get("candidate_version", ""), references=d.get("references", {}),
                   sanity=d.get("sanity"), cf=d.get("cf"), cf_info=d.get("cf_info", {}), differences=d.get("differences", {}), samples=d.get("samples"),
                   skipped=d.get("skipped", ""))


def reference_versions(store: BundleRegistry, n: int) -> list[str]:
    """The last ``n`` promoted bundle versions, oldest first, with production last (it may have
    been set by hand, outside the decisions log)."""
    promoted = list(dict.fromkeys(d["version"] for d in store.decisions() if d.get("promoted")))
    prod = store.production()
    if prod is not None:
        promoted = [v for v in promoted if v != prod["version"]] + [prod["version"]]
    return [v for v in promoted[-n:] if store.has_version(v)] if n > 0 else []


def _gaucs(metrics: dict[str, dict]) -> str:
    """``click 0.7123, purchase 0.6541``: the GAUC per task of a scored model, for a log line."""
    return ", ".join(f"{task} {m['gauc']:.4f}" for task, m in metrics.items())


#: The candidate's scores on day D, kept for the paired comparison at decision time.
SCORES_FILE = "candidate_scores.npz"

#: The candidate's representations of every node of day D's snapshot (its graph's nodes, every
#: neighbour), encoded while scoring it: the deployment puts them into the bundle it assembles
#: (what serving scores from) instead of encoding the snapshot again (11 s of the ``large`` day),
#: with :data:`SNAPSHOT_RECORD`: their manifest entry and the partitions they were encoded from.
SNAPSHOT_FILE = NODE_REPS_FILE
SNAPSHOT_RECORD = "node_reps.json"


def _snapshot_sources(lake: Lake, day) -> dict:
    """What the snapshot's representations depend on: trained_model[day]'s version and the data
    versions of the graphs and features the bundle will carry (a graph rebuilt in between, e.g.
    after late data, is another snapshot)."""
    return {a: lake.version(a, day) for a in (TRAINED_MODEL, *SERVING_CONTEXT)}


def _write_snapshot(directory, lake: Lake, day, snapshot: tuple | None) -> None:
    if snapshot is not None:
        entry = save_node_reps(directory, *snapshot)
        record = {"node_reps": entry, "encoded_from": _snapshot_sources(lake, day)}
        (directory / SNAPSHOT_RECORD).write_text(json.dumps(record, indent=2))


def evaluated_snapshot(lake: Lake, day) -> tuple[Path, dict] | None:
    """``(file, manifest entry)`` of model_evaluation[day]'s encoding of the snapshot when it was
    encoded from the partitions the lake holds now (trained_model[day] and the serving context),
    else None (no evaluation, one that kept none, or inputs re-materialized since)."""
    if not lake.exists("model_evaluation", day):
        return None
    directory = lake.checked_dir("model_evaluation", day)
    if not (directory / SNAPSHOT_RECORD).is_file():
        return None
    record = json.loads((directory / SNAPSHOT_RECORD).read_text())
    if record["encoded_from"] != _snapshot_sources(lake, day):
        return None
    return directory / SNAPSHOT_FILE, record["node_reps"]


#: Fields of a model's manifest that say how long its training took, not what was trained.
_RUN_FIELDS = ("seconds",)


def trained_as(model_dir) -> dict:
    """The manifest of the model at ``model_dir`` as an evaluation records it: what was trained on
    what (model, days, input and code versions...), without its training time, so the same model
    evaluated on the same day is the same evaluation (data version) whichever run trained it."""
    return {k: v for k, v in read_manifest(model_dir).items() if k not in _RUN_FIELDS}


def run_model_evaluation(cfg: PipelineConfig, lake: Lake, day, log=None) -> EvaluationResult:
    """Evaluate trained_model[D], the sanity and the CF scorers on day D and write the result and the
    candidate's scores. ``log`` (a ``str -> None`` callable, default silent) gets what is being
    scored, a progress line every ``train.log_every_steps`` scoring batches, and each one's GAUCs."""
    from ml_core.cf import cf_metrics
    from ml_core.inference import score_day
    from ml_core.sanity import SCORERS, sanity_metrics

    log = log or (lambda msg: None)
    every = cfg.train.log_every_steps
    cand_dir = lake.checked_dir("trained_model", day)
    version = lake.version("trained_model", day)
    model, fspec, mspec, _ = load_model(cand_dir)
    scored = scoring_day(lake, day)  # the graphs too: the sanity and CF scorers read graph[D]
    inputs = scored.inputs
    n = inputs.samples.height
    if n == 0:  # a day without data: nothing to score, recorded as such (the deployment refuses)
        out = EvaluationResult(day=day_str(day), candidate={}, candidate_manifest=trained_as(cand_dir),
                               candidate_version=version, samples=0,
                               skipped=f"no evaluation samples: {day_str(day)} has no samples (a day without data)")
        with lake.write_dir("model_evaluation", day) as tmp:
            (tmp / "evaluation.json").write_text(json.dumps(out.to_dict(), indent=2, default=str))
        return out
    log(f"scoring the candidate (trained_model {day_str(day)}, version {version[:12]}) on {n:,} samples")
    t = time.perf_counter()
    cand = score_day(model, fspec, inputs, mspec.fanouts, log=log, log_every=every, what="candidate",
                     keep_snapshot=True, ctx=scored.context_for(model, fspec))
    log(f"candidate scored in {format_duration(time.perf_counter() - t)}, GAUC {_gaucs(cand.metrics)}")
    out = EvaluationResult(day=day_str(day), candidate=cand.metrics,
                           candidate_manifest=trained_as(cand_dir), candidate_version=version, samples=n)
    log(f"scoring the sanity scorers ({', '.join(SCORERS)}) on {n:,} samples")
    t = time.perf_counter()
    out.sanity = sanity_metrics(inputs, list(fspec.tasks))
    log(f"sanity scorers scored in {format_duration(time.perf_counter() - t)}, GAUC: "
        + "; ".join(f"{name} {_gaucs(m)}" for name, m in out.sanity.items()))
    log(f"scoring the CF scorers ({', '.join(cfg.cf.scorers) or 'none configured'}) on {n:,} samples")
    t = time.perf_counter()
    out.cf, out.cf_info = cf_metrics(inputs, list(fspec.tasks), cfg.cf)
    log(f"CF scorers scored in {format_duration(time.perf_counter() - t)}, GAUC: "
        + ("; ".join(f"{name} {_gaucs(m)}" for name, m in out.cf.items()) or "-"))
    with lake.write_dir("model_evaluation", day) as tmp:
        (tmp / "evaluation.json").write_text(json.dumps(out.to_dict(), indent=2, default=str))
        with open(tmp / SCORES_FILE, "wb") as fh:
            users = cand.users.astype(str) if cand.users.dtype == object else cand.users  # no pickled arrays
            np.savez(fh, users=users, labels=cand.labels, probs=cand.probs)
        _write_snapshot(tmp, lake, day, cand.snapshot_reps)
    return out


def judge_against_references(cfg: PipelineConfig, lake: Lake, day, store: BundleRegistry,
                             log=None) -> EvaluationResult:
    """model_evaluation[D] completed with the reference models' metrics on day D (production
    among them, as the store holds it now) and the candidate's paired GAUC difference with each."""
    from ml_core.eval.bootstrap import gauc_difference
    from ml_core.eval.metrics import Groups
    from ml_core.inference import score_day

    log = log or (lambda msg: None)
    out = load_evaluation(lake, day)
    if out.skipped:
        return out  # nothing was scored: nothing to compare
    with np.load(lake.checked_dir("model_evaluation", day) / SCORES_FILE) as z:
        cand_users, cand_labels, cand_probs = z["users"], z["labels"], z["probs"]
    tasks = list(out.candidate)
    prod = store.production()
    refs = reference_versions(store, max(cfg.deploy.compare_last, 1 if prod else 0))
    cand_groups = Groups.of(cand_users) if refs else None  # grouped once for every reference and task
    scored = scoring_day(lake, day, last_use=True) if refs else None  # read from the lake (or this process's cache)
    every = cfg.train.log_every_steps
    for i, ref in enumerate(refs, 1):
        what = f"reference {i}/{len(refs)}"
        role = "production" if prod is not None and ref == prod["version"] else "promoted"
        log(f"scoring {what}: {role} model {ref}")
        t = time.perf_counter()
        rmodel, rspec, rmspec, _ = load_model(store.checked_version_dir(ref))
        ref_scored = score_day(rmodel, rspec, scored.inputs, rmspec.fanouts,  # its own bundle's fan-outs
                               log=log, log_every=every, what=what, ctx=scored.context_for(rmodel, rspec))
        if not np.array_equal(ref_scored.users, cand_users):
            raise RuntimeError(f"reference {ref} scored the samples of {day_str(day)} in another order")
        out.references[ref] = ref_scored.metrics
        out.differences[ref] = {
            task: gauc_difference(cand_groups, cand_labels[:, k], cand_probs[:, k], ref_scored.probs[:, k],
                                  n_boot=cfg.deploy.bootstrap_samples, level=cfg.deploy.confidence)
            for k, task in enumerate(tasks)}
        diffs = ", ".join(f"{task} {d['diff']:+.4f}" for task, d in out.differences[ref].items())
        log(f"{what} scored in {format_duration(time.perf_counter() - t)}, GAUC {_gaucs(ref_scored.metrics)}; "
            f"candidate minus it: {diffs}")
    if prod is not None:
        out.production = ProductionMetrics(prod["version"], out.references[prod["version"]])
    return out


def load_evaluation(lake: Lake, day, judged: bool = False) -> EvaluationResult:
    """The stored evaluation of ``day`` (candidate, sanity and CF scorers), or with ``judged`` the
    one its deployment decision completed with the reference models; FileNotFoundError when
    that partition is not materialized."""
    asset = "deployed_model" if judged else "model_evaluation"
    return EvaluationResult.from_dict(json.loads((lake.checked_dir(asset, day) / "evaluation.json").read_text()))


def _within(m: dict) -> str:
    """The nested-task GAUC (e.g. purchase within click) of a task's metrics, or ``-``."""
    keys = [k for k in m if k.startswith("gauc_within_") and not k.endswith("_users")]
    return f"{m[keys[0]]:.4f} ({keys[0].removeprefix('gauc_within_')})" if keys else "-"


def gauc_table(evaluation: EvaluationResult) -> str:
    """A Markdown table of per-task metrics: the candidate, the reference models (production
    marked), the sanity scorers and the CF scorers, all on the same day's samples (then what
    EASE kept); then the candidate's GAUC difference with each reference and its paired
    bootstrap interval over users."""
    rows = ["| model | task | GAUC | GAUC within | AUC | logloss | pos rate | users |", "|---|---|---|---|---|---|---|---|"]
    prod = evaluation.production.version if evaluation.production else None
    entries = [("candidate", evaluation.candidate)]
    refs = dict(evaluation.references)
    if evaluation.production and prod not in refs:
        refs[prod] = evaluation.production.metrics
    entries += [(f"{'production' if v == prod else 'promoted'} {v}", m) for v, m in refs.items()]
    entries += [(f"sanity: {name}", m) for name, m in (evaluation.sanity or {}).items()]
    entries += [(f"cf: {name}", m) for name, m in (evaluation.cf or {}).items()]
    for name, metrics in entries:
        for task, m in metrics.items():
            logloss = f"{m['logloss']:.4f}" if "logloss" in m else "-"
            rows.append(f"| {name} | {task} | {m['gauc']:.4f} | {_within(m)} | {m['auc']:.4f} | {logloss} | "
                        f"{m['pos_rate']:.3f} | {m['gauc_users']} |")
    ease = evaluation.cf_info.get("ease")
    if ease:
        space = "user space, exact" if ease["form"] == "users" else "item space"
        rows += ["", f"cf: ease fitted in {space} ({ease['dense_dim']:,} x {ease['dense_dim']:,}, cap {ease['max_dim']:,}, "
                     f"lambda {ease['lambda']:g}) on {ease['items']:,} of the window's {ease['window_items']:,} items; "
                     f"{ease['samples_on_kept_items']:.1%} of the samples are on one of them (the others score 0)."]
    if evaluation.differences:
        rows += ["", "| candidate minus | task | GAUC difference | interval | users |", "|---|---|---|---|---|"]
        for ref, per_task in evaluation.differences.items():
            for task, d in per_task.items():
                rows.append(f"| {ref} | {task} | {d['diff']:+.4f} | {d.get('level', 0.95):.0%} "
                            f"[{d['low']:+.4f}, {d['high']:+.4f}] | {d['n_groups']} |")
    if evaluation.skipped:
        rows += ["", f"Not scored: {evaluation.skipped}."]
    return "\n".join(rows)
