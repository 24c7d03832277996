"""Neighbour sampler: exact sampling distribution, only real edges, PyG-compatible output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ml_core.graph.csr import CSR, BipartiteGraph
from ml_core.graph.sampler import NeighborSampler


def _stars(m: int, w: np.ndarray) -> CSR:
    """m star centres (nodes 0..m-1), each with len(w) private leaves weighted w (symmetric)."""
    d = len(w)
    rows = np.repeat(np.arange(m), d)
    cols = m + np.arange(m * d)
    n = m + m * d
    return CSR.from_coo(np.concatenate([rows, cols]), np.concatenate([cols, rows]),
                        np.concatenate([np.tile(w, m), np.tile(w, m)]), n, n)


def _successive_inclusion(w: np.ndarray, f: int) -> np.ndarray:
    """Exact inclusion probability of each item under weighted sampling without replacement."""
    p = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), f):
        pr, rem = 1.0, w.sum()
        for i in seq:
            pr *= w[i] / rem
            rem -= w[i]
        p[list(seq)] += pr
    return p


def _random_graph(seed=0, n=300, nnz=3000) -> CSR:
    rng = np.random.default_rng(seed)
    r = rng.zipf(1.6, nnz) % n  # power-law degrees: some hubs
    c = rng.integers(0, n, nnz)
    keep = r != c
    r, c = r[keep], c[keep]
    w = rng.choice([0.5, 1.0, 2.0, 5.0], len(r))
    return CSR.from_coo(np.concatenate([r, c]), np.concatenate([c, r]), np.concatenate([w, w]), n, n)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("key_max_degree", [64, 2], ids=["keys", "draws"])
def test_sampling_distribution(weighted, key_max_degree):
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    m, f = 10000, 3
    s = NeighborSampler(_stars(m, w), [f], weighted=weighted, key_max_degree=key_max_degree)
    sub = s.sample(torch.arange(m), torch.Generator().manual_seed(1))
    src, dst = sub.n_id[sub.edge_index[0]], sub.n_id[sub.edge_index[1]]
    assert sub.edge_index.shape[1] == m * f
    assert torch.equal(torch.bincount(dst, minlength=m), torch.full((m,), f))
    assert torch.unique(dst * 10**9 + src).numel() == m * f, "without replacement"
    slot = ((src - m) % len(w)).numpy()
    freq = np.bincount(slot, minlength=len(w)) / m
    expect = _successive_inclusion(w, f) if weighted else np.full(len(w), f / len(w))
    z = (freq - expect) / np.sqrt(expect * (1 - expect) / m)
    assert np.abs(z).max() < 4.5, (freq, expect)
    # and the sampled weights are the CSR's weights
    assert torch.equal(sub.edge_weight, torch.as_tensor(w[slot], dtype=torch.float32))


@pytest.mark.parametrize("weighted", [False, True])
def test_only_real_edges_and_pyg_layout(weighted):
    csr = _random_graph()
    fanouts = [4, 3]
    s = NeighborSampler(csr, fanouts, weighted=weighted, key_max_degree=6)
    seeds = torch.tensor([5, 0, 17, 3, 250, 42])
    sub = s.sample(seeds, torch.Generator().manual_seed(0))
    n_id, ei = sub.n_id, sub.edge_index
    assert torch.equal(n_id[: len(seeds)], seeds)
    assert torch.unique(n_id).numel() == n_id.numel()
    assert sum(sub.num_sampled_nodes) == n_id.numel() and sum(sub.num_sampled_edges) == ei.shape[1]
    assert ((n_id >= 0) & (n_id < csr.n_rows)).all()
    edges = {}
    for r in range(csr.n_rows):
        for p in range(csr.indptr[r], csr.indptr[r + 1]):
            edges[(r, int(csr.indices[p]))] = float(csr.weights[p])
    src, dst = n_id[ei[0]], n_id[ei[1]]
    for s_, d_, w_ in zip(src.tolist(), dst.tolist(), sub.edge_weight.tolist()):
        assert (d_, s_) in edges, "a sampled neighbour must be a CSR neighbour of its target"
        assert edges[(d_, s_)] == pytest.approx(w_)
    # hop structure: hop-1 targets are the seeds, hop-2 targets are hop-1's new nodes
    e1 = sub.num_sampled_edges[0]
    n0, n1 = sub.num_sampled_nodes[0], sub.num_sampled_nodes[1]
    assert (ei[1, :e1] < n0).all()
    assert ((ei[1, e1:] >= n0) & (ei[1, e1:] < n0 + n1)).all()
    # fan-out per target; everything when the degree is small
    deg = torch.as_tensor(csr.degrees())
    for hop, (lo, hi) in enumerate([(0, e1), (e1, ei.shape[1])]):
        tg = dst[lo:hi]
        counts = torch.bincount(tg, minlength=csr.n_rows)
        targets = n_id[:n0] if hop == 0 else n_id[n0:n0 + n1]
        assert torch.equal(counts[targets], torch.minimum(deg[targets], torch.tensor(fanouts[hop])))
        assert torch.unique(tg * 10**9 + src[lo:hi]).numel() == hi - lo


def test_exclude_edges_never_sampled():
    csr = _random_graph(seed=1)
    deg = csr.degrees()
    hub = int(np.argmax(deg))
    small = int(np.flatnonzero((deg >= 2) & (deg <= 3))[0])
    excl_hub = csr.indices[csr.indptr[hub]:csr.indptr[hub] + deg[hub] // 2]  # half of the hub's edges
    excl_small = csr.indices[csr.indptr[small]:csr.indptr[small] + 1]
    ex = torch.tensor(np.array([np.r_[[hub] * len(excl_hub), small], np.r_[excl_hub, excl_small]]))
    banned = set(zip(ex[0].tolist(), ex[1].tolist()))
    for weighted in (False, True):
        s = NeighborSampler(csr, [deg[hub] // 2 + 5, 3], weighted=weighted, key_max_degree=4)
        for rep in range(6):
            sub = s.sample(torch.tensor([hub, small]), torch.Generator().manual_seed(rep), exclude_edges=ex)
            src, dst = sub.n_id[sub.edge_index[0]], sub.n_id[sub.edge_index[1]]
            assert not banned & set(zip(dst.tolist(), src.tolist()))
            e1 = sub.num_sampled_edges[0]
            c = torch.bincount(dst[:e1], minlength=csr.n_rows)
            # the hub keeps all its non-excluded neighbours (fan-out covers them), small loses one
            assert int(c[hub]) == deg[hub] - len(excl_hub) and int(c[small]) == deg[small] - 1


def test_bipartite_channel_and_gatconv():
    from torch_geometric.nn import GATConv

    rng = np.random.default_rng(2)
    r, c = rng.integers(0, 40, 300), rng.integers(0, 25, 300)
    bip = BipartiteGraph(np.arange(40), np.arange(25), CSR.from_coo(r, c, None, 40, 25))
    comb = bip.combined()
    s = NeighborSampler(comb, [10, 5])
    sub = s.sample(torch.arange(8), torch.Generator().manual_seed(0))
    src, dst = sub.n_id[sub.edge_index[0]], sub.n_id[sub.edge_index[1]]
    assert ((src < 40) != (dst < 40)).all(), "bipartite: users only sample items and vice versa"
    x = torch.randn(comb.n_rows, 16)
    out = GATConv(16, 8)(x[sub.n_id], sub.edge_index)
    assert out.shape == (sub.num_nodes, 8)


def test_determinism_and_errors():
    csr = _random_graph(seed=3)
    s = NeighborSampler(csr, [5, 5], weighted=True)
    a = s.sample(torch.tensor([1, 2, 3]), torch.Generator().manual_seed(7))
    b = s.sample(torch.tensor([1, 2, 3]), torch.Generator().manual_seed(7))
    assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
    with pytest.raises(ValueError):
        s.sample(torch.tensor([1, 1]))
    with pytest.raises(IndexError):
        s.sample(torch.tensor([csr.n_rows]))
    # the scratch state is clean after an error
    c = s.sample(torch.tensor([1, 2, 3]), torch.Generator().manual_seed(7))
    assert torch.equal(a.n_id, c.n_id)
