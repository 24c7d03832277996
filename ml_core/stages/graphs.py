"""Stage 2, the graphs of day D: the user-item bipartite graph of days D-W .. D-1 and the top-k
user and item similarity graphs derived from it, written as three partitions.

Day D's graphs are refreshed incrementally from day D-1's stored graphs and refresh state when
they exist, cover D-1's window and were built with the same graph settings from the log
partitions the lake holds now (``inputs.json``: a log day re-ingested with late data since, or
another ``[graph]`` setting, means a full rebuild); the result is identical to a full rebuild
either way, so day D does not depend on day D-1 having been (re)built first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_core.catalog import GRAPHS
from ml_core.config import PipelineConfig
from ml_core.graph.csr import BipartiteGraph
from ml_core.stages.inputs import scan_logs
from ml_core.stages.windows import graph_window_days, window
from ml_core.storage import CorruptPartitionError, Lake

if TYPE_CHECKING:
    from ml_core.graph.incremental import WindowGraphs

#: Graph kind -> the asset (partition) it is stored as.
#: What a bipartite partition was built from: the graph settings and each log day's data version.
INPUTS_FILE = "inputs.json"


def graph_inputs(cfg: PipelineConfig, lake: Lake, log_days: list[str]) -> dict:
    return {"graph": cfg.fingerprint("graph"), "logs": {d: lake.version("interaction_logs", d) for d in log_days}}


@dataclass
class BipartiteSummary:
    """The bipartite graph's metadata: build mode, window, size, degree summaries, cost."""

    mode: str
    window_days: list[str]
    users: int
    items: int
    edges: int
    user_degree: dict
    item_degree: dict
    seconds: float
    peak_mem_delta_mb: float
    full_rebuild_reason: str


@dataclass
class SimilaritySummary:
    """One similarity graph's metadata: mode, size, k, measure, share of nodes with no
    neighbour, cost, hub handling (``hub_recall_at_k`` only when measured), where its rows were
    walked (``engine``: graph.engine)."""

    mode: str
    nodes: int
    edges: int
    k: int
    measure: str
    no_neighbor_share: float
    seconds: float
    peak_mem_delta_mb: float
    hub_nodes_skipped: int
    pairs_counted: int
    exact: bool
    rows_recomputed_share: float
    engine: str
    hub_recall_at_k: float | None = None


@dataclass
class GraphsResult:
    """The three graphs (``graphs.bip``, ``graphs.user_sim``, ``graphs.item_sim``) and their
    summaries; ``mode`` and ``seconds`` are the whole computation's."""

    graphs: WindowGraphs
    mode: str
    seconds: float
    bipartite: BipartiteSummary
    user_similarity: SimilaritySummary
    item_similarity: SimilaritySummary


def _similarity_summary(st: dict, engine: str) -> SimilaritySummary:
    return SimilaritySummary(
        mode=st["mode"], nodes=st["n_nodes"], edges=st["n_edges"], k=st["k"], measure=st["measure"],
        no_neighbor_share=st["share_no_similar_neighbour"], seconds=st["wall_time_s"],
        peak_mem_delta_mb=st["peak_mem_delta_mb"], hub_nodes_skipped=st["hub_nodes_skipped"],
        pairs_counted=st["pairs_counted"], exact=st["exact"], rows_recomputed_share=st.get("walk_cost_share", 1.0),
        engine=engine, hub_recall_at_k=st.get("hub_recall_at_k"))


def _previous_window(cfg: PipelineConfig, lake: Lake, day):
    """Day D-1's stored graphs + refresh state and D-1's window, if they exist and cover that
    window; else ``None`` and the reason."""
    from ml_core.graph.incremental import WindowGraphs

    prev_day = window(day, -1, -1)[0]
    prev_days = graph_window_days(cfg, prev_day)
    dirs = {k: lake.partition_dir(a, prev_day) for k, a in GRAPHS.items()}
    if not prev_days or not all((d / "meta.json").exists() for d in dirs.values()):
        return None, "no stored graphs for the previous day"
    try:
        for a in GRAPHS.values():
            lake.checked_dir(a, prev_day)  # a corrupt previous day is never refreshed from
        bip = BipartiteGraph.load(dirs["bipartite"])
        if bip.days != prev_days:
            return None, f"previous graph covers {bip.days}, expected {prev_days}"
        built = json.loads((dirs["bipartite"] / INPUTS_FILE).read_text())
        now = graph_inputs(cfg, lake, [d for d in prev_days if d in built["logs"]])
        if built["graph"] != now["graph"]:
            return None, "the previous day's graphs were built with other [graph] settings"
        changed = sorted(d for d, v in built["logs"].items() if now["logs"].get(d) != v)
        if changed:
            return None, f"the previous day's graphs were built from other versions of the logs of {changed}"
        return WindowGraphs.load_parts(dirs, bip), prev_days
    except (FileNotFoundError, KeyError, ValueError, CorruptPartitionError) as e:  # partially replaced / older
        # layout / no inputs.json / corrupt: a full rebuild from the logs
        return None, f"previous state unreadable ({e})"


def run_window_graphs(cfg: PipelineConfig, lake: Lake, day, log_days: list[str]) -> GraphsResult:
    """Build (or refresh) day ``day``'s three graphs from the logs of ``log_days`` and write
    them as three partitions."""
    from ml_core.graph.engine import engine_for
    from ml_core.graph.incremental import (
        IncrementalNotSupported,
        build_window,
        refresh_window,
    )

    reason = "graph.incremental = false"
    result = None
    with engine_for(cfg.graph) as engine:  # graph.engine: one (local) cluster for the whole stage
        if cfg.graph.incremental and log_days:
            prev, info = _previous_window(cfg, lake, day)
            if prev is None:
                reason = info
            else:
                entering = [d for d in log_days if d not in info]
                leaving = [d for d in info if d not in log_days]
                try:
                    result = refresh_window(prev, scan_logs(lake, entering), scan_logs(lake, leaving),
                                            cfg.graph, log_days, verify=cfg.graph.verify_incremental, engine=engine)
                except IncrementalNotSupported as e:
                    reason = str(e)
        if result is None:
            result = build_window(scan_logs(lake, log_days), cfg.graph, log_days, engine=engine)
            result.stats["full_rebuild_reason"] = reason
    result.stats["engine"] = cfg.graph.engine
    inputs = json.dumps(graph_inputs(cfg, lake, log_days), indent=1)
    for key, asset in GRAPHS.items():
        with lake.write_dir(asset, day) as tmp:
            result.save_part(key, tmp)
            if key == "bipartite":
                (tmp / INPUTS_FILE).write_text(inputs)
    stats = result.stats
    b = stats["bipartite"]
    return GraphsResult(
        graphs=result, mode=stats["mode"], seconds=stats["wall_time_s"],
        bipartite=BipartiteSummary(
            mode=stats["mode"], window_days=log_days, users=b["n_users"], items=b["n_items"], edges=b["n_edges"],
            user_degree=b["user_degree"], item_degree=b["item_degree"], seconds=b["wall_time_s"],
            peak_mem_delta_mb=b["peak_mem_delta_mb"], full_rebuild_reason=stats.get("full_rebuild_reason", "")),
        user_similarity=_similarity_summary(stats["user_sim"], cfg.graph.engine),
        item_similarity=_similarity_summary(stats["item_sim"], cfg.graph.engine),
    )
