"""Online scoring with a deployed bundle, without the lake.

A deployed bundle (see :mod:`ml_core.registry.bundles`, :func:`ml_core.stages.deployment.run_deployed_model`)
carries the model and ``context/``: copies of the bipartite graph, the two similarity graphs and
the node features of the day it was evaluated on, and ``node_reps.npz``: every snapshot node's
representations, computed once layer-wise over the snapshot's graphs
(:mod:`ml_core.contracts.reps`; :func:`write_node_reps` at deployment). :class:`Scorer` loads them
once and builds the *base* :class:`~ml_core.contracts.day.DayContext` of that snapshot (every graph
node encoded, channel adjacencies built; a bundle without ``node_reps.npz`` is encoded at load).
A request is then a :class:`DayContext` whose samples are the requested pairs (zero labels):
:func:`request_context` appends the ids the snapshot does not contain as isolated nodes, exactly
as :meth:`DayContext.build` lays them out (a unit test checks the two are equal); the request's
nodes take their stored representations (the added ids: those of isolated nodes, encoded per
request) and :func:`ml_core.inference.score_rows` scores the pairs from them, as evaluation does.
:meth:`Scorer.representations` hands out the user and item representation matrices (e.g. for an
approximate nearest-neighbour index).

Determinism. The representations read every neighbour, so a pair's score depends on the pair
and the snapshot only, not on the rest of the request. A request is still made canonical
(distinct pairs sorted by ``(user_id, item_id)``) and reports a seed derived from those pairs
(the neighbour-sampling seed of the per-pair path, ``ScoreResult.seed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ml_core.catalog import BIPARTITE_GRAPH, ITEM_SIMILARITY_GRAPH, NODE_FEATURES, SERVING_CONTEXT, USER_SIMILARITY_GRAPH
from ml_core.config.registry import RegistryConfig
from ml_core.contracts import DayContext, DayInputs, FeatureSpec, extend_rows
from ml_core.contracts.reps import NodeReps
from ml_core.graph.csr import CSR, BipartiteGraph, IdIndex, SimilarityGraph, lookup
from ml_core.history import read_history, uses_knn
from ml_core.inference import encode_day, inference_needs_graph, score_rows
from ml_core.models.mgnn import cat_tables
from ml_core.registry.bundles import (
    check_loadable,
    load_model,
    load_node_reps,
    read_manifest,
    save_node_reps,
    write_manifest,
)
from ml_core.registry.interface import open_bundle_registry
from ml_core.sampling.samples import label_columns
from ml_core.sorting import sorted_unique


def empty_samples(tasks: list[str]) -> pl.DataFrame:
    """A samples table with no rows (the schema :meth:`DayContext.build` reads)."""
    schema = {"user_id": pl.Int64, "item_id": pl.Int64, **{c: pl.Float32 for c in label_columns(tasks)}}
    return pl.DataFrame(schema=schema)


def pair_samples(user_ids: np.ndarray, item_ids: np.ndarray, tasks: list[str]) -> pl.DataFrame:
    """The requested pairs as a samples table with zero labels."""
    n = len(user_ids)
    return pl.DataFrame({"user_id": np.asarray(user_ids, np.int64), "item_id": np.asarray(item_ids, np.int64),
                         **{c: np.zeros(n, np.float32) for c in label_columns(tasks)}})


def _shift_bipartite(adj: CSR, n_users: int, new_users: int, new_items: int) -> CSR:
    """The ``[users | items]`` adjacency after ``new_users`` isolated users are inserted after the
    first ``n_users`` rows and ``new_items`` isolated items appended: O(nnz), same entry order as
    rebuilding it with ``CSR.from_coo`` (item columns shift uniformly, so rows stay sorted)."""
    indptr = np.asarray(adj.indptr)
    indices = np.asarray(adj.indices)
    if new_users:
        indices = np.where(indices >= n_users, indices + new_users, indices)
    indptr = np.concatenate([indptr[: n_users + 1], np.full(new_users, indptr[n_users], np.int64),
                             indptr[n_users + 1 :], np.full(new_items, indptr[-1], np.int64)])
    n = adj.n_cols + new_users + new_items
    return CSR(indptr, indices, np.asarray(adj.weights), n)


def _request_rows(graph_ids: np.ndarray | IdIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(new, rows)``: the distinct ``ids`` absent from the sorted ``graph_ids`` (sorted), and each
    id's row in the space ``graph_ids ++ new`` (as :func:`~ml_core.contracts.day.space_lookup`)."""
    distinct, inverse = np.unique(ids, return_inverse=True)
    pos = graph_ids.rows(distinct) if isinstance(graph_ids, IdIndex) else lookup(graph_ids, distinct)
    absent = pos < 0
    rows = np.where(absent, len(graph_ids) + np.cumsum(absent) - 1, pos)
    return distinct[absent], rows[inverse.reshape(-1)].astype(np.int64, copy=False)


def _extended(raw: np.ndarray, n_graph: int, new: np.ndarray) -> np.ndarray:
    """The graph's ids ``raw[:n_graph]`` followed by ``new``: ``raw`` itself when it is just that
    (a request with only known ids copies nothing: 730k ids at ``large``, a millisecond)."""
    if not len(new) and len(raw) == n_graph:
        return raw
    return np.concatenate([raw[:n_graph], new]).astype(np.int64, copy=False)


def request_context(base: DayContext, inputs: DayInputs, spec: FeatureSpec, user_ids: np.ndarray,
                    item_ids: np.ndarray, index: tuple[IdIndex, IdIndex] | None = None) -> DayContext:
    """``DayContext.build`` of ``inputs`` with ``pair_samples(user_ids, item_ids)`` as samples,
    computed incrementally from ``base`` (the same inputs built with no samples); ``index``: the
    base's graph user and item ids as :class:`~ml_core.graph.csr.IdIndex` (a server's, built once).

    Only the ids missing from the snapshot are encoded (their features looked up in
    ``inputs.users`` / ``inputs.items``); graph nodes reuse the base's encoding and adjacency.
    """
    user_ids = np.asarray(user_ids, np.int64)
    item_ids = np.asarray(item_ids, np.int64)
    # each requested id's row: its snapshot row, or after the snapshot's rows in sorted order for
    # the ids the snapshot lacks (one lookup per distinct id, where setdiff1d would sort the whole
    # snapshot every time)
    new_users, sample_user = _request_rows(index[0] if index else base.user_raw[: base.n_graph_users], user_ids)
    new_items, sample_item = _request_rows(index[1] if index else base.item_raw[: base.n_graph_items], item_ids)
    users, items, channels, user_seq = base.users, base.items, base.channels, base.user_seq
    if len(new_users):
        users = cat_tables([users, spec.user.encode(new_users, inputs.users, "user_id")])
        if user_seq is not None:
            user_seq = user_seq.cat(spec.encode_sequences(new_users, inputs.history, inputs.day))
    if len(new_items):
        items = cat_tables([items, spec.item.encode(new_items, inputs.items, "item_id")])
    if channels and (len(new_users) or len(new_items)):
        nu, ni = base.n_graph_users + len(new_users), base.n_graph_items + len(new_items)
        channels = {
            "bipartite": _shift_bipartite(channels["bipartite"], base.n_graph_users, len(new_users), len(new_items)),
            "user_sim": extend_rows(channels["user_sim"], nu, nu),
            "item_sim": extend_rows(channels["item_sim"], ni, ni),
        }
    return dataclasses.replace(
        base,
        user_raw=_extended(base.user_raw, base.n_graph_users, new_users),
        item_raw=_extended(base.item_raw, base.n_graph_items, new_items),
        users=users, items=items, channels=dict(channels),
        sample_user=sample_user,
        sample_item=sample_item,
        sample_user_raw=user_ids,
        labels=np.zeros((len(user_ids), len(spec.tasks)), np.float32),
        pairs=None if spec.pair is None else spec.pair.encode(inputs.pair_inputs_of(user_ids, item_ids, spec.pair.columns)),
        user_seq=user_seq,
    )


def request_seed(pairs: np.ndarray) -> int:
    """A 63-bit seed derived from the (canonical) pairs of a request."""
    digest = hashlib.blake2b(np.ascontiguousarray(pairs, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def canonical_pairs(user_ids, item_ids) -> tuple[np.ndarray, np.ndarray]:
    """(distinct pairs ``[m, 2]`` sorted by user then item, index of each input pair in them)."""
    u = np.asarray(user_ids, dtype=np.int64).reshape(-1)
    i = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    if len(u) != len(i):
        raise ValueError(f"{len(u)} user ids but {len(i)} item ids: pairs need one of each")
    if len(u) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    order = np.lexsort((i, u))
    us, is_ = u[order], i[order]
    first = np.ones(len(us), dtype=bool)
    first[1:] = (us[1:] != us[:-1]) | (is_[1:] != is_[:-1])
    group = np.cumsum(first) - 1
    inverse = np.empty(len(u), np.int64)
    inverse[order] = group
    return np.stack([us[first], is_[first]], axis=1), inverse


@dataclass
class ScoreResult:
    scores: np.ndarray  # [n, K] float32 probabilities, in request order
    unknown_users: list[int]  # distinct ids the model's vocabulary lacks (scored with the unknown-id row)
    unknown_items: list[int]
    seed: int  # the request's seed (the per-pair path's neighbour-sampling seed; the representations read every neighbour)


class Scorer:
    """Scores (user, item) pairs with one deployed bundle.

    Args:
        bundle (Path): a deployed bundle directory (model files, manifest, ``context/``).
        version (str): the version name to report (default: the manifest's, else the dir name);
            a manifest naming another version is refused (a renamed copy).
        batch_size (int): rows per forward pass.
        threads (int): torch CPU threads (0 = leave torch's setting alone).
        allow_unsealed (bool): load a bundle without ``_FILES.json`` unchecked (default: refused,
            :class:`~ml_core.integrity.CorruptPartitionError`; a published bundle always has one).
        require_signature (bool): refuse a bundle without a valid signature even when
            ``$MOGE_BUNDLE_KEY`` is unset (:func:`~ml_core.registry.signing.check_signature`; with the key
            set, a sealed bundle is always checked).
    """

    def __init__(self, bundle: str | Path, version: str | None = None, batch_size: int = 4096, threads: int = 0,
                 allow_unsealed: bool = False, require_signature: bool = False):
        self.bundle = Path(bundle)
        ctx_dir = self.bundle / "context"
        missing = [a for a in SERVING_CONTEXT if not (ctx_dir / a).is_dir()]
        if missing:
            raise FileNotFoundError(f"{self.bundle} is not a deployed bundle: context/{{{','.join(missing)}}} missing "
                                    "(only deployed_model bundles carry the serving context)")
        self.version = check_loadable(self.bundle, version, allow_unsealed, require_signature)
        self.manifest = read_manifest(self.bundle) if (self.bundle / "manifest.json").exists() else {}
        if threads:
            torch.set_num_threads(threads)
        self.model, self.spec, self.model_spec, self.meta = load_model(self.bundle)
        self.model.eval()
        self.tasks = list(self.spec.tasks)
        self.needs_graph = inference_needs_graph(self.model)
        self.fanouts = list(self.model_spec.fanouts)
        self.batch_size = batch_size
        graph = BipartiteGraph.load(ctx_dir / BIPARTITE_GRAPH)
        reads_sims = self.needs_graph or uses_knn(self.spec.pair)  # for the model's channels or the kNN pair columns
        feats = ctx_dir / NODE_FEATURES
        self.inputs = DayInputs(
            day=self.manifest.get("partition", ""), samples=empty_samples(self.tasks),
            users=pl.read_parquet(feats / "part-0.parquet"), items=pl.read_parquet(feats / "items.parquet"),
            graph=graph,
            user_sim=SimilarityGraph.load(ctx_dir / USER_SIMILARITY_GRAPH) if reads_sims else None,
            item_sim=SimilarityGraph.load(ctx_dir / ITEM_SIMILARITY_GRAPH) if reads_sims else None,
            history=read_history(feats),
        )
        # the kNN pair columns by lookups: both sums of every pair with a term, stored once (0: too many, per pair)
        self.pair_sums = self.inputs.precompute_pair_sums() if uses_knn(self.spec.pair) else 0
        self.base = DayContext.build(self.inputs, self.spec, with_graph=self.needs_graph)
        self.reps = self._snapshot_reps()
        with torch.no_grad():
            self._scoring_reps = self.model.scoring_reps(self.reps)  # + what scoring precomputes per node
        self.request_base = dataclasses.replace(self.base, channels={})  # requests read representations, not edges
        # raw id -> row, built once: the snapshot's ids (requests) and the model's vocabularies (unknown ids)
        self._snapshot_index = (IdIndex(self.base.user_raw[: self.base.n_graph_users]),
                                IdIndex(self.base.item_raw[: self.base.n_graph_items]))
        self._vocab_index = (IdIndex(self.spec.user.ids), IdIndex(self.spec.item.ids))
        if threads:  # again: the indexes' first parallel numba kernel started OpenMP, which set torch's to every core
            torch.set_num_threads(threads)

    def _snapshot_reps(self) -> NodeReps:
        """The bundle's ``node_reps.npz`` when it holds this snapshot's nodes, else encoded now
        (every neighbour). The model is handed the snapshot first (``prepare_inference``)."""
        stored = load_node_reps(self.bundle)
        if stored is not None:
            reps, user_raw, item_raw = stored
            if np.array_equal(user_raw, self.base.user_raw) and np.array_equal(item_raw, self.base.item_raw):
                self.model.prepare_inference(self.base)
                return reps
        return encode_day(self.model, self.base)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, path: str | Path, **kwargs) -> Scorer:
        return cls(path, **kwargs)

    @classmethod
    def from_registry(cls, root: str | Path, registry: RegistryConfig | None = None, **kwargs) -> Scorer:
        """The production version of the registry ``registry`` names (default: the local store
        under ``<root>/registry``; the MLflow backend caches its bundles under ``root``)."""
        reg = open_bundle_registry(registry, root)
        prod = reg.production()
        if prod is None:
            raise FileNotFoundError(f"no production model in {reg.location} (no production pointer): "
                                    "deploy one with the flow's deployed_model asset first")
        return cls(reg.checked_version_dir(prod["version"]), version=prod["version"], **kwargs)

    # -- info -----------------------------------------------------------------------------------
    @property
    def graph(self) -> BipartiteGraph:
        return self.inputs.graph

    @property
    def item_ids(self) -> np.ndarray:
        """Items of the graph snapshot (the default recommendation candidates)."""
        return np.asarray(self.graph.item_ids)

    def info(self) -> dict:
        m = self.manifest
        return {"version": self.version, "model": self.meta.get("model"), "tasks": self.tasks,
                "partition": m.get("partition"), "train_days": m.get("train_days", []),
                "metrics": m.get("metrics", {}), "code_version": m.get("code_version", ""),
                "serving_context": m.get("serving_context", {}), "needs_graph": self.needs_graph,
                "fanouts": self.fanouts, "pair_sums_stored": self.pair_sums, "snapshot": {"users": self.graph.n_users, "items": self.graph.n_items,
                                                      "edges": self.graph.ui.nnz, "days": list(self.graph.days)}}

    def unknown_ids(self, user_ids, item_ids) -> tuple[np.ndarray, np.ndarray]:
        """Distinct ids (sorted) outside the model's vocabulary."""
        u = sorted_unique(np.asarray(user_ids, np.int64))  # np.unique hashes, holding the GIL: 100k ids, ~20-90 ms
        i = sorted_unique(np.asarray(item_ids, np.int64))
        return u[self._vocab_index[0].rows(u) < 0], i[self._vocab_index[1].rows(i) < 0]

    def seen_items(self, user_id: int) -> np.ndarray:
        """Items ``user_id`` interacted with in the graph snapshot (sorted raw ids)."""
        r = int(self.graph.user_index(np.array([user_id], np.int64))[0])
        if r < 0:
            return np.zeros(0, np.int64)
        ui = self.graph.ui
        return np.asarray(self.graph.item_ids)[np.asarray(ui.indices[ui.indptr[r] : ui.indptr[r + 1]])]

    # -- scoring --------------------------------------------------------------------------------
    def context(self, user_ids, item_ids) -> DayContext:
        return request_context(self.base, self.inputs, self.spec, user_ids, item_ids, self._snapshot_index)

    def representations(self) -> dict[str, np.ndarray]:
        """Every snapshot node's representation, flattened per node (:meth:`NodeReps.matrices`):
        ``user_ids [n_users]``, ``users [n_users, D_u]``, ``item_ids [n_items]``, ``items
        [n_items, D_i]`` (float32; rows in id order). A model that reads no graph gives its
        feature transforms, or ``[n, 0]`` when it has none to give."""
        users, items = self.reps.matrices()
        return {"user_ids": self.base.user_raw.copy(), "users": users, "item_ids": self.base.item_raw.copy(), "items": items}

    def request_reps(self, ctx: DayContext) -> tuple[NodeReps, np.ndarray, np.ndarray]:
        """``(reps, user_rows, item_rows)``: the representations of ``ctx``'s sampled nodes only
        (the snapshot's stored ones, then the request's added ids encoded as isolated nodes) and
        each sample's rows in them."""
        nu, ni = self.base.n_graph_users, self.base.n_graph_items
        if self._in_snapshot(ctx):  # every id in the snapshot: its rows as they are
            return self._scoring_reps, ctx.sample_user, ctx.sample_item
        ru, u_rows = np.unique(ctx.sample_user, return_inverse=True)
        ri, i_rows = np.unique(ctx.sample_item, return_inverse=True)
        reps = self._scoring_reps.take(ru[ru < nu], ri[ri < ni])
        new_u, new_i = ru[ru >= nu], ri[ri >= ni]
        if len(new_u) or len(new_i):
            added = DayContext.isolated(ctx.day, ctx.user_raw[new_u], ctx.item_raw[new_i], ctx.users[torch.from_numpy(new_u)],
                                        ctx.items[torch.from_numpy(new_i)], with_graph=self.needs_graph)
            with torch.no_grad():
                reps = reps.cat(self.model.scoring_reps(self.model.encode_nodes(added)))
        return reps, u_rows, i_rows

    def _in_snapshot(self, ctx: DayContext) -> bool:
        """Every id of the request ``ctx`` is a snapshot node (its rows are the snapshot's)."""
        return len(ctx.user_raw) == self.base.n_graph_users and len(ctx.item_raw) == self.base.n_graph_items

    def request_sequences(self, ctx: DayContext):
        """``ctx``'s user sequences in the user rows of :meth:`request_reps`'s representations."""
        if ctx.user_seq is None or self._in_snapshot(ctx):
            return ctx.user_seq
        return ctx.user_seq[torch.from_numpy(sorted_unique(ctx.sample_user))]

    def score_pairs(self, user_ids, item_ids, seed: int | None = None) -> ScoreResult:
        pairs, inverse = canonical_pairs(user_ids, item_ids)
        seed = request_seed(pairs) if seed is None else int(seed)
        if len(pairs) == 0:
            return ScoreResult(np.zeros((0, len(self.tasks)), np.float32), [], [], seed)
        ctx = request_context(self.request_base, self.inputs, self.spec, pairs[:, 0], pairs[:, 1], self._snapshot_index)
        reps, u_rows, i_rows = self.request_reps(ctx)
        probs = score_rows(self.model, reps, u_rows, i_rows, self.batch_size, pairs=ctx.pairs,
                           user_seq=self.request_sequences(ctx))
        uu, ui = self.unknown_ids(pairs[:, 0], pairs[:, 1])
        return ScoreResult(probs[inverse], uu.tolist(), ui.tolist(), seed)

    def score(self, user_ids, item_ids, seed: int | None = None) -> np.ndarray:
        """Per-task probabilities ``[n, K]`` of the pairs ``(user_ids[j], item_ids[j])``."""
        return self.score_pairs(user_ids, item_ids, seed).scores

    def task_index(self, task: str | None) -> int:
        if task is None:
            return len(self.tasks) - 1
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; this model's tasks: {self.tasks}")
        return self.tasks.index(task)

    def candidates(self, user_id: int, candidates=None, exclude_seen: bool = True) -> np.ndarray:
        """The distinct candidate items (sorted) a recommendation for ``user_id`` ranks."""
        cand = self.item_ids if candidates is None else sorted_unique(np.asarray(candidates, np.int64))
        if exclude_seen:
            cand = cand[~np.isin(cand, self.seen_items(user_id))]
        return cand

    def recommend(self, user_id: int, k: int = 10, task: str | None = None, candidates=None,
                  exclude_seen: bool = True, seed: int | None = None) -> list[tuple[int, dict[str, float]]]:
        """Top ``k`` candidates for ``user_id`` by ``task`` (default: the last, e.g. purchase).

        Candidates default to every item of the graph snapshot; with ``exclude_seen`` the items
        the user interacted with in the snapshot are dropped. Ties break by item id.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        t = self.task_index(task)
        cand = self.candidates(user_id, candidates, exclude_seen)
        if len(cand) == 0:
            return []
        scores = self.score(np.full(len(cand), user_id, np.int64), cand, seed)
        top = np.lexsort((cand, -scores[:, t].astype(np.float64)))[:k]
        return [(int(cand[j]), {name: float(scores[j, x]) for x, name in enumerate(self.tasks)}) for j in top]


def write_node_reps(bundle: str | Path, snapshot: tuple | None = None) -> dict:
    """Encode every node of a deployed ``bundle``'s snapshot (:class:`Scorer`'s base context,
    every neighbour) and store them in the bundle (``node_reps.npz``, written atomically) with a
    ``node_reps`` manifest entry (:func:`~ml_core.registry.bundles.save_node_reps`); returns the entry.
    ``snapshot``: ``(reps, user_raw, item_raw)`` of the snapshot's nodes already encoded by the
    same model (the evaluation's, ``ScoredDay.snapshot_reps``), stored as given instead."""
    bundle = Path(bundle)
    if snapshot is None:
        scorer = Scorer(bundle, allow_unsealed=True)  # being assembled: sealed when it is published
        snapshot = (scorer.reps, scorer.base.user_raw, scorer.base.item_raw)
    entry = save_node_reps(bundle, *snapshot)
    manifest = read_manifest(bundle)
    manifest["node_reps"] = entry
    write_manifest(bundle, manifest)
    return entry
