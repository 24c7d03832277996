"""The stages of the daily flow as plain functions: read the lake, compute, write the lake.

Each ``run_*`` takes the config, the :class:`~ml_core.storage.Lake`, the partition day and the
upstream days it may read (the orchestration layer derives them from its partition mappings;
:func:`window` gives the same days for scripts), writes its partition atomically and returns a
stats dict for metadata. Nothing here imports dagster.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta

import numpy as np
import polars as pl

from ml_core.config import PipelineConfig
from ml_core.data.sources import profiles, read_day
from ml_core.features import build_node_features
from ml_core.graph.bipartite import build_bipartite, degree_summary
from ml_core.graph.csr import BipartiteGraph, SimilarityGraph
from ml_core.model_registry import ModelRegistry, gate, load_model, read_manifest, save_model, write_manifest
from ml_core.sampling.samples import build_training_samples
from ml_core.storage import Lake, day_str
from ml_core.contracts.day import DayInputs

ASSETS = ("interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph",
          "node_features", "training_samples", "trained_model", "model_evaluation", "deployed_model")


def as_date(day: date | str) -> date:
    return day if isinstance(day, date) else date.fromisoformat(day)


def window(day: date | str, start_offset: int, end_offset: int, first_day: date | str | None = None) -> list[str]:
    """Days ``D+start_offset .. D+end_offset`` (inclusive), not before ``first_day``."""
    d = as_date(day)
    days = [d + timedelta(days=o) for o in range(start_offset, end_offset + 1)]
    if first_day is not None:
        days = [x for x in days if x >= as_date(first_day)]
    return [x.isoformat() for x in days]


def graph_window(cfg: PipelineConfig, day) -> list[str]:
    return window(day, -cfg.graph.window_days, -1, cfg.start_date)


def train_window(cfg: PipelineConfig, day) -> list[str]:
    return window(day, -cfg.train.train_days, -1, cfg.start_date)


def _timed(fn, *args, **kwargs):
    import resource

    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, {"seconds": round(time.perf_counter() - t0, 3),
                 "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# -- 1. interaction logs ---------------------------------------------------------------------------
def run_interaction_logs(cfg: PipelineConfig, lake: Lake, day) -> dict:
    de = read_day(cfg.source, as_date(day))
    lake.write_table("interaction_logs", day, de.events, quarantine=de.quarantine)
    reasons = de.quarantine.group_by("reason").len().sort("len", descending=True) if de.quarantine.height else None
    return {
        "rows": de.events.height,
        "users": de.events["user_id"].n_unique() if de.events.height else 0,
        "items": de.events["item_id"].n_unique() if de.events.height else 0,
        "behaviors": dict(de.events.group_by("behavior").len().iter_rows()) if de.events.height else {},
        "quarantined": de.quarantine.height,
        "quarantine_reasons": dict(reasons.iter_rows()) if reasons is not None else {},
        "source": de.stats,
    }


def scan_logs(lake: Lake, days: list[str]) -> pl.LazyFrame:
    if not days:
        from ml_core.data.schema import EVENT_SCHEMA

        return pl.LazyFrame(schema=EVENT_SCHEMA)
    return lake.scan_tables("interaction_logs", days)


# -- 2. graphs -------------------------------------------------------------------------------------
GRAPH_ASSETS = {"bipartite": "bipartite_graph", "user": "user_similarity_graph", "item": "item_similarity_graph"}


def _previous_window(cfg: PipelineConfig, lake: Lake, day, log_days: list[str]):
    """Day D-1's stored graphs + refresh state, if they exist and cover D-1's window."""
    from ml_core.graph.incremental import SimilarityState, WindowGraphs

    prev_day = window(day, -1, -1)[0]
    prev_days = graph_window(cfg, prev_day)
    dirs = {k: lake.partition_dir(a, prev_day) for k, a in GRAPH_ASSETS.items()}
    if not prev_days or not all((d / "meta.json").exists() for d in dirs.values()):
        return None, "no stored graphs for the previous day"
    try:
        bip = BipartiteGraph.load(dirs["bipartite"])
        if bip.days != prev_days:
            return None, f"previous graph covers {bip.days}, expected {prev_days}"
        return WindowGraphs(bip, SimilarityState.load(dirs["user"] / "state"),
                            SimilarityState.load(dirs["item"] / "state")), prev_days
    except (FileNotFoundError, KeyError, ValueError) as e:  # partially replaced / older layout
        return None, f"previous state unreadable ({e})"


def run_window_graphs(cfg: PipelineConfig, lake: Lake, day, log_days: list[str]) -> tuple[object, dict]:
    """The bipartite graph of days D-W..D-1 and both top-k similarity graphs, written as three
    partitions. Incremental from day D-1 when possible (identical result), else a full rebuild."""
    from ml_core.graph.incremental import IncrementalNotSupported, build_window, refresh_window

    reason = "graph.incremental = false"
    result = None
    if cfg.graph.incremental and log_days:
        prev, info = _previous_window(cfg, lake, day, log_days)
        if prev is None:
            reason = info
        else:
            entering = [d for d in log_days if d not in info]
            leaving = [d for d in info if d not in log_days]
            try:
                result = refresh_window(prev, None, None, scan_logs(lake, entering), scan_logs(lake, leaving),
                                        cfg.graph, log_days, verify=cfg.graph.verify_incremental)
            except IncrementalNotSupported as e:
                reason = str(e)
    if result is None:
        result = build_window(scan_logs(lake, log_days), cfg.graph, log_days)
        result.stats["full_rebuild_reason"] = reason
    for key, asset in GRAPH_ASSETS.items():
        with lake.write_dir(asset, day) as tmp:
            if key == "bipartite":
                result.bip.save(tmp)
            else:
                state = result.user_state if key == "user" else result.item_state
                (result.user_sim if key == "user" else result.item_sim).save(tmp)
                state.save(tmp / "state")
    return result, result.stats


def load_bipartite(lake: Lake, day) -> BipartiteGraph:
    d = lake.partition_dir("bipartite_graph", day)
    if not d.is_dir():
        raise FileNotFoundError(f"bipartite_graph partition {day_str(day)} is not materialized")
    return BipartiteGraph.load(d)


def load_similarity(lake: Lake, day, kind: str) -> SimilarityGraph:
    d = lake.partition_dir(f"{kind}_similarity_graph", day)
    if not d.is_dir():
        raise FileNotFoundError(f"{kind}_similarity_graph partition {day_str(day)} is not materialized")
    return SimilarityGraph.load(d)


# -- 3. features and samples -----------------------------------------------------------------------
def run_node_features(cfg: PipelineConfig, lake: Lake, day, log_days: list[str]) -> dict:
    up, ip = profiles(cfg.source)
    users, items = build_node_features(scan_logs(lake, log_days), up, ip)
    lake.write_table("node_features", day, users, items=items)
    return {"window_days": log_days, "users": users.height, "items": items.height,
            "user_columns": users.columns, "item_columns": items.columns}


def load_features(lake: Lake, day) -> tuple[pl.DataFrame, pl.DataFrame]:
    return lake.read_table("node_features", day), lake.read_table("node_features", day, "items")


def run_training_samples(cfg: PipelineConfig, lake: Lake, day) -> dict:
    events = lake.read_table("interaction_logs", day)
    bip = load_bipartite(lake, day)
    samples, stats = build_training_samples(events, bip.item_ids, bip.iu.degrees(), cfg.samples, day)
    lake.write_table("training_samples", day, samples)
    return {"rows": samples.height, **stats}


def run_data_day(cfg: PipelineConfig, lake: Lake, day) -> None:
    """Every data stage of one day in order (logs, graphs, features, samples), for scripts and
    tests; run days in date order so each window's earlier days exist."""
    run_interaction_logs(cfg, lake, day)
    days = graph_window(cfg, day)
    run_window_graphs(cfg, lake, day, days)
    run_node_features(cfg, lake, day, days)
    run_training_samples(cfg, lake, day)


def load_day_inputs(lake: Lake, day, with_graph: bool) -> DayInputs:
    users, items = load_features(lake, day)
    inputs = DayInputs(day=day_str(day), samples=lake.read_table("training_samples", day), users=users, items=items)
    # the graph is always loaded: it defines the day's node space (and the cold-start share)
    inputs.graph = load_bipartite(lake, day)
    if with_graph:
        inputs.user_sim = load_similarity(lake, day, "user")
        inputs.item_sim = load_similarity(lake, day, "item")
    return inputs


# -- 4. model --------------------------------------------------------------------------------------
def _input_versions(lake: Lake, assets_days: dict[str, list[str]]) -> dict:
    return {a: {d: lake.version(a, d) for d in days} for a, days in assets_days.items()}


def run_trained_model(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], code_version: str = "",
                      log=None) -> dict:
    """Train ``cfg.train.model`` on ``sample_days`` (each with its own graph) into the partition."""
    from ml_core.train.trainer import train, training_needs_graph

    need_graph = training_needs_graph(cfg.train)
    days = [load_day_inputs(lake, d, need_graph) for d in sample_days]
    tasks = list(cfg.samples.tasks)
    result = train(days, cfg.train, tasks, log=log)
    versions = _input_versions(lake, {a: sample_days for a in
                                      ("training_samples", "node_features", "bipartite_graph",
                                       "user_similarity_graph", "item_similarity_graph")} if need_graph else
                               {a: sample_days for a in ("training_samples", "node_features", "bipartite_graph")})
    with lake.write_dir("trained_model", day) as tmp:
        save_model(tmp, result.model, result.model_name, result.model_args, result.model_spec, result.feature_spec,
                   extra={"train_config": cfg.to_dict()["train"]})
        (tmp / "history.json").write_text(json.dumps(result.history))
        write_manifest(tmp, {
            "partition": day_str(day), "model": result.model_name, "model_args": result.model_args,
            "optimizer": cfg.train.optimizer, "post_training": cfg.train.post_training, "train_days": sample_days,
            "input_versions": versions, "code_version": code_version, "config_fingerprint": cfg.fingerprint(),
            "device": result.device, "seconds": result.seconds, "n_params": result.n_params,
        })
    return {"model": result.model_name, "model_args": result.model_args, "optimizer": cfg.train.optimizer,
            "post_training": result.post_training, "train_days": sample_days, "samples_seen": result.samples_seen,
            "seconds": round(result.seconds, 2), "device": result.device, "n_params": result.n_params,
            "history": result.history}


def run_model_evaluation(cfg: PipelineConfig, lake: Lake, day) -> dict:
    """Metrics of the candidate (trained_model[D]) and of the production model on day D."""
    from ml_core.inference import evaluate, inference_needs_graph

    cand_dir = lake.partition_dir("trained_model", day)
    model, fspec, _, _ = load_model(cand_dir)
    need_graph = inference_needs_graph(model)
    inputs = load_day_inputs(lake, day, with_graph=need_graph)
    out = {"day": day_str(day), "candidate": evaluate(model, fspec, inputs, cfg.train.fanouts),
           "candidate_manifest": read_manifest(cand_dir), "production": None}
    prod = ModelRegistry(lake.root).production()
    if prod is not None:
        pdir = ModelRegistry(lake.root).version_dir(prod["version"])
        pmodel, pspec, _, _ = load_model(pdir)
        pin = inputs if inference_needs_graph(pmodel) == need_graph else load_day_inputs(lake, day, inference_needs_graph(pmodel))
        out["production"] = {"version": prod["version"], "metrics": evaluate(pmodel, pspec, pin, cfg.train.fanouts)}
    with lake.write_dir("model_evaluation", day) as tmp:
        (tmp / "evaluation.json").write_text(json.dumps(out, indent=2, default=str))
    return out


def run_model_comparison(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], log=None) -> dict:
    """Every ``comparison`` variant trained on ``sample_days`` and evaluated on ``day`` (same
    budget and seeds); stores results.json, report.md and comparison.png in the partition."""
    from ml_core.compare import improvements, markdown_report, parse_variants, run_comparison
    from ml_core.eval.plots import comparison_plot

    if not sample_days:
        raise ValueError(f"{day_str(day)}: no training days before this day; nothing to compare")
    variants = parse_variants(cfg.comparison.variants)
    train_in = [load_day_inputs(lake, d, with_graph=True) for d in sample_days]
    eval_in = load_day_inputs(lake, day, with_graph=True)
    tasks = list(cfg.samples.tasks)
    out = run_comparison(train_in, eval_in, tasks, cfg.train, variants, cfg.comparison.seeds,
                         cfg.comparison.budget(), log=log)
    out["meta"] = {"evaluation day": day_str(day), "training days": ", ".join(sample_days),
                   "source": cfg.source.kind, "evaluation samples": eval_in.samples.height}
    out["improvements"] = improvements(out["summary"], tasks)
    report = markdown_report(out, f"Model comparison, {day_str(day)}")
    png = comparison_plot(out["summary"], tasks)
    with lake.write_dir("model_comparison", day) as tmp:
        (tmp / "results.json").write_text(json.dumps(out, indent=2, default=str))
        (tmp / "report.md").write_text(report)
        (tmp / "comparison.png").write_bytes(png)
    return {**out, "report": report, "plot": png}


def load_evaluation(lake: Lake, day) -> dict:
    p = lake.partition_dir("model_evaluation", day) / "evaluation.json"
    if not p.exists():
        raise FileNotFoundError(f"model_evaluation partition {day_str(day)} is not materialized")
    return json.loads(p.read_text())


def run_deployed_model(cfg: PipelineConfig, lake: Lake, day) -> dict:
    """Promote trained_model[D] to production if model_evaluation[D] passes the gate."""
    ev = load_evaluation(lake, day)
    reg = ModelRegistry(lake.root)
    with reg.lock():  # the pointer is read, judged and moved as one step
        return _decide_and_deploy(cfg, lake, day, ev, reg)


def _decide_and_deploy(cfg: PipelineConfig, lake: Lake, day, ev: dict, reg: ModelRegistry) -> dict:
    import shutil

    cand_dir = lake.partition_dir("trained_model", day)
    prod = reg.production()
    ok, reasons = gate(ev["candidate"], ev["production"]["metrics"] if ev["production"] else None,
                       cfg.deploy.gauc_tolerance, cfg.deploy.min_gauc)
    evaluated_against = ev["production"]["version"] if ev["production"] else None
    if (prod["version"] if prod else None) != evaluated_against:
        ok, reasons = False, reasons + [f"production changed since the evaluation (evaluated against "
                                        f"{evaluated_against}, now {prod['version'] if prod else None}): re-run model_evaluation"]
    if prod is not None and prod.get("partition", "") > day_str(day):
        ok, reasons = False, reasons + [f"production already serves a later partition ({prod['partition']})"]
    version = f"{day_str(day)}-{lake.version('trained_model', day)[:10]}"
    decision = {"partition": day_str(day), "version": version, "promoted": ok, "reasons": reasons,
                "candidate": ev["candidate"], "production_before": prod["version"] if prod else None}
    if ok:
        # bundle = trained model + the exact graph snapshot and features it was evaluated with
        with lake.write_dir("deployed_model", day) as tmp:
            shutil.copytree(cand_dir, tmp / "bundle", dirs_exist_ok=True)
            ctx = tmp / "bundle" / "context"
            for asset in ("bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features"):
                shutil.copytree(lake.partition_dir(asset, day), ctx / asset, dirs_exist_ok=True)
            manifest = read_manifest(tmp / "bundle")
            manifest.update({"version": version, "metrics": ev["candidate"],
                             "serving_context": {a: lake.version(a, day) for a in
                                                 ("bipartite_graph", "user_similarity_graph", "item_similarity_graph", "node_features")}})
            write_manifest(tmp / "bundle", manifest)
            (tmp / "decision.json").write_text(json.dumps(decision, indent=2, default=str))
        reg.publish(lake.partition_dir("deployed_model", day) / "bundle", version)
        reg.set_production(version, {"partition": day_str(day), "metrics": ev["candidate"]})
    else:
        with lake.write_dir("deployed_model", day) as tmp:
            (tmp / "decision.json").write_text(json.dumps(decision, indent=2, default=str))
    reg.record_decision(decision)
    return decision


def gauc_table(evaluation: dict) -> str:
    """A Markdown table of per-task metrics of the candidate (and production when present)."""
    rows = ["| model | task | GAUC | AUC | logloss | pos rate | users |", "|---|---|---|---|---|---|---|"]
    entries = [("candidate", evaluation["candidate"])]
    if evaluation.get("production"):
        entries.append((f"production {evaluation['production']['version']}", evaluation["production"]["metrics"]))
    for name, metrics in entries:
        for task, m in metrics.items():
            rows.append(f"| {name} | {task} | {m['gauc']:.4f} | {m['auc']:.4f} | {m['logloss']:.4f} | "
                        f"{m['pos_rate']:.3f} | {m['gauc_users']} |")
    return "\n".join(rows)


