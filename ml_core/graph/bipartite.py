"""The user-item bipartite graph of a window of days (MoGE section 3: e_{u,i} = 1 iff the
pair has any interaction), with behaviour-weighted edges."""

from __future__ import annotations

import numpy as np
import polars as pl

from ml_core.data.schema import BEHAVIORS
from ml_core.graph.csr import CSR, BipartiteGraph
from ml_core.sorting import sorted_unique


def edge_table(events: pl.DataFrame | pl.LazyFrame, behavior_weights: dict[str, float]) -> pl.DataFrame:
    """One row per (user_id, item_id) with its weight and per-behaviour event counts."""
    lf = events.lazy() if isinstance(events, pl.DataFrame) else events
    weight = pl.col("behavior").replace_strict(behavior_weights, default=0.0, return_dtype=pl.Float64)
    return (
        lf.group_by("user_id", "item_id")
        .agg(
            weight.sum().alias("weight"),
            *[(pl.col("behavior") == b).sum().cast(pl.Float32).alias(f"n_{b}") for b in BEHAVIORS],
        )
        .filter(pl.col("weight") > 0)
        .collect()
    )


def graph_from_edges(edges: pl.DataFrame, days: list[str]) -> BipartiteGraph:
    """Build the CSR graph from an :func:`edge_table` (ids sorted, so rows are stable)."""
    user_ids = sorted_unique(edges["user_id"].to_numpy()).astype(np.int64)
    item_ids = sorted_unique(edges["item_id"].to_numpy()).astype(np.int64)
    rows = np.searchsorted(user_ids, edges["user_id"].to_numpy())
    cols = np.searchsorted(item_ids, edges["item_id"].to_numpy())
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(user_ids)), out=indptr[1:])
    ui = CSR(indptr, cols.astype(np.int64), edges["weight"].to_numpy()[order].astype(np.float32), len(item_ids))
    counts = {b: edges[f"n_{b}"].to_numpy()[order].astype(np.float32) for b in BEHAVIORS}
    return BipartiteGraph(user_ids, item_ids, ui, counts, days=list(days))


def build_bipartite(
    events: pl.DataFrame | pl.LazyFrame, behavior_weights: dict[str, float], days: list[str]
) -> BipartiteGraph:
    """Full rebuild of the graph from the window's events."""
    return graph_from_edges(edge_table(events, behavior_weights), days)


def degree_summary(degrees: np.ndarray) -> dict[str, float]:
    if len(degrees) == 0:
        return {"min": 0, "median": 0, "mean": 0.0, "p99": 0, "max": 0}
    return {
        "min": int(degrees.min()),
        "median": float(np.median(degrees)),
        "mean": round(float(degrees.mean()), 3),
        "p99": float(np.percentile(degrees, 99)),
        "max": int(degrees.max()),
    }
