"""LightGODE: the graph ODE (ml_core/train/lightgode.py), the post-training step on a trained model,
and the standalone ``lightgode`` model (ml_core/models/lightgode.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.nn import functional as F

from ml_core.config import TrainConfig
from ml_core.contracts.day import DayContext
from ml_core.inference import evaluate, predict
from ml_core.nn.graph_ode import graph_ode, isolated_growth
from ml_core.nn.id_graph import id_adjacency, stack_rows
from ml_core.registry.bundles import load_model, save_model
from ml_core.train.lightgode import apply_lightgode
from ml_core.train.trainer import build_contexts, train
from tests.helpers import TASKS
from tests.planted import planted_days


def _random_norm_adj(n: int, p: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    a = np.triu((rng.random((n, n)) < p).astype(float), 1)
    a = a + a.T
    a[0, :] = a[:, 0] = 0.0  # one isolated node
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    return torch.tensor(dinv[:, None] * a * dinv[None, :])


def _exact(e0: torch.Tensor, adj: torch.Tensor, T: float) -> torch.Tensor:
    """E(T) = e^{AT} E0 + int_0^T e^{As} ds E0, both blocks of one exponential of [[A, I], [0, 0]] T."""
    n = adj.shape[0]
    big = np.zeros((2 * n, 2 * n))
    big[:n, :n] = adj.numpy()
    big[:n, n:] = np.eye(n)
    ex = scipy.linalg.expm(big * T)
    return torch.tensor((ex[:n, :n] + ex[:n, n:]) @ e0.numpy())


# -- the ODE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [0.5, 1.0, 3.0])
def test_one_euler_step_is_the_public_closed_form(T):
    adj = _random_norm_adj(9, 0.4, seed=0)
    e0 = torch.randn(9, 4, dtype=torch.float64)
    want = (1 + T) * e0 + T * adj @ e0
    torch.testing.assert_close(graph_ode(e0, adj, T), want)
    torch.testing.assert_close(graph_ode(e0, adj.to_sparse_csr(), T), want)  # the sparse operator used in training


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_rk4_matches_the_matrix_exponential_solution(T):
    adj = _random_norm_adj(12, 0.3, seed=1)
    e0 = torch.randn(12, 3, dtype=torch.float64)
    exact = _exact(e0, adj, T)
    rk4 = graph_ode(e0, adj, T, solver="rk4", steps=100)
    torch.testing.assert_close(rk4, exact, rtol=1e-6, atol=1e-6)
    err = lambda solver, steps: float((graph_ode(e0, adj, T, solver, steps) - exact).abs().max())
    assert 12 < err("rk4", 10) / err("rk4", 20) < 20  # fourth order: halving h divides the error by ~16
    assert 1.6 < err("euler", 100) / err("euler", 200) < 2.4  # first order
    # where A^ is invertible, the textbook form e^{AT}E0 + A^{-1}(e^{AT} - I)E0 agrees
    inv_block = slice(1, 12)  # node 0 is isolated (A^ singular): drop it
    a = adj[inv_block, inv_block].numpy()
    if abs(np.linalg.det(a)) > 1e-8:
        ex = scipy.linalg.expm(a * T)
        x = e0[inv_block].numpy()
        textbook = ex @ x + np.linalg.solve(a, (ex - np.eye(len(a))) @ x)
        np.testing.assert_allclose(_exact(e0[inv_block], torch.tensor(a), T).numpy(), textbook, rtol=1e-8, atol=1e-8)


def test_isolated_rows_grow_by_one_plus_T():
    for solver, steps in (("euler", 1), ("euler", 7), ("rk4", 3)):
        assert isolated_growth(2.0, solver, steps) == pytest.approx(3.0)


def test_bad_ode_arguments():
    e0 = torch.zeros(2, 2)
    for kw in (dict(solver="dopri5"), dict(T=-1.0), dict(steps=0)):
        with pytest.raises(ValueError):
            graph_ode(e0, e0, **kw)


# -- the post-training step on a trained multi-task model -------------------------------------------
@pytest.fixture(scope="module")
def planted():
    return planted_days(seed=1, n_users=300, n_items=30, split="samples", code_noise=0.3)


def _cfg(model: str, **extra) -> TrainConfig:
    kw = dict(model=model, epochs=2, batch_size=128, lr=1e-2, dim=8, fanouts=[3, 3], seed=0, threads=1)
    return TrainConfig(**{**kw, **extra})


def test_post_step_changes_only_id_embeddings_and_survives_save_load(planted, tmp_path):
    plain = train([planted[0]], _cfg("mmoe"), TASKS)
    post = train([planted[0]], _cfg("mmoe", post_training=["lightgode"], post_training_args={"lightgode": {"T": 2.0}}),
                 TASKS)
    stats = post.post_training["lightgode"]
    assert stats["graph_days"] == ["2026-01-01"] and stats["graph_edges"] > 0
    a, b = plain.model.state_dict(), post.model.state_dict()
    id_keys = {"user_enc.id_emb.weight", "item_enc.id_emb.weight"}
    assert id_keys <= set(a)
    for k in a:
        if k not in id_keys:
            assert torch.equal(a[k], b[k]), f"{k} changed"
    # the id rows are E(T) of the plain run's tables over the training day's graph
    ctx = build_contexts([planted[0]], plain.feature_spec, need_graph=True)
    graph = id_adjacency(ctx, plain.model_spec.user.n_ids, plain.model_spec.item.n_ids)
    e0 = stack_rows((plain.model.user_enc.id_emb, plain.model.item_enc.id_emb))
    want = (1 + 2.0) * e0 + 2.0 * graph.adj @ e0
    torch.testing.assert_close(torch.cat([b["user_enc.id_emb.weight"], b["item_enc.id_emb.weight"]]), want)
    assert not torch.allclose(want, e0)

    save_model(tmp_path, post.model, post.model_name, post.model_args, post.model_spec, post.feature_spec)
    loaded, fspec, _, _ = load_model(tmp_path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, b[k]), k
    ctx_test = DayContext.build(planted[1], fspec, with_graph=False)
    np.testing.assert_array_equal(predict(loaded, ctx_test, [3, 3]), predict(post.model, ctx_test, [3, 3]))


def test_rescale_options(planted):
    e0 = torch.randn(6, 2, dtype=torch.float64)
    adj = _random_norm_adj(6, 0.6, seed=2)
    from ml_core.nn.graph_ode import rescale_rows

    e = graph_ode(e0, adj, 1.5)
    torch.testing.assert_close(rescale_rows(e, e0, "growth", 2.5)[0], e0[0])  # isolated row unchanged
    torch.testing.assert_close(rescale_rows(e, e0, "norm", 2.5).norm(dim=1), e0.norm(dim=1))
    with pytest.raises(ValueError, match="rescale"):
        apply_lightgode(torch.nn.Linear(1, 1), [], rescale="unit")


# -- the standalone model ---------------------------------------------------------------------------
def test_lightgode_model_integrates_its_ode_once(planted):
    res = train([planted[0]], _cfg("lightgode", post_training=["lightgode"], model_args={"T": 2.0}), TASKS)
    model = res.model
    assert res.post_training["lightgode"]["integrated_by"] == "model"
    assert bool(model.ode_ready)
    # E(T) from the normalised trained tables, not applied twice, and E(0) kept as parameters
    ctx = build_contexts([planted[0]], res.feature_spec, need_graph=True)
    graph = id_adjacency(ctx, res.model_spec.user.n_ids, res.model_spec.item.n_ids)
    e0 = F.normalize(stack_rows((model.user_enc.id_emb, model.item_enc.id_emb)), dim=-1)
    torch.testing.assert_close(model.ode_emb, 3.0 * e0 + 2.0 * graph.adj @ e0)

    ctx_test = DayContext.build(planted[1], res.feature_spec, with_graph=False)
    p_ode = predict(model, ctx_test, [3, 3])
    # (E(T) is saved and restored with the model: tests/unit/models/test_contract.py)
    # without the ODE (T = 0) the same tables score differently
    graph_adj, model._graph = model._graph, None  # a copy as loaded from a bundle: E(T) without its graph
    loaded = copy.deepcopy(model)
    model._graph = graph_adj
    loaded.ode_ready.fill_(False)
    assert np.abs(predict(loaded, ctx_test, [3, 3]) - p_ode).max() > 1e-3
    # the ODE is what the graph adds: it beats the tables alone on the planted community signal
    # (evaluate reads the scored day's graph, so "without the ODE" is T = 0)
    loaded.T = 0.0
    m_ode = evaluate(model, res.feature_spec, planted[1], [3, 3])
    m_raw = evaluate(loaded, res.feature_spec, planted[1], [3, 3])
    assert m_ode["click"]["gauc"] > m_raw["click"]["gauc"]


def test_lightgode_model_takes_the_graph_from_prepare(planted):
    """With graph contexts handed to prepare(), no post-training step is needed."""
    res = train([planted[0]], _cfg("lightgode"), TASKS)
    model = res.model
    assert bool(model.ode_ready)  # GraphNeeds.DAY_GRAPHS: the trainer built the day graph and handed it over
    before = model.ode_emb.clone()
    ctx = build_contexts([planted[0]], res.feature_spec, need_graph=True)
    model.train()
    with torch.no_grad():
        model.user_enc.id_emb.weight.mul_(-1)  # training continued
    model.prepare(ctx)
    assert torch.equal(model.ode_emb, before)  # training mode: nothing integrated yet
    model.eval()  # the trainer's switch after the last epoch integrates the final table
    assert not torch.allclose(model.ode_emb, before)


def test_lightgode_model_refuses_ode_options_in_the_post_step(planted):
    cfg = _cfg("lightgode", post_training=["lightgode"], post_training_args={"lightgode": {"T": 3.0}}, epochs=1)
    with pytest.raises(ValueError, match="model_args"):
        train([planted[0]], cfg, TASKS)


# -- inference over the scored day's graph --------------------------------------------------------
def _drop_item_edges(inputs, col: int):
    """``inputs`` whose bipartite graph lacks every edge of item column ``col`` (it stays a node)."""
    import dataclasses

    from ml_core.graph.csr import CSR

    g = inputs.graph
    ui = g.ui
    keep = np.asarray(ui.indices) != col
    rows = ui.row_of_entries()[keep]
    csr = CSR.from_coo(rows, np.asarray(ui.indices)[keep], np.asarray(ui.weights)[keep], ui.n_rows, ui.n_cols)
    return dataclasses.replace(inputs, graph=dataclasses.replace(g, ui=csr, counts={}, _iu=None))


def test_lightgode_scores_day_d_with_graph_d(planted, tmp_path):
    """The inference ODE reads the scored day's graph, not the training day's: an item with no edge
    in the training graph but edges in graph[D] gets an ODE-smoothed embedding there."""
    col = 3
    train_day = _drop_item_edges(planted[0], col)
    item = int(planted[1].graph.item_ids[col])
    res = train([train_day], _cfg("lightgode"), TASKS)
    model, fspec = res.model, res.feature_spec
    n_u = res.model_spec.user.n_ids
    row = n_u + int(fspec.item.encode(np.array([item]), planted[1].items, "item_id").ids[0])
    e0 = F.normalize(stack_rows((model.user_enc.id_emb, model.item_enc.id_emb)), dim=-1)
    # training graph: the item is isolated, its fallback E(T) is (1 + T) E(0)
    torch.testing.assert_close(model.ode_emb[row], 2.0 * e0[row])
    ctx = DayContext.build(planted[1], fspec, with_graph=True)
    predict(model, ctx, [3, 3])
    graph_d = id_adjacency([ctx], n_u, res.model_spec.item.n_ids)
    want = 2.0 * e0 + graph_d.adj @ e0
    torch.testing.assert_close(model._day_emb, want)
    assert not torch.allclose(model._day_emb[row], 2.0 * e0[row])  # smoothed over its graph[D] edges
    # scores follow: evaluate == predict over graph[D] != the training graph's fallback
    p_day = predict(model, ctx, [3, 3])
    p_fallback = predict(model, DayContext.build(planted[1], fspec, with_graph=False), [3, 3])
    assert np.abs(p_day - p_fallback).max() > 1e-4
    # training mode forgets the day's E(T)
    model.train()
    assert model._day_emb is None


def test_lightgode_old_bundle_loads_and_scores_with_graph_d(planted, tmp_path):
    """A bundle holds E(0), a_k, b_k and the training graph's ode_emb (the state_dict is unchanged by
    the switch to graph[D]); loaded, it scores day D over graph[D], or over ode_emb without graphs."""
    res = train([planted[0]], _cfg("lightgode"), TASKS)
    save_model(tmp_path, res.model, res.model_name, res.model_args, res.model_spec, res.feature_spec)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"user_enc.id_emb.weight", "item_enc.id_emb.weight", "task_scale", "task_bias",
                          "ode_emb", "ode_ready"}
    loaded, fspec, _, _ = load_model(tmp_path)
    torch.testing.assert_close(loaded.ode_emb, res.model.ode_emb)
    ctx = DayContext.build(planted[1], fspec, with_graph=True)
    np.testing.assert_allclose(predict(loaded, ctx, [3, 3]), predict(res.model, ctx, [3, 3]), atol=1e-6, rtol=0)
    ctx_plain = DayContext.build(planted[1], fspec, with_graph=False)
    np.testing.assert_allclose(predict(loaded, ctx_plain, [3, 3]), predict(res.model, ctx_plain, [3, 3]),
                               atol=1e-6, rtol=0)
    m = evaluate(loaded, fspec, planted[1], [3, 3])
    assert 0.0 < m["click"]["gauc"] <= 1.0
