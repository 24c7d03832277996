"""Readers of stored partitions that several stages share (the logs of a window, a day's
graphs and features, a day's training inputs)."""

from __future__ import annotations

import polars as pl

from ml_core.contracts.day import DayInputs
from ml_core.graph.csr import BipartiteGraph, SimilarityGraph
from ml_core.history import read_history
from ml_core.storage import Lake, day_str


def scan_logs(lake: Lake, days: list[str]) -> pl.LazyFrame:
    """The stored interaction logs of ``days`` (an empty frame with the event schema for none)."""
    if not days:
        from ml_core.data.schema import EVENT_SCHEMA

        return pl.LazyFrame(schema=EVENT_SCHEMA)
    return lake.scan_tables("interaction_logs", days)


def load_bipartite(lake: Lake, day) -> BipartiteGraph:
    return BipartiteGraph.load(lake.checked_dir("bipartite_graph", day))


def load_similarity(lake: Lake, day, kind: str) -> SimilarityGraph:
    return SimilarityGraph.load(lake.checked_dir(f"{kind}_similarity_graph", day))


def load_features(lake: Lake, day) -> tuple[pl.DataFrame, pl.DataFrame]:
    return lake.read_table("node_features", day), lake.read_table("node_features", day, "items")


def load_history(lake: Lake, day) -> dict[str, pl.DataFrame] | None:
    """Day ``day``'s history tables (:mod:`ml_core.history`), or None when its node_features
    partition predates them."""
    return read_history(lake.checked_dir("node_features", day))


def load_day_inputs(lake: Lake, day) -> DayInputs:
    """Day ``day``'s samples, node features, history, bipartite graph and both similarity graphs,
    as the trainer and the evaluation read them (graph models read the similarity graphs' channels,
    the pair input their kNN sums, the CF scorers both; they are top-k graphs, small to load)."""
    users, items = load_features(lake, day)
    return DayInputs(day=day_str(day), samples=lake.read_table("training_samples", day), users=users, items=items,
                     history=load_history(lake, day), graph=load_bipartite(lake, day),
                     user_sim=load_similarity(lake, day, "user"), item_sim=load_similarity(lake, day, "item"))
