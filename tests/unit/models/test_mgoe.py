"""MGOE (ml_core/models/mgoe.py): macro graph construction, k-means, cold users, save/load.

A hand-made day (5 users, 5 items, 3 categories) for the macro graph; random batches for shapes
and gradients.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from ml_core.contracts.batch import Batch, NodeTable
from ml_core.contracts.day import DayContext, DayInputs
from ml_core.contracts.spec import ModelSpec, SideShape
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.models.mgoe import MGOE, kmeans
from ml_core.models.registry import build_model
from tests.helpers import TASKS, random_feature_batch

SPEC = ModelSpec(TASKS, SideShape(40, [3], 2, ["u_cat_a"]), SideShape(30, [4, 6], 1, ["category", "i_cat_brand"]), dim=8)

# (user, item, click, purchase); item -> raw category: 100, 101 -> 0; 102, 104 -> 1; 103 -> 2
SAMPLES = [
    (10, 100, 1, 1), (10, 101, 1, 0), (10, 102, 0, 0),
    (11, 100, 1, 0), (11, 103, 0, 0),
    (12, 102, 1, 1), (12, 103, 1, 0), (12, 104, 1, 1),
    (13, 104, 1, 0), (13, 100, 0, 0),
    (14, 101, 0, 0), (14, 102, 0, 0),  # user 14: no positive -> cold cluster
]
ITEM_CATEGORY = {100: 0, 101: 0, 102: 1, 103: 2, 104: 1}


def hand_made_day() -> DayInputs:
    u, i, c, p = (list(x) for x in zip(*SAMPLES))
    samples = pl.DataFrame({"user_id": u, "item_id": i, "label_click": c, "label_purchase": p})
    users = pl.DataFrame({"user_id": [10, 11, 12, 13, 14, 15], "u_num_x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    items = pl.DataFrame({"item_id": list(ITEM_CATEGORY), "category": list(ITEM_CATEGORY.values()),
                          "i_cat_brand": [3, 1, 0, 2, 1], "i_num_price": [1.0, 2.0, 3.0, 4.0, 5.0]})
    return DayInputs("2026-01-01", samples, users, items)


def prepared(day: DayInputs, **args):
    fspec = FeatureSpec.fit([day], TASKS)
    mspec = ModelSpec.from_feature_spec(fspec, 8, [2])
    model = MGOE(mspec, **args)
    ctx = DayContext.build(day, fspec, with_graph=False)
    model.prepare([ctx])
    return model, fspec, mspec, ctx


def row_of(fspec: FeatureSpec, raw_user: int) -> int:
    return int(np.searchsorted(fspec.user.ids, raw_user)) + 1


def random_fit(model: MGOE, n: int = 400, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(1, model.spec.user.n_ids, (n,), generator=g)
    codes = torch.randint(0, model.spec.item.cat_sizes[model.category_index], (n,), generator=g)
    labels = (torch.rand(n, model.spec.n_tasks, generator=g) < 0.4).float()
    model.fit_macro_graph(rows, codes, labels)


def fitted_with_batch() -> tuple[MGOE, Batch]:
    """A 4-cluster MGOE on the random spec, its macro graph fitted on random samples, and a batch."""
    torch.manual_seed(0)
    model = MGOE(SPEC, n_clusters=4)
    random_fit(model)
    return model, random_feature_batch(SPEC)


# -- shapes, gradients, arguments ---------------------------------------------------------------------
def test_macro_embeddings_and_loss_parts():
    """(Gradients to every parameter and save/load: tests/unit/models/test_contract.py.)"""
    model, batch = fitted_with_batch()
    assert model.macro_embeddings(batch).shape == (2, 32, 8)
    logits, loss, parts = model.compute_loss(batch)
    assert logits.shape == (32, 2) and set(parts) == {"bce_0", "bce_1"}


def test_macro_neighbours_receive_gradient_through_the_attention():
    model, batch = fitted_with_batch()
    batch.item.cats[:, 0] = 1  # every sample's category is slot 1
    batch.user.ids[:] = int(torch.nonzero(model.user_cluster == 0)[0])  # every user in cluster 0
    model.compute_loss(batch)[1].backward()
    # other slots / clusters are only reached as macro neighbours
    assert model.category_emb.grad[:, [0, 2, 3]].abs().sum(-1).gt(0).all()
    assert model.cluster_emb.grad[:, 1:].abs().sum(-1).gt(0).all()


def test_category_column_selection_and_bad_arguments():
    assert MGOE(SPEC).category_index == 0
    assert MGOE(SPEC, category="i_cat_brand").category_index == 1
    assert MGOE(SPEC, category=1).n_macro_items == 6
    spec_b = ModelSpec(TASKS, SPEC.user, SideShape(30, [5, 4], 0, ["i_cat_a", "category"]), dim=8)
    assert MGOE(spec_b).category_index == 1  # "category" wins over the first column
    nameless = ModelSpec(TASKS, SPEC.user, SideShape(30, [5, 4], 0), dim=8)
    assert MGOE(nameless).category_index == 0
    with pytest.raises(ValueError, match="names unknown"):
        MGOE(nameless, category="category")
    no_cats = ModelSpec(TASKS, SPEC.user, SideShape(30, [], 3), dim=8)
    with pytest.raises(ValueError, match="needs an item categorical column"):
        MGOE(no_cats)
    with pytest.raises(ValueError, match="not an item categorical column"):
        MGOE(SPEC, category="brand")
    for bad in ({"category": 2}, {"n_clusters": 0}, {"max_categories": 1}, {"edge_weight": "sqrt"}):
        with pytest.raises(ValueError):
            MGOE(SPEC, **bad)


# -- macro graph ------------------------------------------------------------------------------------------
def test_macro_graph_edges_equal_a_direct_count():
    model, fspec, _, _ = prepared(hand_made_day(), n_clusters=2)
    cl = {u: int(model.user_cluster[row_of(fspec, u)]) for u in (10, 11, 12, 13, 14)}
    a, b = cl[10], cl[12]
    assert a != b and cl[11] == a and cl[13] == b and cl[14] == 2  # 14: no positive -> cold cluster C = 2
    # slots: raw category r -> code r + 1 (0 = unknown); 4 codes <= max_categories -> identity
    assert model.category_slot.tolist() == [0, 1, 2, 3]
    expected = torch.zeros(2, 3, 4)
    expected[0, a, 1] = 3  # click: (10,100) (10,101) (11,100)
    expected[0, b, 2] = 3  # click: (12,102) (12,104) (13,104)
    expected[0, b, 3] = 1  # click: (12,103)
    expected[1, a, 1] = 1  # purchase: (10,100)
    expected[1, b, 2] = 2  # purchase: (12,102) (12,104)
    expected[:, 2] = expected[:, :2].sum(1)  # cold row: the population's profile
    assert torch.equal(model.macro_graph, expected)
    # the same by a loop over the samples with the model's own assignment
    direct = torch.zeros(2, 3, 4)
    for u, i, *ys in SAMPLES:
        for k, y in enumerate(ys):
            direct[k, cl[u], ITEM_CATEGORY[i] + 1] += y
    direct[:, 2] = direct[:, :2].sum(1)
    assert torch.equal(model.macro_graph, direct)


def test_category_column_choice_changes_the_macro_items():
    model, fspec, _, _ = prepared(hand_made_day(), n_clusters=2, category="i_cat_brand")
    assert model.n_macro_items == 5  # brands 0..3 -> codes 1..4, + unknown
    # brand codes: 100 -> 4, 101 -> 2, 102 -> 1, 103 -> 3, 104 -> 2; positives per brand slot
    assert model.macro_graph[0, :2].sum(0).tolist() == [0, 1, 3, 1, 2]
    assert model.macro_graph[1, :2].sum(0).tolist() == [0, 1, 1, 0, 1]


def test_rare_categories_share_slot_zero_when_capped():
    model = MGOE(ModelSpec(TASKS, SPEC.user, SideShape(30, [6], 0, ["category"]), dim=8), max_categories=3)
    codes = torch.tensor([4, 4, 4, 4, 4, 2, 2, 2, 5, 5, 5, 1, 0, 0, 0, 0, 0, 0])
    model.fit_macro_graph(torch.ones(len(codes), dtype=torch.long), codes, torch.ones(len(codes), 2))
    # code 4 is most frequent, codes 2 and 5 tie (lower code first); 0 (unknown) never gets a slot
    assert model.category_slot.tolist() == [0, 0, 2, 0, 1, 0]
    assert model.macro_graph.shape == (2, 21, 3)


def test_own_label_is_left_out_of_its_edges_in_training_only():
    model, fspec, _, ctx = prepared(hand_made_day(), n_clusters=2)
    from ml_core.batching import BatchMaker

    j = [s[:2] for s in SAMPLES].index((12, 103))  # the only click between its cluster and category 2
    batch = BatchMaker(ctx, [2], need_graph=False).make(np.array([j]))
    c, m = model.macro_nodes(batch)
    ci, mi, cold = int(c[0]), int(m[0]), model.n_clusters
    model.train()
    w_c, w_m = model.macro_edges(batch, c, m)
    # click edge (cluster, category 2) and the cold row's copy of it: 1 -> 0
    assert float(w_c[0, 0, mi]) == 0 and float(w_m[0, 0, ci]) == 0 and float(w_m[0, 0, cold]) == 0
    assert float(w_c[0, 0, 2]) == 3  # the cluster's other click edges are untouched
    assert float(w_c[1, 0, mi]) == 0 and float(w_c[1, 0, 2]) == 2  # not bought: purchase edges unchanged
    model.eval()
    w_c, w_m = model.macro_edges(batch, c, m)
    assert float(w_c[0, 0, mi]) == 1 and float(w_m[0, 0, ci]) == 1 and float(w_m[0, 0, cold]) == 1


# -- k-means -----------------------------------------------------------------------------------------------
def separable(seed: int = 0, n: int = 30) -> tuple[torch.Tensor, np.ndarray]:
    """Three groups of count profiles over 12 categories, each group on its own 4 categories."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(3), n)
    x = rng.poisson(0.1, (3 * n, 12)).astype(np.float64)
    for g in range(3):
        x[group == g, 4 * g : 4 * g + 4] += rng.poisson(3.0, ((group == g).sum(), 4)) + 1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x), group


def test_kmeans_is_deterministic_given_the_seed_and_recovers_separable_groups():
    x, group = separable()
    a1, c1 = kmeans(x, 3, seed=7)
    a2, c2 = kmeans(x.to_sparse(), 3, seed=7)  # sparse input: same result
    assert torch.equal(a1, a2) and torch.allclose(c1, c2)
    for seed in (0, 1, 2):
        a = kmeans(x, 3, seed=seed)[0].numpy()
        # one cluster per group, three distinct clusters
        assert all(len(set(a[group == g])) == 1 for g in range(3)) and len(set(a)) == 3


def test_kmeans_surplus_clusters_stay_empty_and_centroids_are_means():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    a, c = kmeans(x, 5, seed=0)
    assert len(set(a.tolist())) == 2 and a[0] == a[1] != a[2]
    assert torch.allclose(c[a[0]], torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_model_clusters_are_deterministic_given_the_seed():
    day = hand_made_day()
    m1, _, _, _ = prepared(day, n_clusters=3, seed=4)
    m2, _, _, _ = prepared(day, n_clusters=3, seed=4)
    assert torch.equal(m1.user_cluster, m2.user_cluster) and torch.equal(m1.macro_graph, m2.macro_graph)
    model = MGOE(SPEC, n_clusters=5, seed=3)
    random_fit(model)
    again = MGOE(SPEC, n_clusters=5, seed=3)
    random_fit(again)
    assert torch.equal(model.user_cluster, again.user_cluster)
    assert len(set(model.user_cluster.tolist())) > 2


# -- cold users ---------------------------------------------------------------------------------------------
def test_unseen_users_get_the_cold_cluster_and_the_population_profile():
    model, fspec, _, ctx = prepared(hand_made_day(), n_clusters=2)
    C = model.n_clusters
    assert int(model.user_cluster[0]) == C  # unknown id row
    assert int(model.user_cluster[row_of(fspec, 15)]) == C  # has features, no training sample
    assert int(model.user_cluster[row_of(fspec, 14)]) == C  # only negatives
    assert torch.equal(model.macro_graph[:, C], model.macro_graph[:, :C].sum(1))
    # an unknown user and a known user without positives have the same macro embedding for an item
    model.eval()
    item = ctx.items[torch.tensor([2, 2])]
    batch = Batch(torch.zeros(2, 2), NodeTable(torch.tensor([0, row_of(fspec, 14)]), torch.zeros(2, 0, dtype=torch.long),
                                               torch.zeros(2, 1)), item, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    z = model.macro_embeddings(batch)
    assert torch.allclose(z[:, 0], z[:, 1])
    # and its neighbourhood is not empty: the cold row has edges
    c, m = model.macro_nodes(batch)
    assert float(model.macro_edges(batch, c, m)[0][:, 0].sum()) > 0


# -- the macro state -----------------------------------------------------------------------------------------
def test_macro_state_changes_the_outputs():
    """The macro buffers are state (saved and restored: tests/unit/models/test_contract.py) that
    the outputs depend on: the same parameters without them score differently."""
    day = hand_made_day()
    model, fspec, mspec, ctx = prepared(day, n_clusters=2, category="category")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    from ml_core.batching import BatchMaker

    batch = BatchMaker(ctx, [2], need_graph=False).make(np.arange(ctx.n_samples))
    before = model(batch)
    assert float(model.macro_graph.sum()) > 0 and int((model.user_cluster < 2).sum()) == 4
    fresh = build_model("mgoe", mspec, {"n_clusters": 2, "category": "category"}).eval()
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("user_cluster", "macro_graph")}, strict=False)
    assert not torch.allclose(fresh(batch), before)  # the macro state matters: without it outputs differ
