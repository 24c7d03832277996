"""E2E-GRec (heterogeneous GNN + GFAE + two-level fusion + MMoE) and GradNorm.

Real sampled batches of a small planted dataset for the model; a tiny shared layer with two
heads for GradNorm's dynamics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_core.contracts.batch import CHANNELS
from ml_core.models.base import bce_per_task
from ml_core.models.e2e_grec import E2EGRec, encoder_inputs
from ml_core.models.hetero import RELATIONS, merge_channels
from ml_core.nn.gradnorm import GradNorm
from tests.helpers import planted_day
from tests.planted import planted_days


@pytest.fixture(scope="module")
def data():
    p = planted_day(seed=3, n_users=120, n_items=40, rows=np.arange(0, 600, 7))
    return p.mspec, p.fspec, p.ctx, p.batch


# -- the heterogeneous subgraph ------------------------------------------------------------------------
def test_channels_merge_into_one_typed_graph(data):
    _, _, ctx, batch = data
    n_users = len(ctx.user_raw)
    bip, usim, isim = (batch.channels[c] for c in CHANNELS)
    key = {"bipartite": bip.n_id, "user_sim": usim.n_id, "item_sim": isim.n_id + n_users}  # day space [users | items]
    g = merge_channels(batch, CHANNELS)
    merged = {"user": torch.unique(torch.cat([bip.n_id[bip.user_pos], usim.n_id])),
              "item": torch.unique(torch.cat([bip.n_id[bip.item_pos], key["item_sim"]]))}
    # every node once, with its own features
    assert len(g.tables["user"]) == len(merged["user"]) and len(g.tables["item"]) == len(merged["item"])
    assert torch.equal(g.tables["user"].ids, ctx.users.ids[merged["user"]])
    assert torch.equal(g.tables["item"].cats, ctx.items.cats[merged["item"] - n_users])
    # samples point at their own user and item
    assert torch.equal(merged["user"][g.sample_user], batch.user_index)
    assert torch.equal(merged["item"][g.sample_item], batch.item_index + n_users)
    # every channel edge is in exactly one relation, between the same two nodes
    for name in CHANNELS:
        ch, k = batch.channels[name], key[name]
        expected = sorted(zip(k[ch.edge_index[0]].tolist(), k[ch.edge_index[1]].tolist()))
        got = []
        for rel, (c, s, t) in RELATIONS.items():
            if c == name:
                got += zip(merged[s][g.edges[rel][0]].tolist(), merged[t][g.edges[rel][1]].tolist())
        assert expected and sorted(got) == expected, name


def test_channels_without_node_ids_are_refused(data):
    spec, _, _, batch = data
    import copy

    bad = copy.copy(batch)
    bad.channels = dict(batch.channels)
    bad.channels["user_sim"] = copy.copy(batch.channels["user_sim"])
    bad.channels["user_sim"].n_id = None
    with pytest.raises(ValueError, match="n_id"):
        E2EGRec(spec)(bad)


@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_seed_only_propagation_equals_full_propagation(data, conv):
    spec, _, _, batch = data
    torch.manual_seed(0)
    model = E2EGRec(spec, conv=conv)
    g = merge_channels(batch, CHANNELS)
    h0 = {t: model.encoders[t](g.tables[t]) for t in g.tables}
    seeds = g.seeds()
    rows, z = model.gnn(h0, g.edges, seeds)
    everyone = {t: torch.arange(len(h0[t])) for t in h0}
    rows_all, z_all = model.gnn(h0, g.edges, everyone)
    for t in h0:
        assert torch.equal(rows[t], seeds[t]) and torch.equal(rows_all[t], everyone[t])
        torch.testing.assert_close(z[t], z_all[t][seeds[t]], rtol=1e-5, atol=1e-6)


# -- end to end -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv,gfae_nodes,fusion", [("sage", "seeds", "ep"), ("gat", "all", "con"), ("sage", "all", "mlp")])
def test_loss_parts(data, conv, gfae_nodes, fusion):
    """(Gradients to every parameter, these variants included: tests/unit/models/test_contract.py.)"""
    spec, _, _, batch = data
    torch.manual_seed(1)
    model = E2EGRec(spec, conv=conv, gfae_nodes=gfae_nodes, fusion=fusion)
    logits, loss, parts = model.compute_loss(batch)
    assert logits.shape == (len(batch), spec.n_tasks)
    assert {"bce_0", "bce_1", "gfae", "w_0", "w_1", "w_2", "G_0", "G_2", "gradnorm_loss"} <= set(parts)


def test_recommender_gradients_alone_reach_the_gnn(data):
    """End to end: the task losses (no GFAE, no GradNorm) train every GNN weight, and the GNN
    changes the predictions."""
    spec, _, _, batch = data
    torch.manual_seed(2)
    model = E2EGRec(spec, gfae=False, gradnorm=False)
    logits, loss, parts = model.compute_loss(batch)
    assert set(parts) == {"bce_0", "bce_1"}
    assert loss.item() == pytest.approx(bce_per_task(logits, batch.labels).sum().item(), rel=1e-6)
    loss.backward()
    gnn = dict(model.gnn.named_parameters())
    assert len(gnn) == 2 * (2 * 2 + 4) + 2  # per layer: 2 root Linear (w, b) + 4 relation W; W_out (w, b)
    dead = [n for n, p in gnn.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []
    with torch.no_grad():
        before = model(batch)
        model.gnn.layers[0].rel["user_to_user"].lin.weight.mul_(3.0)
        assert not torch.allclose(model(batch), before)


def test_gfae_loss_equals_direct_computation(data):
    spec, _, _, batch = data
    torch.manual_seed(3)
    model = E2EGRec(spec, decoder_hidden=[8])
    for nodes in ("seeds", "all"):
        model.gfae_nodes = nodes
        got = model.graph(batch, with_gfae=True).gfae
        g = merge_channels(batch, CHANNELS)
        h0 = {t: model.encoders[t](g.tables[t]) for t in g.tables}
        picked = g.seeds() if nodes == "seeds" else {t: torch.arange(len(h0[t])) for t in h0}
        _, z = model.gnn(h0, g.edges, picked)
        sq, count = 0.0, 0
        for t in ("user", "item"):
            table, enc = g.tables[t][picked[t]], model.encoders[t]
            target = torch.cat([emb.weight[table.cats[:, j]] for j, emb in enumerate(enc.cat_embs)] + [table.nums], 1)
            recon = model.decoders[t](z[t])
            sq += float(((recon - target) ** 2).sum())
            count += target.numel()
        assert got.item() == pytest.approx(sq / count, rel=1e-5)
    assert not encoder_inputs(model.encoders["user"], g.tables["user"]).requires_grad  # stop-gradient target


def test_model_gradnorm_norms_are_taken_on_the_gnn_output_layer(data):
    spec, _, _, batch = data
    torch.manual_seed(4)
    model = E2EGRec(spec, alpha=0.5)
    with torch.no_grad():
        model.gradnorm.weights.copy_(torch.tensor([0.5, 1.0, 1.5]))
    logits, loss, parts = model.compute_loss(batch)
    r = model.graph(batch, with_gfae=True)
    losses = torch.cat([bce_per_task(model.head(r, batch), batch.labels), r.gfae.reshape(1)])
    for i, w in enumerate([0.5, 1.0, 1.5]):
        (grad,) = torch.autograd.grad(w * losses[i], model.gnn.out.weight, retain_graph=True)
        assert parts[f"G_{i}"] == pytest.approx(float(grad.norm()), rel=1e-4)
    assert loss.item() == pytest.approx(float((torch.tensor([0.5, 1.0, 1.5]) * losses.detach()).sum()), rel=1e-5)


def test_training_keeps_weights_normalised():
    """(Save/load of the GradNorm state: tests/unit/models/test_contract.py.)"""
    from ml_core.config import TrainConfig
    from ml_core.train.trainer import train

    day, _ = planted_days(seed=3, n_users=120, n_items=40, split="samples")
    cfg = TrainConfig(model="e2e_grec", epochs=2, batch_size=64, lr=1e-2, dim=16, fanouts=[4, 3], seed=0, threads=1,
                      model_args={"conv": "gat", "alpha": 1.0})
    res = train([day], cfg, ["click", "purchase"])
    logged = [h for h in res.history if "w_0" in h]
    assert logged and all(sum(h[f"w_{i}"] for i in range(3)) == pytest.approx(3.0, rel=1e-5) for h in logged)
    gn = res.model.gradnorm
    assert torch.all(gn.initial_losses > 0)
    assert not torch.allclose(gn.weights.detach(), torch.ones(3))  # the weights moved


def test_optimizer_keeps_the_loss_weights_out_of_weight_decay(data):
    from ml_core.config import TrainConfig
    from ml_core.train.extensions import make_optimizer

    spec = data[0]
    model = E2EGRec(spec, gradnorm_lr=0.025)
    opt = make_optimizer(model, TrainConfig(lr=1e-3, weight_decay=1e-4), [])
    (rest, w, tables) = opt.param_groups  # Adam's two groups, then the embedding tables (SparseAdam)
    assert w["params"] == [model.gradnorm.weights] and w["weight_decay"] == 0.0 and w["lr"] == 0.025
    assert rest["weight_decay"] == 1e-4 and "weight_decay" not in tables
    assert len(rest["params"]) + len(tables["params"]) == len(list(model.parameters())) - 1


def test_bad_options_are_rejected(data):
    spec = data[0]
    for kwargs, match in [({"conv": "gin"}, "conv"), ({"gfae_nodes": "some"}, "gfae_nodes"), ({"layers": 3}, "layers"),
                          ({"channels": ["user_sim"]}, "reach users and items"), ({"channels": ["social"]}, "subset"),
                          ({"alpha": -1.0}, "alpha"), ({"fusion": "dot"}, "interaction")]:
        with pytest.raises(ValueError, match=match):
            E2EGRec(spec, **kwargs)


@pytest.mark.parametrize("channels", [["bipartite"], ["user_sim", "item_sim"]])
def test_channel_subsets(data, channels):
    spec, _, _, batch = data
    model = E2EGRec(spec, channels=channels)
    _, loss, _ = model.compute_loss(batch)
    loss.backward()
    assert set(model.gnn.layers[0].rel) == {r for r, (c, _, _) in RELATIONS.items() if c in channels}


# -- GradNorm ---------------------------------------------------------------------------------------------
class TwoHeads(torch.nn.Module):
    """A shared linear layer W and two linear heads (MSE losses)."""

    def __init__(self):
        super().__init__()
        self.shared = torch.nn.Linear(4, 8)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(2))

    def losses(self, x, ys):
        h = torch.relu(self.shared(x))
        return torch.stack([((head(h).squeeze(-1) - y) ** 2).mean() for head, y in zip(self.heads, ys)])


def test_gradnorm_norms_and_weight_gradient_equal_the_second_order_formulation():
    torch.manual_seed(0)
    net, gn = TwoHeads(), GradNorm(2, alpha=1.5)
    with torch.no_grad():
        gn.weights.copy_(torch.tensor([0.6, 1.4]))
        gn.initial_losses.copy_(torch.tensor([2.0, 0.5]))
    x = torch.randn(32, 4)
    ys = [x.sum(1), torch.randn(32)]
    losses = net.losses(x, ys)
    # the paper's form: G_i through a second-order graph, target detached, minimised over w
    w = torch.tensor([0.6, 1.4], requires_grad=True)
    G = torch.stack([torch.autograd.grad(w[i] * losses[i], net.shared.weight, retain_graph=True, create_graph=True)[0].norm()
                     for i in range(2)])
    ratio = losses.detach() / torch.tensor([2.0, 0.5])
    r = ratio / ratio.mean()
    target = (G.mean() * r ** 1.5).detach()
    l_grad = (G - target).abs().sum()
    (dw,) = torch.autograd.grad(l_grad, w)
    loss, stats = gn(losses, [net.shared.weight])
    loss.backward()
    assert [stats["G_0"], stats["G_1"]] == pytest.approx(G.tolist(), rel=1e-5)
    assert stats["gradnorm_loss"] == pytest.approx(l_grad.item(), rel=1e-5)
    torch.testing.assert_close(gn.weights.grad, dw, rtol=1e-5, atol=1e-7)
    assert loss.item() == pytest.approx(float(0.6 * losses[0] + 1.4 * losses[1]), rel=1e-6)  # value: weighted loss


def test_gradnorm_uses_each_loss_own_ratio():
    gn = GradNorm(3)
    gn.initial_losses.copy_(torch.tensor([1.0, 2.0, 4.0]))
    r = gn.loss_ratios(torch.tensor([0.5, 2.0, 2.0]))  # L~ = [0.5, 1, 0.5]
    torch.testing.assert_close(r, torch.tensor([0.75, 1.5, 0.75]))


def test_gradnorm_moves_weight_to_the_slow_task():
    """Task 0 is fit fast (a linear target), task 1 barely improves (mostly noise): task 1's
    weight must grow above 1 and task 0's fall, with sum w = 2 throughout. (With the mean loss
    ratio for every task, as in torch-rechub, the weights end near (0.71, 1.29) here: only the
    gradient norms are equalised.)"""
    torch.manual_seed(0)
    net, gn = TwoHeads(), GradNorm(2, alpha=1.5)
    x = torch.randn(256, 4)
    ys = [2 * x[:, 0] - x[:, 1], 0.2 * x[:, 2] + 3 * torch.randn(256)]
    opt = torch.optim.Adam(list(net.parameters()) + list(gn.parameters()), lr=1e-2)
    sums, first = [], None
    for _ in range(150):
        losses = net.losses(x, ys)
        first = losses.detach() if first is None else first
        loss, stats = gn(losses, [net.shared.weight])
        sums.append(stats["w_0"] + stats["w_1"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    gn.renormalise()
    ratio = losses.detach() / first
    assert ratio[0] < 0.3 * ratio[1]  # the set-up: task 0 learns much faster
    w = gn.weights.detach()
    assert w[1] > 1.7 and w[0] < 0.3
    assert float(w.sum()) == pytest.approx(2.0, rel=1e-6)
    assert sums == pytest.approx([2.0] * len(sums), rel=1e-6)


def test_gradnorm_equal_gradients_different_progress():
    """Two copies of one loss (equal G_i); only L_i(0) differs, so loss 1 has made less progress
    (r_1 > 1 > r_0): one step must move weight from loss 0 to loss 1 (a shared ratio would give
    L_grad = 0 and no step at all)."""
    torch.manual_seed(1)
    net, gn = TwoHeads(), GradNorm(2, alpha=1.5)
    gn.initial_losses.copy_(torch.tensor([4.0, 1.0]))
    x = torch.randn(16, 4)
    loss_a = net.losses(x, [x[:, 0], x[:, 0]])[0]
    loss, stats = gn(torch.stack([loss_a, loss_a]), [net.shared.weight])
    assert stats["G_0"] == pytest.approx(stats["G_1"], rel=1e-6) and stats["gradnorm_loss"] > 0
    loss.backward()
    torch.optim.SGD(gn.parameters(), lr=1.0).step()
    gn.renormalise()
    assert gn.weights[1] > 1.0 > gn.weights[0]


def test_gradnorm_in_evaluation_only_weights():
    net, gn = TwoHeads(), GradNorm(2)
    gn.eval()
    with torch.no_grad():
        gn.weights.copy_(torch.tensor([1.5, 1.5]))  # not normalised yet: used as 1, 1
        loss, stats = gn(net.losses(torch.randn(8, 4), [torch.zeros(8), torch.ones(8)]), [net.shared.weight])
    assert stats == {"w_0": 1.0, "w_1": 1.0}
    assert torch.all(gn.initial_losses < 0)  # nothing recorded outside training
    with pytest.raises(ValueError, match="2 losses"):
        gn(torch.ones(3), [net.shared.weight])
    with pytest.raises(ValueError, match="alpha"):
        GradNorm(2, alpha=-0.5)
