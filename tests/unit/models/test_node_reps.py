"""Inference from node representations (:mod:`ml_core.contracts.reps`), for every registered model.

Every model's :meth:`encode_nodes` + :meth:`score_encoded` (every node encoded once, layer-wise
over the day) scores the samples of a planted day; the per-pair path (a subgraph sampled around
each batch) scores the same samples:

* with every neighbour (fan-outs ``-1``) both are the same computation, so the probabilities
  agree to float rounding, for every model (E2E-GRec: with one channel, see below);
* with sampled neighbourhoods both are estimates of the full-neighbourhood scores: the test
  bounds their difference by a tolerance measured on this data (the numbers are in the test).

E2E-GRec with all three channels is the one model whose per-pair path is *not* the
full-neighbourhood computation: it merges the per-channel subgraphs, so a node reached through
one channel lacks the other channels' edges (a bipartite neighbour of a seed has no similarity
edges). The layer-wise path gives every node all of its relations; the test measures the gap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_core.batching import layer_edges
from ml_core.contracts.reps import NodeReps
from ml_core.inference import encode_day, predict
from ml_core.models.registry import available_models, build_model, model_class
from tests.helpers import planted_day

FULL = [-1, -1]


@pytest.fixture(scope="module")
def planted():
    p = planted_day(seed=3, n_users=120, n_items=40, fanouts=(4, 3))
    return p.mspec, p.ctx


def prepared(name: str, planted, args: dict | None = None):
    mspec, ctx = planted
    torch.manual_seed(0)
    model = build_model(name, mspec, args or {})
    model.set_task_priors(torch.tensor([0.3, 0.12]))
    model.prepare([ctx])
    return model.eval()


def both_paths(model, ctx, pair_fanouts, encode_fanouts, seed=0):
    pairs = predict(model, ctx, pair_fanouts, batch_size=256, seed=seed, path="pairs", prefetch=0)
    nodes = predict(model, ctx, pair_fanouts, batch_size=256, seed=seed, path="nodes", encode_fanouts=encode_fanouts)
    return pairs, nodes


CASES = [pytest.param(n, {}, id=n) for n in available_models() if n != "e2e_grec"] + [
    pytest.param("e2e_grec", {"channels": ["bipartite"]}, id="e2e_grec-bipartite"),
    pytest.param("e2e_grec", {"channels": ["bipartite"], "conv": "gat"}, id="e2e_grec-bipartite-gat"),
    pytest.param("moge", {"channels": ["bipartite", "item_sim"], "combine": "lstm"}, id="moge-lstm-2ch"),
    pytest.param("ngcf", {"layers": 1}, id="ngcf-1layer"),
]


@pytest.mark.parametrize("name,args", CASES)
def test_encoded_scores_equal_the_per_pair_path_on_full_neighbourhoods(name, args, planted):
    _, ctx = planted
    model = prepared(name, planted, args)
    pairs, nodes = both_paths(model, ctx, FULL, None)
    assert pairs.shape == nodes.shape == (ctx.n_samples, 2)
    np.testing.assert_allclose(nodes, pairs, rtol=0, atol=2e-6)


def test_e2e_grec_with_every_channel_differs_only_by_the_merged_subgraphs_missing_edges(planted):
    _, ctx = planted
    model = prepared("e2e_grec", planted)
    pairs, nodes = both_paths(model, ctx, FULL, None)
    gap = np.abs(nodes - pairs)
    # measured on this day: mean 0.0012, max 0.0067 (the untrained model's probabilities span ~0.1)
    assert 0 < gap.mean() < 0.005 and gap.max() < 0.03
    # with one channel nothing is missing: the same computation
    one = prepared("e2e_grec", planted, {"channels": ["bipartite"]})
    np.testing.assert_allclose(*both_paths(one, ctx, FULL, None), rtol=0, atol=2e-6)


GRAPH_MODELS = [n for n in available_models() if model_class(n).graph_needs.subgraphs]


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_sampled_encoding_stays_close_to_the_sampled_per_pair_path(name, planted):
    mspec, ctx = planted
    model = prepared(name, planted)
    pairs, nodes = both_paths(model, ctx, mspec.fanouts, mspec.fanouts)
    full = predict(model, ctx, FULL, path="nodes")  # = the per-pair path on full neighbourhoods (test above)
    # two independent neighbour samples of the same size: each is an estimate of the full-neighbourhood
    # score, so their gap is of the order of each one's gap to it (measured: mean gaps 0.0005-0.004)
    for est in (pairs, nodes):
        assert np.abs(est - full).mean() < 0.01
    assert np.abs(nodes - pairs).mean() < 2 * max(np.abs(pairs - full).mean(), np.abs(nodes - full).mean()) + 1e-6
    again = predict(model, ctx, mspec.fanouts, path="nodes", encode_fanouts=mspec.fanouts)
    np.testing.assert_array_equal(again, nodes)  # seeded: the same seed, the same sample
    other = predict(model, ctx, mspec.fanouts, path="nodes", encode_fanouts=mspec.fanouts, seed=1)
    assert not np.array_equal(other, nodes)


def test_graph_models_are_the_ones_that_read_subgraphs():
    assert {"moge", "ngcf", "e2e_grec", "mmoe_graph"} <= set(GRAPH_MODELS)
    assert "mmoe" not in GRAPH_MODELS


def test_layer_edges_full_and_sampled(planted):
    _, ctx = planted
    csr = ctx.channels["bipartite"]
    full = layer_edges(ctx, ("bipartite",), 2, None)
    assert len(full) == 2 and full[0]["bipartite"].shape == (2, csr.nnz)
    edge_set = set(zip(full[0]["bipartite"][0].tolist(), full[0]["bipartite"][1].tolist()))
    sampled = layer_edges(ctx, ("bipartite", "user_sim"), 2, [3, 1], seed=5)
    for layer, f in ((0, 1), (1, 3)):  # layer l draws fanouts[L - 1 - l]
        src, dst = sampled[layer]["bipartite"]
        assert set(zip(src.tolist(), dst.tolist())) <= edge_set
        deg = torch.bincount(dst, minlength=csr.n_rows)
        assert int(deg.max()) == f and torch.equal(deg, torch.clamp(torch.as_tensor(csr.degrees()), max=f))
    with pytest.raises(ValueError, match="2 layers need 2 fan-outs"):
        layer_edges(ctx, ("bipartite",), 2, [3])


def test_node_reps_round_trip_concatenation_and_matrices(planted, tmp_path):
    _, ctx = planted
    model = prepared("moge", planted)
    reps = encode_day(model, ctx)
    arrays = reps.to_arrays(ctx.user_raw, ctx.item_raw)
    np.savez(tmp_path / "r.npz", **arrays)
    with np.load(tmp_path / "r.npz") as z:
        back, user_raw, item_raw = NodeReps.from_arrays(z)
    assert back.neighbours == "full" and np.array_equal(user_raw, ctx.user_raw)
    rows = torch.arange(5)
    with torch.no_grad():
        np.testing.assert_array_equal(model.score_encoded(back, rows, rows), model.score_encoded(reps, rows, rows))
    U, I = reps.matrices()
    assert U.shape == (len(ctx.user_raw), 3 * 16) and I.shape == (len(ctx.item_raw), 3 * 16)
    both = reps.cat(reps)
    assert both.n_users == 2 * reps.n_users and torch.equal(both.user_reps["h_u"][reps.n_users:], reps.user_reps["h_u"])
    with pytest.raises(ValueError, match="one row per user"):
        NodeReps(reps.users, reps.items, {"h_u": reps.user_reps["h_u"][:3]}, {})
    with pytest.raises(ValueError, match="do not match"):
        predict(model, ctx, [4, 3], reps=NodeReps(reps.users[torch.arange(3)], reps.items))


PROJECTED = [pytest.param("moge", {}, id="moge"), pytest.param("moge", {"expert_input": ["h_u", "h_i", "s_u", "s_i"]}, id="moge-graph-experts"),
             pytest.param("moge", {"use_mgnn": False}, id="moge-no-mgnn"),
             pytest.param("mmoe", {}, id="mmoe"), pytest.param("mmoe_graph", {}, id="mmoe_graph"),
             pytest.param("mmoe", {"gate_hidden": [8]}, id="mmoe-gate-mlp")]


@pytest.mark.parametrize("name,args", PROJECTED)
def test_scores_from_the_first_layer_projected_per_node_equal_the_direct_product(name, args, planted):
    """:mod:`ml_core.models.precompute`: with a pair input and sequences too (the last columns of x)."""
    import dataclasses

    from ml_core.contracts.batch import Sequences
    from ml_core.models.precompute import FIRST_I, FIRST_U

    mspec, ctx = planted
    torch.manual_seed(0)
    model = build_model(name, dataclasses.replace(mspec, n_pair=3, seq_len=5), args).eval()
    reps = encode_day(model, ctx)
    projected = model.scoring_reps(reps)
    assert projected.user_reps[FIRST_U].shape[0] == reps.n_users and projected.item_reps[FIRST_I].shape[0] == reps.n_items
    g = torch.Generator().manual_seed(1)
    b = 64
    u, i = torch.randint(0, reps.n_users, (b,), generator=g), torch.randint(0, reps.n_items, (b,), generator=g)
    pair = torch.randn(b, 3, generator=g)
    seq = Sequences(torch.randint(0, mspec.item.n_ids, (b, 5), generator=g), torch.randint(0, 5, (b, 5), generator=g),
                    torch.randint(0, 30, (b, 5), generator=g))
    with torch.no_grad():
        direct = model.score_encoded(reps, u, i, pair, seq)
        fast = model.score_encoded(projected, u, i, pair, seq)
    torch.testing.assert_close(fast, direct, rtol=0, atol=2e-5)
    assert model.scoring_reps(reps).user_reps[FIRST_U] is not reps.user_reps.get(FIRST_U)  # reps are not changed in place
    assert FIRST_U not in reps.user_reps
