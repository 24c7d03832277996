"""Stage 6, model_evaluation: GAUC / AUC / logloss per task of the candidate (trained_model[D])
on day D's samples, a day neither the model nor its graphs saw, next to the sanity scorers
(:mod:`ml_core.sanity`) and the classical CF scorers (:mod:`ml_core.cf`) on the same samples, with the content version of the trained_model
partition it scored (the deployment refuses to promote any other). Stored as
``evaluation.json`` with the candidate's scores (``candidate_scores.npz``); a non-finite
prediction fails the stage. It reads no global state, so the evaluations of many days can run
in any order or in parallel.

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

import numpy as np

from ml_core.bundle_registry import BundleRegistry
from ml_core.bundles import load_model, read_manifest
from ml_core.config import PipelineConfig
from ml_core.progress import format_duration
from ml_core.serving.scorer import CONTEXT_ASSETS
from ml_core.stages.inputs import load_day_inputs
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

class _Handover:
    """One value this process's last evaluation leaves for the deployment that follows in the
    same process (the daily_model job runs in one process), kept under the key of what it was
    computed from and taken once: a later evaluation replaces it, a different key leaves it."""

    def __init__(self):
        self._key, self._value = None, None

    def put(self, key: tuple, value) -> None:
        self._key, self._value = key, value

    def take(self, key: tuple):
        if self._value is None or key != self._key:
            return None
        value, self._key, self._value = self._value, None, None
        return value

    def __bool__(self) -> bool:
        return self._value is not None


#: The last candidate's snapshot representations, by :func:`_snapshot_key`: the deployment writes
#: them into the bundle instead of encoding the snapshot a second time (11 s of the ``large``
#: day; a ``large`` snapshot's are ~600 MB).
_SNAPSHOT_REPS = _Handover()


def _snapshot_key(lake: Lake, day) -> tuple:
    """What the snapshot's representations depend on: the lake, the day, trained_model[day]'s
    version and the data versions of the graphs and features the bundle will carry (a graph
    rebuilt in between, e.g. after late data, is another snapshot)."""
    return (str(lake.root), day_str(day), lake.version("trained_model", day),
            tuple(lake.version(a, day) for a in CONTEXT_ASSETS))


#: What scoring day D reads (the context of a model's scoring is built from these alone).
_SCORED_INPUTS = ("training_samples", "node_features", "bipartite_graph", "user_similarity_graph",
                  "item_similarity_graph")
#: The day the last evaluation loaded and built, ``(inputs, spec, ctx, with_graph)`` by
#: :func:`_inputs_key`, for the deployment's reference scoring of the same day (loading and
#: building a ``large`` day again costs ~3 s per deployment).
_DAY_CONTEXT = _Handover()


def _inputs_key(lake: Lake, day) -> tuple:
    return (str(lake.root), day_str(day), tuple(lake.version(a, day) for a in _SCORED_INPUTS))


def take_snapshot_reps(lake: Lake, day) -> tuple | None:
    """``(reps, user_raw, item_raw)`` of trained_model[day] over day's graph nodes when this
    process's last evaluation encoded them for the partitions the lake holds now (handed over
    once), else None."""
    return _SNAPSHOT_REPS.take(_snapshot_key(lake, day))


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
    from ml_core.inference import day_context, inference_needs_graph, score_day
    from ml_core.sanity import SCORERS, sanity_metrics

    log = log or (lambda msg: None)
    every = cfg.train.log_every_steps
    cand_dir = lake.checked_dir("trained_model", day)
    version = lake.version("trained_model", day)
    model, fspec, mspec, _ = load_model(cand_dir)
    inputs = load_day_inputs(lake, day)  # the sanity and CF scorers read graph[D]
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
    ctx = day_context(model, fspec, inputs)
    cand = score_day(model, fspec, inputs, mspec.fanouts, log=log, log_every=every, what="candidate",
                     keep_snapshot=True, ctx=ctx)
    _DAY_CONTEXT.put(_inputs_key(lake, day), (inputs, fspec, ctx, inference_needs_graph(model)))
    _SNAPSHOT_REPS.put(_snapshot_key(lake, day), cand.snapshot_reps)
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
    held = _DAY_CONTEXT.take(_inputs_key(lake, day)) if refs else None  # the evaluation's, when in this process
    inputs = held[0] if held else load_day_inputs(lake, day) if refs else None
    every = cfg.train.log_every_steps
    for i, ref in enumerate(refs, 1):
        what = f"reference {i}/{len(refs)}"
        role = "production" if prod is not None and ref == prod["version"] else "promoted"
        log(f"scoring {what}: {role} model {ref}")
        t = time.perf_counter()
        rmodel, rspec, rmspec, _ = load_model(store.checked_version_dir(ref))
        scored = score_day(rmodel, rspec, inputs, rmspec.fanouts,  # its own bundle's fan-outs
                           log=log, log_every=every, what=what, ctx=_reference_context(held, rmodel, rspec))
        if not np.array_equal(scored.users, cand_users):
            raise RuntimeError(f"reference {ref} scored the samples of {day_str(day)} in another order")
        out.references[ref] = scored.metrics
        out.differences[ref] = {
            task: gauc_difference(cand_groups, cand_labels[:, k], cand_probs[:, k], scored.probs[:, k],
                                  n_boot=cfg.deploy.bootstrap_samples, level=cfg.deploy.confidence)
            for k, task in enumerate(tasks)}
        diffs = ", ".join(f"{task} {d['diff']:+.4f}" for task, d in out.differences[ref].items())
        log(f"{what} scored in {format_duration(time.perf_counter() - t)}, GAUC {_gaucs(scored.metrics)}; "
            f"candidate minus it: {diffs}")
    if prod is not None:
        out.production = ProductionMetrics(prod["version"], out.references[prod["version"]])
    return out


def _reference_context(held: tuple | None, model, spec):
    """The day context ``model`` (with its feature ``spec``) scores the day on, from the one the
    evaluation ``held`` (the same context for the same spec, re-encoded node inputs for another),
    or None (built from the inputs) when there is none or it lacks the channels the model reads."""
    from ml_core.inference import inference_needs_graph

    if held is None:
        return None
    inputs, held_spec, ctx, held_graph = held
    graph = inference_needs_graph(model)
    if graph and not held_graph:
        return None
    if graph == held_graph and spec.same_as(held_spec):
        return ctx
    return ctx.for_spec(inputs, spec, graph)


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
