"""The MoGE paper's baselines (section 5.2): single-task MLP / NGCF, the multi-task bodies and their
"+Graph" variants. Tiny random subgraphs for the algebra, a small planted dataset for real batches
for the NGCF propagation. The contract every model keeps (shapes, gradients, priors, save/load):
tests/unit/models/test_contract.py; learning the planted signal: tests/unit/models/test_zoo.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import bce_per_task
from ml_core.models.baselines import (
    ESMM,
    CrossStitch,
    CrossStitchUnit,
    logit_of_product,
)
from ml_core.models.inputs import FeatureInput, GraphInput
from ml_core.models.mmoe import MMoE
from ml_core.models.registry import MODELS, available_models, build_model
from ml_core.models.routing import CGC, SNRTrans
from ml_core.models.single_task import NGCF
from ml_core.nn.dense import HardConcreteGate
from tests.helpers import SPEC, planted_day, random_batch

BASES = ("shared_bottom", "cross_stitch", "esmm", "mmoe", "snr_trans", "cgc")
GRAPH = tuple(f"{b}_graph" for b in BASES)
SINGLE = ("mlp", "ngcf")
MINE = SINGLE + BASES + GRAPH
RATES = torch.tensor([0.3, 0.12])


def test_every_baseline_is_registered_with_the_right_input():
    names = set(available_models())
    assert set(MINE) <= names
    for b in BASES:
        base, graph = MODELS[b], MODELS[f"{b}_graph"]
        assert issubclass(base, FeatureInput) and not issubclass(base, GraphInput) and not base.graph_needs.subgraphs
        assert issubclass(graph, GraphInput) and issubclass(graph, base) and graph.graph_needs.subgraphs
        assert graph.registry_name == f"{b}_graph" and base.registry_name == b
    assert MODELS["ngcf"].graph_needs.subgraphs and not MODELS["mlp"].graph_needs.subgraphs


# -- priors (shapes, gradients, silent-head priors and save/load: tests/unit/models/test_contract.py) --
def test_esmm_cvr_head_prior():
    model = ESMM(SPEC)
    model.set_task_priors(RATES)
    biases = torch.stack([t[-1].bias[0] for t in model.towers.towers])
    torch.testing.assert_close(biases, torch.logit(torch.tensor([0.3, 0.12 / 0.3])))


# -- single-task models: no parameter shared between tasks ------------------------------------------
@pytest.mark.parametrize("name", SINGLE)
def test_single_task_models_are_independent_per_task(name):
    torch.manual_seed(0)
    batch = random_batch()
    reached = []
    for k in range(SPEC.n_tasks):
        model = build_model(name, SPEC)
        logits = model(batch)
        bce_per_task(logits, batch.labels)[k].backward()
        reached.append({n for n, p in model.named_parameters() if p.grad is not None and torch.any(p.grad != 0)})
    all_params = {n for n, _ in build_model(name, SPEC).named_parameters()}
    assert reached[0] and reached[1]
    assert reached[0].isdisjoint(reached[1])  # task 0's loss never reaches a parameter task 1's loss reaches
    assert reached[0] | reached[1] == all_params  # and every parameter belongs to one task


# -- ESMM ---------------------------------------------------------------------------------------------
def test_esmm_task1_probability_is_pctr_times_pcvr():
    torch.manual_seed(0)
    model = ESMM(SPEC).eval()
    batch = random_batch()
    with torch.no_grad():
        for p in model.parameters():  # spread the logits so the product is not ~rate^2 everywhere
            p.mul_(3.0)
        a = model.tower_logits(batch)  # [B, 2]
        probs = torch.sigmoid(model(batch))
    assert a.std(0).min() > 0.1
    torch.testing.assert_close(probs[:, 0], torch.sigmoid(a[:, 0]))
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(a[:, 0]) * torch.sigmoid(a[:, 1]))


def test_esmm_more_tasks_condition_each_conversion_on_the_click():
    spec = ModelSpec(["click", "cart", "purchase"], SPEC.user, SPEC.item, dim=16, fanouts=[4, 3])
    torch.manual_seed(0)
    model = ESMM(spec, tower_hidden=[16]).eval()
    model.set_task_priors(torch.tensor([0.4, 0.2, 0.1]))
    batch = random_batch(spec)
    with torch.no_grad():
        a, probs = model.tower_logits(batch), torch.sigmoid(model(batch))
    torch.testing.assert_close(probs[:, 2], torch.sigmoid(a[:, 0]) * torch.sigmoid(a[:, 2]))
    biases = torch.stack([t[-1].bias[0] for t in model.towers.towers])
    torch.testing.assert_close(biases, torch.logit(torch.tensor([0.4, 0.5, 0.25])))


def test_logit_of_product_is_exact_and_stable():
    a = torch.linspace(-30, 30, 41, dtype=torch.float64)
    A, B = torch.meshgrid(a, a, indexing="ij")
    p = torch.sigmoid(A) * torch.sigmoid(B)
    ok = (p > 1e-8) & (p < 1 - 1e-8)  # where the direct float64 reference is itself accurate
    torch.testing.assert_close(logit_of_product(A, B)[ok], torch.logit(p)[ok], rtol=1e-6, atol=1e-7)
    extreme = torch.tensor([[80.0, 80.0], [-80.0, 80.0], [80.0, -80.0], [-80.0, -80.0], [20.0, 20.0]])
    out = logit_of_product(extreme[:, 0], extreme[:, 1])  # float32: the product rounds to 1 or 0
    assert torch.isfinite(out).all()
    assert out[0] > 70 and out[1] < -70 and out[2] < -70 and out[3] < -150
    torch.testing.assert_close(out[4], torch.tensor(20.0 - np.log(2.0), dtype=torch.float32), atol=1e-3, rtol=0)


# -- Cross-Stitch -------------------------------------------------------------------------------------
def test_cross_stitch_initial_mixing():
    model = CrossStitch(SPEC)
    for stitch in model.stitches:
        torch.testing.assert_close(stitch.alpha.detach(), torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    three = CrossStitchUnit(3, init_self=0.8)
    torch.testing.assert_close(three.alpha.detach().sum(1), torch.ones(3))
    torch.testing.assert_close(three.alpha.detach().diagonal(), torch.full((3,), 0.8))
    h = torch.randn(3, 5, 4)
    torch.testing.assert_close(three(h)[1], 0.1 * h[0] + 0.8 * h[1] + 0.1 * h[2])
    with pytest.raises(ValueError, match="init_self"):
        CrossStitch(SPEC, init_self=1.5)


def test_cross_stitch_with_identity_mixing_is_independent_columns():
    torch.manual_seed(0)
    model = CrossStitch(SPEC, init_self=1.0)
    batch = random_batch()
    model(batch)[:, 0].sum().backward()
    assert all(p.grad is None or not torch.any(p.grad != 0) for p in model.columns[0][1].parameters())  # task 1's
    assert all(torch.any(p.grad != 0) for p in model.columns[0][0].parameters())
    assert torch.any(model.stitches[0].alpha.grad[0, 1] != 0)  # the mixing itself still learns


# -- SNR-Trans and CGC gates ------------------------------------------------------------------------
def test_cgc_gates_sum_to_one_over_own_and_shared_experts():
    torch.manual_seed(0)
    model = CGC(SPEC, n_shared=2, n_specific=1)
    _, gates = model.forward_with_gates(random_batch())  # [K, B, 4]: shared 0, 1; task 0: 2; task 1: 3
    assert gates.shape == (2, 24, 4)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 24))
    assert torch.all(gates[0, :, 3] == 0) and torch.all(gates[1, :, 2] == 0)
    assert torch.all(gates[0, :, :3] > 0) and torch.all(gates[1, :, [0, 1, 3]] > 0)


def test_cgc_without_specific_experts_is_mmoe():
    torch.manual_seed(0)
    mmoe = MMoE(SPEC, n_experts=3)
    cgc = CGC(SPEC, n_shared=3, n_specific=0)
    cgc.load_state_dict(mmoe.state_dict())  # same parameter names and shapes
    batch = random_batch()
    torch.testing.assert_close(cgc(batch), mmoe(batch))


def test_snr_codes_are_binaryish_and_transforms_train():
    torch.manual_seed(0)
    model = SNRTrans(SPEC, n_experts=3)
    assert any(p is model.transforms for p in model.parameters())  # a registered parameter, not a list
    model.train()
    draws = torch.stack([model.codes() for _ in range(200)])  # [200, K, N]
    assert draws.min() >= 0 and draws.max() <= 1
    assert (draws == 0).any() and (draws == 1).any()  # hard concrete reaches exact 0 and 1
    model.eval()
    torch.testing.assert_close(model.codes(), model.codes())
    batch = random_batch()
    logits, loss, parts = model.compute_loss(batch)
    assert "l0" in parts
    loss.backward()
    assert model.transforms.grad is not None and torch.any(model.transforms.grad != 0)
    assert model.code.log_alpha.grad is not None and torch.any(model.code.log_alpha.grad != 0)


def test_snr_closed_codes_cut_the_expert():
    """An expert whose code is 0 for every task cannot influence any output."""
    torch.manual_seed(0)
    model = SNRTrans(SPEC, n_experts=3).eval()
    with torch.no_grad():
        model.code.log_alpha[:, 1] = -20.0  # z = clamp(sigmoid(-20) * 1.2 - 0.1) = 0
    assert torch.all(model.codes()[:, 1] == 0)
    model(random_batch()).sum().backward()
    assert all(p.grad is None or not torch.any(p.grad != 0) for p in model.experts[1].parameters())


def test_hard_concrete_gate_l0_and_arguments():
    gate = HardConcreteGate((2, 3))
    low = gate.expected_l0()
    with torch.no_grad():
        gate.log_alpha.fill_(3.0)
    assert gate.expected_l0() > low and gate.expected_l0() <= 6
    gate.eval()
    assert torch.all(gate() == 1.0)
    with pytest.raises(ValueError, match="gamma"):
        HardConcreteGate((2,), gamma=0.1)


# -- "+Graph" variants ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRAPH)
def test_graph_variant_gradients_reach_the_mgnn(name):
    torch.manual_seed(0)
    model = build_model(name, SPEC)
    assert model.mgnn.encoders == (model.user_enc, model.item_enc)  # shared P, Q (as MoGE)
    logits = model(random_batch())
    logits.sum().backward()
    mgnn_params = list(model.mgnn.named_parameters())
    assert mgnn_params and all(n.startswith("layers.") for n, _ in mgnn_params)  # P, Q are the model's
    dead = [n for n, p in mgnn_params if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []
    assert torch.any(model.user_enc.id_emb.weight.grad != 0)


def test_graph_input_reads_the_mgnn_not_the_features():
    """The graph variant's output depends on the sampled neighbours; the base model's does not."""
    torch.manual_seed(0)
    graph, base = build_model("mmoe_graph", SPEC).eval(), build_model("mmoe", SPEC).eval()
    batch, other = random_batch(seed=0), random_batch(seed=0)
    other.channels["bipartite"].edge_index = random_batch(seed=5).channels["bipartite"].edge_index
    assert not torch.allclose(graph(batch), graph(other))
    torch.testing.assert_close(base(batch), base(other))


def test_graph_features_option():
    model = build_model("cgc_graph", SPEC, {"graph_features": ["p_u", "q_i", "h_u"]})
    assert model.moe.experts[0][0].in_features == 3 * SPEC.dim
    assert model(random_batch()).shape == (24, 2)
    with pytest.raises(ValueError, match="graph_features"):
        build_model("cgc_graph", SPEC, {"graph_features": ["h_x"]})


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="unknown key train.model_args.layers"):
        build_model("mmoe", SPEC, {"layers": 2})  # MGNN option on a feature-input model
    with pytest.raises(ValueError, match="conversion"):
        ESMM(ModelSpec(["click"], SPEC.user, SPEC.item, dim=16))
    with pytest.raises(ValueError, match="n_shared"):
        CGC(SPEC, n_shared=0, n_specific=0)
    with pytest.raises(ValueError, match="layers"):
        NGCF(SPEC, layers=3)
    with pytest.raises(ValueError, match="exceeds"):
        build_model("snr_trans_graph", SPEC, {"layers": 3})
    with pytest.raises(ValueError, match="layer sizes"):
        build_model("shared_bottom", SPEC, {"bottom_hidden": [0]})
    with pytest.raises(ValueError, match="l0"):
        SNRTrans(SPEC, l0=-1.0)


# -- NGCF propagation ---------------------------------------------------------------------------------
def _dense_ngcf(model: NGCF, net, ch) -> torch.Tensor:
    """Reference: every layer over every node of the subgraph with a dense row-normalised adjacency."""
    seeds = torch.cat([ch.seed_user, ch.seed_item])
    n = ch.num_nodes
    adj = torch.zeros(n, n).index_put_((ch.edge_index[1], ch.edge_index[0]), torch.ones(ch.edge_index.shape[1]),
                                       accumulate=True)
    adj = adj / adj.sum(1, keepdim=True).clamp(min=1)  # rho_ij = 1 / |N_s(i)|
    h = net.initial(ch)
    outs = [h[seeds]]
    for layer in net.layers:
        m = adj @ h
        h = torch.nn.functional.leaky_relu(layer.w1(h + m) + layer.w2(m * h), layer.negative_slope)
        outs.append(torch.nn.functional.normalize(h[seeds], dim=-1))
    return torch.cat(outs, dim=-1)


@pytest.fixture(scope="module")
def planted_small():
    planted = planted_day(seed=0, n_users=80, n_items=20, rows=np.arange(40))
    return planted.fspec, planted.mspec, planted.batch


@pytest.mark.parametrize("source", ["random", "sampled"])
def test_ngcf_layer_plan_matches_dense_propagation(source, planted_small):
    torch.manual_seed(0)
    if source == "random":  # seeds not first in node order: the re-indexing path of layer_plan
        spec, batch = SPEC, random_batch()
    else:  # the sampler's hop-ordered subgraph: the prefix path
        _, spec, batch = planted_small
    model = NGCF(spec).eval()
    ch = batch.channels["bipartite"]
    for net in model.nets:
        got = net(ch, *model.propagation_plan(ch))
        torch.testing.assert_close(got, _dense_ngcf(model, net, ch), atol=1e-5, rtol=1e-4)
