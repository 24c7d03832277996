"""One day's model inputs: what is stored for a day and its node spaces, encoded.

Node spaces: a day's context indexes users as ``graph users ++ users only seen in the day's
samples`` (and the same for items), so graph rows keep their CSR positions and nodes that are
new that day are isolated (no neighbours) but still carry features. The bipartite channel uses
the homogeneous view ``[users | items]`` (item j is node ``n_users + j``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ml_core.contracts.batch import NodeTable, Sequences
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.graph.csr import CSR, BipartiteGraph, SimilarityGraph, lookup
from ml_core.graph.neighbours import PAIR_SUMS_MAX_ENTRIES, PairSums
from ml_core.history import PairIndex, check_knn_graphs, missing_history, pair_features, uses_knn
from ml_core.sampling.samples import label_columns
from ml_core.sorting import sorted_unique


@dataclass
class DayInputs:
    """Everything stored for one day that a model trains or is evaluated on."""

    day: str
    samples: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame
    graph: BipartiteGraph | None = None
    user_sim: SimilarityGraph | None = None
    item_sim: SimilarityGraph | None = None
    #: the users' window history (:func:`~ml_core.history.build_history`'s tables; None: not loaded,
    #: or a node_features partition written before it existed)
    history: dict[str, pl.DataFrame] | None = None
    _pair_inputs: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, init=False, repr=False,
                                                            compare=False)  # a replace() recomputes them
    _pair_index: PairIndex | None = field(default=None, init=False, repr=False, compare=False)
    _pair_sums: PairSums | None = field(default=None, init=False, repr=False, compare=False)

    def pair_index(self) -> PairIndex:
        """The :class:`~ml_core.history.PairIndex` of this day's history and item table, built on
        the first call (a server calls it at load, so no request pays for it)."""
        if self.history is None:
            raise missing_history(self.day, "the pair input", "train.pair_features = false")
        if self._pair_index is None:
            self._pair_index = PairIndex(self.history, self.items)
        return self._pair_index

    def precompute_pair_sums(self, max_entries: int = PAIR_SUMS_MAX_ENTRIES) -> int:
        """Store this day's kNN sums for every pair that has a term
        (:class:`~ml_core.graph.neighbours.PairSums`): the kNN columns of :meth:`pair_inputs_of`
        are then lookups, with the same values. A server calls it at load. Returns the pairs
        stored, 0 when they would exceed ``max_entries`` (the per-pair kernel stays)."""
        graphs = self._knn_graphs()
        check_knn_graphs(graphs)
        self._pair_sums = PairSums.build(graphs[0], graphs[1].adj, graphs[2].adj, max_entries)
        return 0 if self._pair_sums is None else self._pair_sums.entries

    def _knn_graphs(self) -> tuple[BipartiteGraph, SimilarityGraph, SimilarityGraph]:
        if self.graph is None or self.user_sim is None or self.item_sim is None:
            raise ValueError(f"day {self.day}: the pair input's kNN columns need the day's window graph and both "
                             "similarity graphs (load the day with_graph), or set train.pair_knn = false")
        return self.graph, self.user_sim, self.item_sim

    def pair_inputs_of(self, user_ids: np.ndarray, item_ids: np.ndarray, columns) -> np.ndarray:
        """Raw pair inputs ``[n, len(columns)]`` of the pairs ``(user_ids[j], item_ids[j])`` from
        this day's history, item table (:meth:`pair_index`) and, for the kNN columns, window graphs
        (:func:`~ml_core.history.pair_features`)."""
        index = self.pair_index()
        graphs = self._knn_graphs() if uses_knn(columns) else None
        return pair_features(index, user_ids, item_ids, columns=list(columns), graphs=graphs, sums=self._pair_sums)

    def pair_inputs(self, columns) -> np.ndarray:
        """The samples' raw pair inputs (:meth:`pair_inputs_of`, computed once per column list)."""
        key = tuple(columns)
        if key not in self._pair_inputs:
            self._pair_inputs[key] = self.pair_inputs_of(self.samples["user_id"].to_numpy(),
                                                         self.samples["item_id"].to_numpy(), key)
        return self._pair_inputs[key]


def extend_rows(csr: CSR, n_rows: int, n_cols: int) -> CSR:
    """Append empty rows (and widen columns) so new nodes exist but have no neighbours."""
    extra = n_rows - csr.n_rows
    indptr = np.concatenate([np.asarray(csr.indptr), np.full(extra, csr.indptr[-1], dtype=np.int64)])
    return CSR(indptr, np.asarray(csr.indices), np.asarray(csr.weights), n_cols)


@dataclass
class DayContext:
    """A day's node spaces, node inputs, channel adjacencies and encoded samples."""

    day: str
    user_raw: np.ndarray
    item_raw: np.ndarray
    users: NodeTable
    items: NodeTable
    sample_user: np.ndarray  # [n] node-space rows
    sample_item: np.ndarray
    sample_user_raw: np.ndarray  # [n] raw ids (GAUC groups)
    labels: np.ndarray  # [n, K] float32
    channels: dict[str, CSR] = field(default_factory=dict)
    n_graph_users: int = 0
    n_graph_items: int = 0
    pairs: np.ndarray | None = None  # [n, P] float32 scaled pair inputs (None: the spec has no pair input)
    user_seq: Sequences | None = None  # [n_users, N] each node-space user's sequence (None: the spec reads none)

    @property
    def n_samples(self) -> int:
        return len(self.sample_user)

    @classmethod
    def build(cls, inputs: DayInputs, spec: FeatureSpec, with_graph: bool) -> DayContext:
        s = inputs.samples
        g = inputs.graph
        g_users = g.user_ids if g is not None else np.zeros(0, np.int64)
        g_items = g.item_ids if g is not None else np.zeros(0, np.int64)
        s_users = sorted_unique(s["user_id"].to_numpy())
        s_items = sorted_unique(s["item_id"].to_numpy())
        new_users = np.setdiff1d(s_users, g_users, assume_unique=True)  # both sorted and distinct
        new_items = np.setdiff1d(s_items, g_items, assume_unique=True)
        user_raw = np.concatenate([g_users, new_users]).astype(np.int64)
        item_raw = np.concatenate([g_items, new_items]).astype(np.int64)
        # node-space row of each raw id: graph ids are sorted, new ids are sorted after them
        user_row = space_lookup(g_users, new_users, s["user_id"].to_numpy())
        item_row = space_lookup(g_items, new_items, s["item_id"].to_numpy())
        labels = s.select(label_columns(spec.tasks)).to_numpy().astype(np.float32)
        ctx = cls(
            day=inputs.day,
            user_raw=user_raw,
            item_raw=item_raw,
            users=spec.user.encode(user_raw, inputs.users, "user_id"),
            items=spec.item.encode(item_raw, inputs.items, "item_id"),
            sample_user=user_row,
            sample_item=item_row,
            sample_user_raw=s["user_id"].to_numpy().astype(np.int64),
            labels=labels,
            n_graph_users=len(g_users),
            n_graph_items=len(g_items),
            **history_inputs(inputs, spec, user_raw),
        )
        if with_graph:
            ctx.channels = ctx._channel_adjacency(inputs)
        return ctx

    def for_spec(self, inputs: DayInputs, spec: FeatureSpec, with_graph: bool) -> DayContext:
        """``build(inputs, spec, with_graph)`` from this context of the same ``inputs`` (built with
        the graph when ``with_graph``): node spaces, sample rows and channels do not depend on the
        spec; the node inputs and labels are encoded again."""
        if with_graph and not self.channels:
            raise ValueError(f"day {self.day}: this context was built without the graph channels")
        return dataclasses.replace(
            self, users=spec.user.encode(self.user_raw, inputs.users, "user_id"),
            items=spec.item.encode(self.item_raw, inputs.items, "item_id"),
            labels=inputs.samples.select(label_columns(spec.tasks)).to_numpy().astype(np.float32),
            channels=dict(self.channels) if with_graph else {},
            **history_inputs(inputs, spec, self.user_raw))

    @classmethod
    def isolated(cls, day: str, user_raw: np.ndarray, item_raw: np.ndarray, users: NodeTable, items: NodeTable,
                 with_graph: bool) -> DayContext:
        """A context of nodes without any edge and without samples (e.g. the ids a request adds to
        a snapshot, whose representations are then those of isolated nodes); ``with_graph``:
        empty channel adjacencies of the right sizes."""
        nu, ni = len(users), len(items)
        empty = lambda n: CSR(np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), n)
        none = np.zeros(0, np.int64)
        return cls(day=day, user_raw=np.asarray(user_raw, np.int64), item_raw=np.asarray(item_raw, np.int64),
                   users=users, items=items, sample_user=none, sample_item=none, sample_user_raw=none,
                   labels=np.zeros((0, 0), np.float32),
                   channels={"bipartite": empty(nu + ni), "user_sim": empty(nu), "item_sim": empty(ni)} if with_graph else {})

    def _channel_adjacency(self, inputs: DayInputs) -> dict[str, CSR]:
        nu, ni = len(self.user_raw), len(self.item_raw)
        g = inputs.graph
        if g is None:
            raise ValueError(f"day {self.day}: graph model needs the bipartite graph, none was given")
        # bipartite channel over [users | items] with new nodes appended to each side
        ui = g.ui
        r = ui.row_of_entries()
        c = np.asarray(ui.indices) + nu
        rows = np.concatenate([r, c])
        cols = np.concatenate([c, r])
        w = np.concatenate([ui.weights, ui.weights])
        out = {"bipartite": CSR.from_coo(rows, cols, w, nu + ni, nu + ni, sum_duplicates=False)}
        for name, sim, n, ids in (("user_sim", inputs.user_sim, nu, g.user_ids), ("item_sim", inputs.item_sim, ni, g.item_ids)):
            if sim is None:
                raise ValueError(f"day {self.day}: graph model needs the {name} graph, none was given")
            if len(sim.node_ids) != len(ids) or not np.array_equal(sim.node_ids, ids):
                raise ValueError(f"day {self.day}: {name} graph nodes differ from the bipartite graph's")
            out[name] = extend_rows(sim.adj, n, n)
        return out


def history_inputs(inputs: DayInputs, spec: FeatureSpec, user_raw: np.ndarray) -> dict:
    """The context fields the spec's history inputs fill: ``pairs`` (the samples' scaled pair
    inputs) and ``user_seq`` (the sequence of each user of ``user_raw``), None where it has none."""
    return {"pairs": None if spec.pair is None else spec.pair.encode(inputs.pair_inputs(spec.pair.columns)),
            "user_seq": spec.encode_sequences(user_raw, inputs.history, inputs.day)}


def space_lookup(graph_ids: np.ndarray, new_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Node-space rows of the ``raw`` ids in the space ``graph_ids ++ new_ids`` (each sorted);
    every id must be in one of them."""
    in_graph = lookup(graph_ids, raw)
    in_new = lookup(new_ids, raw) + len(graph_ids)
    row = np.where(in_graph >= 0, in_graph, in_new)
    if (row < 0).any():
        raise AssertionError("sample id missing from the day's node space")
    return row.astype(np.int64)
