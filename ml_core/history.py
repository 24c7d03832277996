"""The user's own history of day D: what each user did with each item and category in the
window D-W .. D-1 (never day D itself), and the user's last events.

These are the strongest signals of e-commerce logs (repeat views, carts and purchases: the rule
"user already interacted with the item" beats every node-feature model on Taobao), and what
industrial rankers are built around (DIN/DIEN on the same Taobao logs). Node features describe
a user and an item separately; the history describes the *pair*.

:func:`build_history` turns the window's events into three tables, stored with day D's node
features (``node_features[D]``: ``pairs.parquet``, ``user_categories.parquet``,
``sequences.parquet``) and copied into every deployed bundle with them:

* ``pairs``: one row per (user, item) of the window: ``n_<b>`` events of each behaviour b and
  ``days_ago`` (D minus the day of the pair's last event, 1..W);
* ``user_categories``: one row per (user, category): ``n_<b>``, ``days_ago`` and ``share`` (the
  category's share of the user's window events);
* ``sequences``: each user's last :data:`MAX_SEQUENCE` events, newest first (``pos`` 0):
  ``item_id``, ``behavior`` (code 1..4 in :data:`BEHAVIORS` order), ``days_ago``.

:func:`pair_features` is the one function that turns them into the pair input of any
(user, item) list: training, evaluation and serving all call it, so a served score equals the
evaluated one for the same pair and day. With ``n_b`` the counts of the pair, ``n_b^c`` those of
(u, category(i)), ``r`` and ``r^c`` the days since the last event of each (none: no value):

.. math::
    x_{ui} = [\\log(1 + n_b)_{b} \\,\\|\\, 1 / (1 + r) \\,\\|\\,
             \\log(1 + n^c_b)_{b} \\,\\|\\, n^c / n_u \\,\\|\\, 1 / (1 + r^c)]

(0 where the pair or the category has no event; 11 columns for the four behaviours). The
recency terms are bounded and monotone, so "never" and "long ago" are close, and "yesterday"
is 0.5. Two more columns (:data:`KNN_COLUMNS`) say what u did with the items most similar to i
and what u's most similar users did with i, from day D's window graphs
(:mod:`ml_core.graph.neighbours`, the sums the item-kNN and user-kNN scorers rank by):
``log(1 + sum_j w(u, j) S^I[i, j])`` and ``log(1 + sum_v S^U[u, v] w(v, i))``. A model's
:class:`~ml_core.contracts.features.PairSpec` names the columns it reads (``train.pair_knn``
decides whether the two are among them).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from ml_core.config import BEHAVIORS
from ml_core.graph.csr import BipartiteGraph, SimilarityGraph, lookup
from ml_core.graph.neighbours import item_knn_scores, user_knn_scores

#: Events per user kept in ``sequences`` (a model reads its first ``train.sequence_length``).
MAX_SEQUENCE = 50
#: Sequence event ages (days) are clipped to this (a model embeds 0..MAX_AGE).
MAX_AGE = 31
#: The history's table names in a node_features partition, in write order.
HISTORY_TABLES = ("pairs", "user_categories", "sequences")
#: The pair input's columns from the history tables.
HISTORY_COLUMNS: tuple[str, ...] = (
    *(f"p_num_log_pair_{b}" for b in BEHAVIORS), "p_num_pair_recency",
    *(f"p_num_log_cat_{b}" for b in BEHAVIORS), "p_num_cat_share", "p_num_cat_recency",
)
#: The pair input's columns from the window graphs (item-kNN and user-kNN sums, log(1 + s)).
KNN_COLUMNS: tuple[str, ...] = ("p_num_log_item_knn", "p_num_log_user_knn")
#: Every pair input column, in :func:`pair_features`'s order.
PAIR_COLUMNS: tuple[str, ...] = HISTORY_COLUMNS + KNN_COLUMNS
#: Behaviour codes of ``sequences.behavior`` (0 is padding in a model's sequence input).
BEHAVIOR_CODES = {b: k + 1 for k, b in enumerate(BEHAVIORS)}


def _counts(day: date) -> list[pl.Expr]:
    return [*[(pl.col("behavior") == b).sum().cast(pl.Int32).alias(f"n_{b}") for b in BEHAVIORS],
            (pl.lit(day) - pl.col("ds").max()).dt.total_days().cast(pl.Int32).alias("days_ago")]


def build_history(window_events: pl.LazyFrame | pl.DataFrame, day: date | str) -> dict[str, pl.DataFrame]:
    """``{table: frame}`` of :data:`HISTORY_TABLES` from the events of day ``day``'s window
    (which must not contain ``day`` itself: ValueError)."""
    d = day if isinstance(day, date) else date.fromisoformat(str(day))
    ev = window_events.lazy().select("user_id", "item_id", "behavior", "category", "ts", "ds").collect()
    if ev.height and ev["ds"].max() >= d:
        raise ValueError(f"the history of {d} must come from days before it; the events reach {ev['ds'].max()}")
    pairs = ev.group_by("user_id", "item_id").agg(_counts(d)).sort("user_id", "item_id")
    totals = ev.group_by("user_id").agg(pl.len().cast(pl.Float32).alias("n_user"))
    cats = (ev.filter(pl.col("category").is_not_null()).group_by("user_id", "category")
            .agg(*_counts(d), pl.len().cast(pl.Float32).alias("n"))
            .join(totals, on="user_id").with_columns((pl.col("n") / pl.col("n_user")).alias("share"))
            .drop("n", "n_user").sort("user_id", "category"))
    seq = (ev.sort(["user_id", "ts", "item_id", "behavior"], descending=[False, True, False, False])
           .with_columns(pl.int_range(pl.len()).over("user_id").alias("pos"))
           .filter(pl.col("pos") < MAX_SEQUENCE)
           .select("user_id", pl.col("pos").cast(pl.Int32), "item_id",
                   pl.col("behavior").replace_strict(BEHAVIOR_CODES, return_dtype=pl.Int8).alias("behavior"),
                   (pl.lit(d) - pl.col("ds")).dt.total_days().cast(pl.Int32).alias("days_ago")))
    return {"pairs": pairs, "user_categories": cats, "sequences": seq}


def _recency(days_ago: pl.Expr) -> pl.Expr:
    return (1.0 / (1.0 + days_ago.cast(pl.Float32))).fill_null(0.0)


def pair_columns(knn: bool) -> list[str]:
    """The pair input columns a model reads: the history's, and :data:`KNN_COLUMNS` with ``knn``."""
    return list(PAIR_COLUMNS if knn else HISTORY_COLUMNS)


def uses_knn(pair) -> bool:
    """Whether a model's pair input (a :class:`~ml_core.contracts.features.PairSpec`, a column
    list, or None) reads the :data:`KNN_COLUMNS` (and so the day's similarity graphs)."""
    columns = getattr(pair, "columns", pair) or []
    return any(c in KNN_COLUMNS for c in columns)


def knn_features(graphs: tuple[BipartiteGraph, SimilarityGraph, SimilarityGraph], user_ids: np.ndarray,
                 item_ids: np.ndarray) -> np.ndarray:
    """The :data:`KNN_COLUMNS` ``[n, 2]`` (float32) of the pairs, from day D's window graphs
    ``(bipartite, user similarity, item similarity)``; a user or item absent from them scores 0."""
    graph, user_sim, item_sim = graphs
    for kind, sim, ids in (("user", user_sim, graph.user_ids), ("item", item_sim, graph.item_ids)):
        if not np.array_equal(sim.node_ids, ids):
            raise ValueError(f"the {kind} similarity graph's nodes differ from the bipartite graph's")
    u_row, i_row = lookup(graph.user_ids, np.asarray(user_ids, np.int64)), lookup(graph.item_ids, np.asarray(item_ids, np.int64))
    out = np.stack([item_knn_scores(graph, item_sim.adj, u_row, i_row),
                    user_knn_scores(graph, user_sim.adj, u_row, i_row)], axis=1)
    return np.log1p(out).astype(np.float32)


def pair_features(history: dict[str, pl.DataFrame], user_ids: np.ndarray, item_ids: np.ndarray,
                  items: pl.DataFrame, columns: list[str] | tuple[str, ...] = HISTORY_COLUMNS,
                  graphs: tuple[BipartiteGraph, SimilarityGraph, SimilarityGraph] | None = None) -> np.ndarray:
    """The pair input ``[n, len(columns)]`` (float32, unscaled; module docstring) of the pairs
    ``(user_ids[j], item_ids[j])``, the ``columns`` (of :data:`PAIR_COLUMNS`) in the order given;
    ``items``: the day's item feature table, whose ``category`` column gives each item's category
    (an item absent from it has none); ``graphs``: day D's window graphs, needed for
    :data:`KNN_COLUMNS`."""
    unknown = [c for c in columns if c not in PAIR_COLUMNS]
    if unknown:
        raise ValueError(f"unknown pair input columns {unknown} (known: {list(PAIR_COLUMNS)})")
    frame = pl.DataFrame({"user_id": np.asarray(user_ids, np.int64), "item_id": np.asarray(item_ids, np.int64)})
    cat = items.select("item_id", "category") if "category" in items.columns else None
    if cat is not None:
        frame = frame.join(cat, on="item_id", how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("category"))
    frame = (frame.join(history["pairs"], on=["user_id", "item_id"], how="left", maintain_order="left")
             .join(history["user_categories"], on=["user_id", "category"], how="left", maintain_order="left",
                   suffix="_cat"))
    log = lambda c: pl.col(c).fill_null(0).cast(pl.Float32).log1p()
    out = frame.select(
        *[log(f"n_{b}").alias(f"p_num_log_pair_{b}") for b in BEHAVIORS],
        _recency(pl.col("days_ago")).alias("p_num_pair_recency"),
        *[log(f"n_{b}_cat").alias(f"p_num_log_cat_{b}") for b in BEHAVIORS],
        pl.col("share").fill_null(0.0).cast(pl.Float32).alias("p_num_cat_share"),
        _recency(pl.col("days_ago_cat")).alias("p_num_cat_recency"),
    )
    assert tuple(out.columns) == HISTORY_COLUMNS
    parts = [out.to_numpy().astype(np.float32, copy=False).reshape(len(frame), len(HISTORY_COLUMNS))]
    if uses_knn(columns):
        if graphs is None:
            raise ValueError(f"the pair input columns {list(KNN_COLUMNS)} need the day's window graphs "
                             "(bipartite and both similarity graphs)")
        parts.append(knn_features(graphs, user_ids, item_ids))
    full = np.concatenate(parts, axis=1)
    return full[:, [PAIR_COLUMNS.index(c) for c in columns]]


def read_history(directory: Path) -> dict[str, pl.DataFrame] | None:
    """The history tables stored in ``directory`` (a node_features partition, or a bundle's copy
    of one), or None when it predates them."""
    directory = Path(directory)
    if not all((directory / f"{t}.parquet").is_file() for t in HISTORY_TABLES):
        return None
    return {t: pl.read_parquet(directory / f"{t}.parquet") for t in HISTORY_TABLES}


def missing_history(day: str, what: str, switch: str) -> ValueError:
    """The error of a model input (``what``) that needs day ``day``'s history when its
    node_features partition has none, naming the setting that turns the input off."""
    return ValueError(f"day {day}: {what} needs the day's history, which its node_features partition lacks "
                      f"(written before it existed): re-materialize node_features, or set {switch}")
