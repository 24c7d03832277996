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
evaluated one for the same pair and day. It reads them through a :class:`PairIndex`, built
once per day (each table row's terms computed once, then sorted-key lookups per call). With
``n_b`` the counts of the pair, ``n_b^c`` those of (u, category(i)), ``r`` and ``r^c`` the days
since the last event of each (none: no value):

.. math::
    x_{ui} = [\\log(1 + n_b)_{b} \\,\\|\\, 1 / (1 + r) \\,\\|\\,
             \\log(1 + n^c_b)_{b} \\,\\|\\, n^c / n_u \\,\\|\\, 1 / (1 + r^c)]

(0 where the pair or the category has no event; 11 columns for the four behaviours). The
recency terms are bounded and monotone, so "never" and "long ago" are close, and "yesterday"
is 0.5. Two more columns (:data:`KNN_COLUMNS`) say what u did with the items most similar to i
and what u's most similar users did with i, from day D's window graphs
(:mod:`ml_core.graph.neighbours`, the sums the item-kNN and user-kNN scorers rank by):
``log(1 + sum_j w(u, j) S^I[i, j])`` and ``log(1 + sum_v S^U[u, v] w(v, i))``. A model's
:class:`~ml_core.contracts.vocabulary.PairSpec` names the columns it reads (``train.pair_knn``
decides whether the two are among them).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from ml_core.config import BEHAVIORS
from ml_core.graph.csr import BipartiteGraph, IdIndex, SimilarityGraph, entry_positions, lookup
from ml_core.graph.neighbours import PairSums, item_knn_scores, user_knn_scores
from ml_core.sorting import sorted_unique

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


def _log_counts(prefix: str) -> list[pl.Expr]:
    return [pl.col(f"n_{b}").fill_null(0).cast(pl.Float32).log1p().alias(f"p_num_log_{prefix}_{b}") for b in BEHAVIORS]


def pair_terms() -> list[pl.Expr]:
    """The pair input's terms a ``pairs`` row gives (module docstring): ``log(1 + n_b)`` and
    ``1 / (1 + r)``; a row of nulls (no such pair) gives 0."""
    return [*_log_counts("pair"), _recency(pl.col("days_ago")).alias("p_num_pair_recency")]


def category_terms() -> list[pl.Expr]:
    """The terms a ``user_categories`` row gives: ``log(1 + n^c_b)``, ``n^c / n_u`` and
    ``1 / (1 + r^c)``; a row of nulls gives 0."""
    return [*_log_counts("cat"), pl.col("share").fill_null(0.0).cast(pl.Float32).alias("p_num_cat_share"),
            _recency(pl.col("days_ago")).alias("p_num_cat_recency")]


class KeyedTerms:
    """One history table's terms by key ``(user_id, <key>)``: each row's terms computed once
    (``terms``, float32, plus a last row: those of a row of nulls), the rows laid out as a CSR
    matrix from user rank to key rank (ranks among the table's distinct values, each an
    :class:`~ml_core.graph.csr.IdIndex`), so a lookup is two rank look-ups, a binary search
    within the user's row and a gather (no hash table per call)."""

    def __init__(self, table: pl.DataFrame, key: str, terms: list[pl.Expr]):
        table = table.filter(pl.col("user_id").is_not_null() & pl.col(key).is_not_null())  # a null key joins nothing
        users, keys = (table[c].to_numpy().astype(np.int64) for c in ("user_id", key))
        self.users, self.keys = IdIndex(sorted_unique(users)), IdIndex(sorted_unique(keys))
        u, k = self.users.rows(users), self.keys.rows(keys)
        if len(self.users) * max(len(self.keys), 1) >= 2**63:
            raise ValueError(f"{len(self.users)} users x {len(self.keys)} {key}s overflow int64 (user, key) codes")
        code = u * len(self.keys) + k
        order = np.argsort(code, kind="stable")  # by user, then key (O(n) for build_history's sorted tables)
        if (np.diff(code[order]) == 0).any():
            raise ValueError(f"the history table has several rows of one (user_id, {key})")
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=len(self.users)))]).astype(np.int64)
        self.key_rank = k[order]
        values = pl.concat([table, table.clear(1)]).select(terms).to_numpy().astype(np.float32, copy=False)
        self.values = np.ascontiguousarray(values[np.append(order, len(table))])  # [rows + 1, terms]

    def of(self, user_ids: np.ndarray, keys: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The terms ``[n, T]`` of the rows ``(user_ids[j], keys[j])`` (those of a null row where
        the table has none, or where ``valid[j]`` is False)."""
        k = self.keys.rows(keys)
        if valid is not None:
            k[~valid] = -1
        row = entry_positions(self.indptr, self.key_rank, self.users.rows(user_ids), k)
        row[row < 0] = len(self.key_rank)
        return self.values[row]


class PairIndex:
    """Day D's :data:`HISTORY_COLUMNS` of any (user, item) pair by array lookups, built once per
    day (a loaded :class:`~ml_core.contracts.day.DayInputs`, a server's bundle) from the history
    tables and the day's item table (``category``: each item's category; an item absent from it,
    or without one, has none). Equal, bit for bit, to left joins of the pairs on the tables (each
    term is the same expression of the same row; a tested property)."""

    def __init__(self, history: dict[str, pl.DataFrame], items: pl.DataFrame):
        assert tuple(e.meta.output_name() for e in pair_terms() + category_terms()) == HISTORY_COLUMNS
        self.pairs = KeyedTerms(history["pairs"], "item_id", pair_terms())
        self.categories = KeyedTerms(history["user_categories"], "category", category_terms())
        cat = items.select("item_id", pl.col("category") if "category" in items.columns
                           else pl.lit(None, pl.Int64).alias("category"))
        ids = cat["item_id"].to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        self.item_ids = IdIndex(ids[order])
        if (np.diff(self.item_ids.ids) == 0).any():
            raise ValueError("the item table has several rows of one item_id")
        # each item's category (and whether it has one), then a last entry for the items absent from the table
        self.has_category = np.append(cat["category"].is_not_null().to_numpy()[order], False)
        self.item_category = np.append(cat["category"].fill_null(0).to_numpy().astype(np.int64)[order], 0)

    def features(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """The :data:`HISTORY_COLUMNS` ``[n, 11]`` (float32) of the pairs ``(user_ids[j], item_ids[j])``."""
        user_ids, item_ids = np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64)
        row = self.item_ids.rows(item_ids)
        row[row < 0] = len(self.item_ids)
        cats = self.categories.of(user_ids, self.item_category[row], self.has_category[row])
        return np.concatenate([self.pairs.of(user_ids, item_ids), cats], axis=1)


def pair_columns(knn: bool) -> list[str]:
    """The pair input columns a model reads: the history's, and :data:`KNN_COLUMNS` with ``knn``."""
    return list(PAIR_COLUMNS if knn else HISTORY_COLUMNS)


def uses_knn(pair) -> bool:
    """Whether a model's pair input (a :class:`~ml_core.contracts.vocabulary.PairSpec`, a column
    list, or None) reads the :data:`KNN_COLUMNS` (and so the day's similarity graphs)."""
    columns = getattr(pair, "columns", pair) or []
    return any(c in KNN_COLUMNS for c in columns)


def check_knn_graphs(graphs: tuple[BipartiteGraph, SimilarityGraph, SimilarityGraph]) -> None:
    """ValueError unless both similarity graphs have the bipartite graph's nodes."""
    graph, user_sim, item_sim = graphs
    for kind, sim, ids in (("user", user_sim, graph.user_ids), ("item", item_sim, graph.item_ids)):
        if not np.array_equal(sim.node_ids, ids):
            raise ValueError(f"the {kind} similarity graph's nodes differ from the bipartite graph's")


def knn_features(graphs: tuple[BipartiteGraph, SimilarityGraph, SimilarityGraph], user_ids: np.ndarray,
                 item_ids: np.ndarray, sums: PairSums | None = None) -> np.ndarray:
    """The :data:`KNN_COLUMNS` ``[n, 2]`` (float32) of the pairs, from day D's window graphs
    ``(bipartite, user similarity, item similarity)``; a user or item absent from them scores 0.
    ``sums``: the same graphs' :class:`~ml_core.graph.neighbours.PairSums` (a server's, built
    once per snapshot), which gives the same values by lookups."""
    check_knn_graphs(graphs)
    graph, user_sim, item_sim = graphs
    u_row, i_row = lookup(graph.user_ids, np.asarray(user_ids, np.int64)), lookup(graph.item_ids, np.asarray(item_ids, np.int64))
    if sums is not None:
        out = np.stack(sums.scores(u_row, i_row), axis=1)
    else:
        out = np.stack([item_knn_scores(graph, item_sim.adj, u_row, i_row),
                        user_knn_scores(graph, user_sim.adj, u_row, i_row)], axis=1)
    return np.log1p(out).astype(np.float32)


def pair_features(history: dict[str, pl.DataFrame] | PairIndex, user_ids: np.ndarray, item_ids: np.ndarray,
                  items: pl.DataFrame | None = None, columns: list[str] | tuple[str, ...] = HISTORY_COLUMNS,
                  graphs: tuple[BipartiteGraph, SimilarityGraph, SimilarityGraph] | None = None,
                  sums: PairSums | None = None) -> np.ndarray:
    """The pair input ``[n, len(columns)]`` (float32, unscaled; module docstring) of the pairs
    ``(user_ids[j], item_ids[j])``, the ``columns`` (of :data:`PAIR_COLUMNS`) in the order given;
    ``history``: the day's history tables with ``items``, its item table (whose ``category``
    column gives each item's category), or the :class:`PairIndex` of both (built once per day);
    ``graphs``: day D's window graphs, needed for :data:`KNN_COLUMNS` (``sums``: their
    precomputed :class:`~ml_core.graph.neighbours.PairSums`, optional)."""
    unknown = [c for c in columns if c not in PAIR_COLUMNS]
    if unknown:
        raise ValueError(f"unknown pair input columns {unknown} (known: {list(PAIR_COLUMNS)})")
    if not isinstance(history, PairIndex) and items is None:
        raise ValueError("the pair input of history tables needs the day's item table (items), or pass a PairIndex")
    index = history if isinstance(history, PairIndex) else PairIndex(history, items)
    parts = [index.features(user_ids, item_ids)]
    if uses_knn(columns):
        if graphs is None:
            raise ValueError(f"the pair input columns {list(KNN_COLUMNS)} need the day's window graphs "
                             "(bipartite and both similarity graphs)")
        parts.append(knn_features(graphs, user_ids, item_ids, sums))
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
