"""AdamW-SEvo (ml_core/train/sevo.py) and the graph over id-embedding rows (ml_core/nn/id_graph.py)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from ml_core.batching import BatchMaker
from ml_core.config import TrainConfig
from ml_core.contracts.day import DayContext
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.graph.csr import CSR
from ml_core.inference import evaluate
from ml_core.models.registry import build_model
from ml_core.nn.id_graph import id_adjacency, id_table_pairs
from ml_core.train.sevo import AdamWSEvo, make_sevo, smooth
from ml_core.train.trainer import train
from tests.helpers import TASKS, planted_day
from tests.planted import planted_days


# -- the update, by hand ----------------------------------------------------------------------------
def _norm_adj(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    a = np.zeros((n, n))
    for r, c in edges:
        a[r, c] = a[c, r] = 1.0
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    return dinv[:, None] * a * dinv[None, :]


def _reference(e0, grads, adj, lr, wd, b1, b2, eps, L, b, correction=True, smooth_rows=True):
    """AdamW-SEvo written out with dense float64 matrices (MODELS.md "SEvo")."""
    e, m, v = e0.copy(), np.zeros_like(e0), np.zeros_like(e0)
    for t, g in enumerate(grads, start=1):
        g_t, s_t = g, g * g
        if correction and t > 1:
            zero = (g == 0).all(axis=1, keepdims=True)
            g_t = np.where(zero, m / (1 - b1 ** (t - 1)), g)
            s_t = np.where(zero, v / (1 - b2 ** (t - 1)), g * g)
        m = b1 * m + (1 - b1) * g_t
        v = b2 * v + (1 - b2) * s_t
        delta = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        if smooth_rows:
            delta = (1 - b) / (1 - b ** (L + 1)) * sum(b ** j * np.linalg.matrix_power(adj, j) @ delta for j in range(L + 1))
        e = e * (1 - lr * wd) - lr * delta
    return e


@pytest.mark.parametrize("correction", [True, False])
def test_two_steps_equal_the_closed_form(correction):
    rng = np.random.default_rng(0)
    nu, ni, d = 4, 3, 2  # rows 0..3 users, 4..6 items (row 0 / 4 = unknown ids, isolated)
    adj = _norm_adj(nu + ni, [(1, 5), (1, 6), (2, 5), (3, 6), (3, 5)])
    e0 = rng.normal(size=(nu + ni, d))
    w0 = rng.normal(size=(3,))
    g1 = rng.normal(size=(nu + ni, d))
    g1[0] = 0.0  # zero rows at step 1: no previous moment, no correction
    g1[4] = 0.0
    g2 = rng.normal(size=(nu + ni, d))
    g2[2] = 0.0  # zero rows at step 2: corrected by the step-1 moments
    g2[6] = 0.0
    gw = [rng.normal(size=(3,)), rng.normal(size=(3,))]
    hp = dict(lr=0.1, wd=0.05, b1=0.9, b2=0.999, eps=1e-8, L=2, b=0.9)

    user = nn.Parameter(torch.tensor(e0[:nu], dtype=torch.float32))
    item = nn.Parameter(torch.tensor(e0[nu:], dtype=torch.float32))
    w = nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    opt = AdamWSEvo([w], [(user, item)], torch.tensor(adj, dtype=torch.float32).to_sparse_csr(), lr=hp["lr"],
                    betas=(hp["b1"], hp["b2"]), eps=hp["eps"], weight_decay=hp["wd"], layers=hp["L"], beta=hp["b"],
                    correction=correction)
    for g, gwt in zip((g1, g2), gw):
        user.grad = torch.tensor(g[:nu], dtype=torch.float32)
        item.grad = torch.tensor(g[nu:], dtype=torch.float32)
        w.grad = torch.tensor(gwt, dtype=torch.float32)
        opt.step()

    want = _reference(e0, [g1, g2], adj, correction=correction, **hp)
    got = torch.cat([user.detach(), item.detach()]).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the correction changes the rows it corrects (so the comparison above can tell)
    other = _reference(e0, [g1, g2], adj, correction=not correction, **hp)
    assert np.abs(other[[2, 6]] - want[[2, 6]]).max() > 1e-3
    # the dense parameter: plain AdamW (no smoothing, no correction)
    want_w = _reference(w0[:, None], [g[:, None] for g in gw], None, correction=False, smooth_rows=False, **hp)[:, 0]
    np.testing.assert_allclose(w.detach().double().numpy(), want_w, rtol=1e-5, atol=1e-6)


def test_smoother_weights_and_limits():
    adj = torch.tensor(_norm_adj(5, [(0, 3), (1, 3), (2, 4)]), dtype=torch.float64)
    delta = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(smooth(delta, adj, 0, 0.99), delta)
    want = (delta + 0.5 * adj @ delta + 0.25 * adj @ adj @ delta) * (0.5 / (1 - 0.125))
    torch.testing.assert_close(smooth(delta, adj, 2, 0.5), want)
    want_b1 = (delta + adj @ delta + adj @ adj @ delta) / 3
    torch.testing.assert_close(smooth(delta, adj, 2, 1.0), want_b1)


# -- on a real model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """(model spec, training contexts with graphs, batches) of a small planted dataset."""
    planted = planted_day(seed=3, n_users=80, n_items=30, dim=8, fanouts=(3, 3))
    ctx, mspec = planted.ctx, planted.mspec
    maker = BatchMaker(ctx, [3, 3], need_graph=False)
    batches = [maker.make(np.arange(s, s + 40)) for s in range(0, 160, 40)]
    return mspec, [ctx], batches


def _run(model, opt, batches):
    for batch in batches:
        _, loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_L0_without_correction_is_adamw(small):
    mspec, contexts, batches = small
    torch.manual_seed(0)
    a = build_model("mmoe", mspec)
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    opt_a = make_sevo(a, cfg, contexts, layers=0, correction=False)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1, eps=1e-8, betas=(0.9, 0.999))
    _run(a, opt_a, batches)
    _run(b, opt_b, batches)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    # with the correction, the rows a batch skipped move differently from AdamW
    _run(c, make_sevo(c, cfg, contexts, layers=0, correction=True), batches)
    assert not torch.allclose(c.user_enc.id_emb.weight, b.user_enc.id_emb.weight)


def test_id_adjacency_maps_node_rows_to_embedding_rows():
    day, _ = planted_days(seed=4, n_users=50, n_items=30, split="samples")
    # the model's vocabulary lacks users 1..5 (unknown -> row 0): their edges must be dropped
    known = day.samples.filter(pl.col("user_id") > 5)
    fit_day = copy.copy(day)
    fit_day.samples, fit_day.users = known, day.users.filter(pl.col("user_id") > 5)
    fspec = FeatureSpec.fit([fit_day], TASKS)
    ctx = DayContext.build(day, fspec, with_graph=True)
    nu, ni = fspec.user.n_ids, fspec.item.n_ids
    g = id_adjacency([ctx], nu, ni)
    adj = g.dense().double().numpy()

    want = np.zeros_like(adj)
    csr = ctx.channels["bipartite"]
    n_users = len(ctx.user_raw)
    node_to_row = np.concatenate([ctx.users.ids.numpy(), nu + ctx.items.ids.numpy()])
    unknown = np.concatenate([ctx.users.ids.numpy() == 0, ctx.items.ids.numpy() == 0])
    for r, c in zip(csr.row_of_entries(), csr.indices):
        if not (unknown[r] or unknown[c]):
            want[node_to_row[r], node_to_row[c]] = 1.0
    assert want[:, 0].sum() == 0 and (ctx.users.ids[:5] == 0).all() and n_users == 50
    deg = want.sum(1)
    dinv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    np.testing.assert_allclose(adj, dinv[:, None] * want * dinv[None, :], atol=1e-6)
    assert g.n_edges == int(want.sum()) // 2 > 0


def test_graph_days_last_picks_the_latest_day(small):
    _, contexts, _ = small
    ctx = contexts[0]
    older = copy.copy(ctx)
    older.day = "2025-12-31"
    csr = ctx.channels["bipartite"]
    n_nodes = len(ctx.user_raw) + len(ctx.item_raw)
    free = np.setdiff1d(np.arange(len(ctx.user_raw), n_nodes), csr.indices[csr.indptr[0]:csr.indptr[1]])[0]
    older.channels = {**ctx.channels, "bipartite": CSR.from_coo([0, free], [free, 0], None, n_nodes, n_nodes)}
    nu, ni = int(ctx.users.ids.max()) + 1, int(ctx.items.ids.max()) + 1
    last = id_adjacency([ctx, older], nu, ni).dense()
    assert torch.equal(id_adjacency([older, ctx], nu, ni).dense(), last)
    assert torch.equal(id_adjacency([ctx], nu, ni).dense(), last)
    assert id_adjacency([older, ctx], nu, ni, days="all").dense().count_nonzero() > last.count_nonzero()


def test_bad_arguments(small):
    mspec, contexts, _ = small
    model = build_model("mmoe", mspec)
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="layers"):
        make_sevo(model, cfg, contexts, layers=-1)
    with pytest.raises(ValueError, match="beta"):
        make_sevo(model, cfg, contexts, beta=0.0)
    with pytest.raises(ValueError, match="channels"):
        make_sevo(model, cfg, contexts, graph_channels=["nope"])
    with pytest.raises(ValueError, match="no id-embedding tables"):
        id_table_pairs(nn.Linear(2, 2))


# -- through the trainer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted():
    return planted_days(seed=1, n_users=600, n_items=40, split="samples", code_noise=0.3)


@pytest.mark.parametrize("name", ["mmoe", "moge"])
def test_trainer_with_sevo_learns_planted_signal(name, planted):
    cfg = TrainConfig(model=name, epochs=4, batch_size=128, lr=1e-2, dim=16, fanouts=[5, 5], seed=0, threads=1,
                      optimizer="sevo")
    res = train([planted[0]], cfg, TASKS)
    m = evaluate(res, res.feature_spec, planted[1], cfg.fanouts)
    for task in TASKS:
        assert m[task]["gauc"] > 0.6, f"{name}+sevo {task}: {m}"


def test_the_sequence_item_table_is_not_coupled(small):
    """With a behaviour sequence (train.sequence_length, its own item table, ml_core/nn/sequence.py)
    the model has an item table with no user table beside it: the id graph pairs only the encoders'."""
    mspec, _, _ = small
    plain, with_seq = build_model("moge", mspec), build_model("moge", dataclasses.replace(mspec, seq_len=5))
    pairs = id_table_pairs(with_seq)
    assert len(pairs) == len(id_table_pairs(plain)) == 1
    assert with_seq.seq_enc.items.id_emb not in [t for pair in pairs for t in pair]

