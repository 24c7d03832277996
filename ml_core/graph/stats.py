"""Statistics of the similarity graphs, reported in their ``stats`` (asset metadata)."""

from __future__ import annotations

import numpy as np

from ml_core.graph.csr import CSR
from ml_core.graph.topk_kernel import n_threads


def degree_histogram(degrees: np.ndarray, log_bins: bool = True) -> dict[str, list]:
    """Histogram of a degree array: ``{"edges": [...], "counts": [...]}`` (bin i = [e_i, e_i+1)).

    Log-spaced integer bins (1, 2, 4, 8, ...) after a bin for degree 0, or unit bins when
    ``log_bins`` is False (for degrees bounded by k).
    """
    degrees = np.asarray(degrees, np.int64)
    top = int(degrees.max()) if len(degrees) else 0
    if log_bins:
        edges = [0, 1]
        while edges[-1] <= top:
            edges.append(edges[-1] * 2)
    else:
        edges = list(range(top + 2))
    counts, _ = np.histogram(degrees, bins=np.asarray(edges, dtype=np.float64))
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts]}


def similarity_stats(adj: CSR, prep, k: int, candidates: int | None = None) -> dict:
    """Size, hub handling, coverage and degree histograms of a top-k graph ``adj``.

    Args:
        adj (CSR): the n x n top-k graph.
        prep (ml_core.graph.similarity.PreparedMatrix): the matrix it was built from (its
            ``measure``, column degrees ``col_deg`` and hub mask ``hub`` are read).
        k (int): neighbours kept per row.
        candidates (int | None): ``(u, v)`` pairs with a positive similarity, when counted.
    """
    out_deg = adj.degrees()
    in_deg = np.bincount(adj.indices, minlength=adj.n_rows) if adj.nnz else np.zeros(adj.n_rows, np.int64)
    col_deg = prep.col_deg.astype(np.float64)
    pairs_total = float((col_deg**2).sum())
    pairs_hub = float((col_deg[prep.hub] ** 2).sum())
    st = {
        "n_nodes": int(adj.n_rows),
        "n_edges": int(adj.nnz),
        "k": int(k),
        "measure": prep.measure,
        "threads": n_threads(),
        "pairs_counted": int(pairs_total - pairs_hub),
        "pairs_skipped_hubs": int(pairs_hub),
        "hub_nodes_skipped": int(prep.hub.sum()),
        "share_no_similar_neighbour": round(float((out_deg == 0).mean()) if adj.n_rows else 0.0, 6),
        "out_degree_hist": degree_histogram(out_deg, log_bins=False),
        "in_degree_hist": degree_histogram(in_deg),
        "mean_similarity": round(float(adj.weights.mean()) if adj.nnz else 0.0, 6),
    }
    if candidates is not None:
        st["candidate_pairs"] = int(candidates)  # (u, v) pairs with a positive similarity
    return st
