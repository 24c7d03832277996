"""Candidate retrieval for ``/recommend`` over the whole catalogue: an ANN index of item vectors.

Ranking every item of a large catalogue with the model is linear in the catalogue per request.
Retrieval first narrows it: every item's vector ``v_i`` goes into a faiss index once, when the
bundle loads; a request queries it with the user's vector ``u`` for the ``N`` items of largest
inner product, and the model (the :class:`~ml_core.serving.scorer.Scorer`'s pair scoring, the
*ranker*) orders those ``N``:

.. math::
    C_N(u) = \\operatorname{top-N}_i\\ \\langle u, v_i \\rangle, \\qquad
    \\text{items}(u) = \\operatorname{top-k}_{i \\in C_N(u)}\\ \\hat y_{u,i,t}

Where the vectors come from is one function, :func:`retrieval_vectors`: the node representations
the bundle carries (:meth:`~ml_core.serving.scorer.Scorer.representations`, encoded once per day
over the snapshot's graphs), each node's representations concatenated in name order. For MoGE
and the "+Graph" models that is ``u = [h_u, p_u, s_u]`` against ``v_i = [h_i, q_i, s_i]``, so
``<u, v_i> = <h_u, h_i> + <p_u, q_i> + <s_u, s_i>``: the same-channel products the experts'
interactions are built from; for a model that reads no graph, its feature transforms
``p_u = x_u P``, ``q_i = x_i Q``. The ranker was not trained to make this inner product
meaningful, so the retrieval's recall@k against exhaustive ranking is measured
(benchmarks/serving.py, README "Serving at catalogue scale"), not assumed.

A second, user-independent channel guards the recall: the items the ranker scores highest on
average over a few sampled snapshot users (:func:`item_prior`, computed once per bundle load).
With it, a request's ``N`` candidates are the prior's best ``round(N * prior_share)`` plus the
index's best for the user up to ``N`` (seen items excluded from both).

A user outside the snapshot has no vector: it is queried with the mean user vector (the
"generic user"), and the response says the user was unknown.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import faiss
import numpy as np

#: the index kinds :class:`ItemIndex` builds
INDEX_KINDS = ("hnsw", "flat")


@dataclass(frozen=True)
class RetrievalVectors:
    """User and item vectors of one bundle's snapshot (rows aligned with the sorted raw ids)."""

    user_vectors: np.ndarray  # [U, d] float32
    item_vectors: np.ndarray  # [I, d] float32
    user_ids: np.ndarray  # [U] int64 raw ids, sorted
    item_ids: np.ndarray  # [I] int64 raw ids, sorted

    def __post_init__(self) -> None:
        if self.user_vectors.shape[0] != len(self.user_ids) or self.item_vectors.shape[0] != len(self.item_ids):
            raise ValueError(f"{self.user_vectors.shape[0]} user vectors for {len(self.user_ids)} ids, "
                             f"{self.item_vectors.shape[0]} item vectors for {len(self.item_ids)} ids")
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise ValueError(f"user vectors have {self.user_vectors.shape[1]} dimensions, items {self.item_vectors.shape[1]}")


def retrieval_vectors(scorer) -> RetrievalVectors:
    """The snapshot's user and item vectors of ``scorer``'s bundle: its node representations
    (:meth:`~ml_core.serving.scorer.Scorer.representations`, rows of the snapshot's graph nodes).
    ``ValueError`` when the two sides differ in size (no inner product to search by)."""
    reps = scorer.representations()
    users, items = reps["users"], reps["items"]
    if users.shape[1] != items.shape[1] or users.shape[1] == 0:
        raise ValueError(f"model {scorer.meta.get('model')!r} gives {users.shape[1]}-dimensional user and "
                         f"{items.shape[1]}-dimensional item representations: no inner product to retrieve by; "
                         "serve it without retrieval")
    nu, ni = scorer.base.n_graph_users, scorer.base.n_graph_items
    return RetrievalVectors(np.ascontiguousarray(users[:nu], np.float32), np.ascontiguousarray(items[:ni], np.float32),
                            reps["user_ids"][:nu].astype(np.int64), reps["item_ids"][:ni].astype(np.int64))


def set_index_threads(n: int) -> None:
    """faiss's OpenMP threads per search (``moge serve --threads``): requests already run in
    parallel in the server's thread pool."""
    if n > 0:
        faiss.omp_set_num_threads(n)


class ItemIndex:
    """Inner-product nearest-neighbour index over item vectors (faiss).

    Args:
        vectors (np.ndarray): ``[I, d]`` item vectors.
        ids (np.ndarray): ``[I]`` raw item ids.
        kind (str): ``"hnsw"`` (``IndexHNSWFlat``, approximate, sub-linear queries) or ``"flat"``
            (``IndexFlatIP``, exact, linear in the catalogue) (default: ``"hnsw"``).
        hnsw_m (int): HNSW links per node (default: 32, faiss's usual choice for d <= 128).
        ef_search (int): HNSW search breadth; raised to the number of results asked (default: 128).
        ef_construction (int): HNSW build breadth (default: 80).
    """

    def __init__(self, vectors: np.ndarray, ids: np.ndarray, kind: str = "hnsw", hnsw_m: int = 32,
                 ef_search: int = 128, ef_construction: int = 80):
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(ids) == 0:
            raise ValueError(f"expected [I, d] vectors for {len(ids)} ids (I >= 1), got shape {vectors.shape}")
        self.ids = np.asarray(ids, np.int64)
        self.kind, self.ef_search = kind, ef_search
        d = vectors.shape[1]
        if kind == "flat":
            self.index = faiss.IndexFlatIP(d)
        else:
            self.index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
        self.index.add(vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [q, n'], scores [q, n'])`` of the ``n' = min(n, I)`` items of largest inner
        product with each query row, best first."""
        if n < 1:
            raise ValueError(f"the number of candidates must be >= 1, got {n}")
        n = min(n, len(self))
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, n))
            scores, rows = self.index.search(queries, n, params=params)
        else:
            scores, rows = self.index.search(queries, n)
        # HNSW can return fewer than n (row -1) when its graph walk runs short
        return np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1), scores


def item_prior(scorer, n_users: int, seed: int = 0) -> np.ndarray:
    """The snapshot's item ids, best first by the ranker's mean probability of the default task
    (the last) over ``n_users`` snapshot users drawn with ``seed``: ``n_users * I`` pairs scored."""
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    items = scorer.item_ids
    users = np.random.default_rng(seed).choice(np.asarray(scorer.graph.user_ids), min(n_users, scorer.graph.n_users),
                                               replace=False)
    mean = np.zeros(len(items), np.float64)
    for u in users:
        mean += scorer.score(np.full(len(items), u, np.int64), items)[:, -1]  # [I] of task K
    return items[np.lexsort((items, -mean))]


class Retriever:
    """Top-``n`` candidate items of a user: the user's vector against an :class:`ItemIndex`,
    plus, when ``prior`` (item ids, best first) is given, its best ``round(n * prior_share)``."""

    def __init__(self, vectors: RetrievalVectors, kind: str = "hnsw", prior: np.ndarray | None = None,
                 prior_share: float = 0.5, **index_args):
        self.user_ids = vectors.user_ids
        self.user_vectors = vectors.user_vectors
        self.generic_user = vectors.user_vectors.mean(axis=0) if len(vectors.user_ids) else None
        self.index = ItemIndex(vectors.item_vectors, vectors.item_ids, kind, **index_args)
        self._set_prior(prior, prior_share)

    def _set_prior(self, prior: np.ndarray | None, prior_share: float) -> None:
        if not 0.0 <= prior_share <= 1.0:
            raise ValueError(f"prior_share must be in [0, 1], got {prior_share}")
        self.prior = None if prior is None else np.asarray(prior, np.int64)
        self.prior_share = prior_share if prior is not None else 0.0

    def with_prior(self, prior: np.ndarray | None, prior_share: float = 0.5) -> Retriever:
        """This retriever (the same index) with another prior channel (None: the index alone)."""
        other = copy.copy(self)
        other._set_prior(prior, prior_share)
        return other

    @classmethod
    def for_scorer(cls, scorer, kind: str = "hnsw", prior_users: int = 0, **index_args) -> Retriever:
        """The retriever of ``scorer``'s bundle; ``prior_users`` > 0 adds the :func:`item_prior` channel."""
        prior = item_prior(scorer, prior_users) if prior_users else None
        return cls(retrieval_vectors(scorer), kind, prior=prior, **index_args)

    def user_vector(self, user_id: int) -> tuple[np.ndarray, bool]:
        """(the query vector of ``user_id``, whether the user has one of its own)."""
        r = int(np.searchsorted(self.user_ids, user_id))
        if r < len(self.user_ids) and self.user_ids[r] == user_id:
            return self.user_vectors[r], True
        if self.generic_user is None:
            raise ValueError("the snapshot has no users: there is no vector to query with")
        return self.generic_user, False

    def candidates(self, user_id: int, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """Up to ``n`` item ids (sorted) retrieved for ``user_id``, none of ``exclude``."""
        query, _ = self.user_vector(user_id)
        exclude = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        first = np.zeros(0, np.int64)
        if self.prior is not None:
            # the prior's best: a prefix long enough to hold n_prior unseen items
            n_prior = round(n * self.prior_share)
            head = self.prior[: n_prior + len(exclude)]
            first = head[~np.isin(head, exclude)][:n_prior]
            exclude = np.concatenate([exclude, first])
        ids, _ = self.index.search(query[None, :], n - len(first) + len(exclude))  # [1, .]: room for the excluded
        ids = ids[0][ids[0] >= 0]
        ids = ids[~np.isin(ids, exclude)][: n - len(first)]
        return np.sort(np.concatenate([first, ids]))


def recall_at_k(retrieved: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """``|retrieved[:k] ∩ relevant[:k]| / min(k, len(relevant))``: the share of the reference's
    top ``k`` that the retrieved list's top ``k`` holds (both ordered best first)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ref = np.asarray(relevant)[:k]
    if len(ref) == 0:
        raise ValueError("the reference list is empty: recall is undefined")
    return len(np.intersect1d(np.asarray(retrieved)[:k], ref)) / len(ref)
