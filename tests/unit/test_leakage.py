"""No leakage, ever (DESIGN.md): labels of the evaluation day never appear in a graph, a feature
or a training sample the evaluated model saw, and a training positive's edge is not visible to
the message passing that scores it."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from ml_core import stages as P
from ml_core.batching import BatchMaker
from ml_core.contracts.day import DayContext
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.data.sources import profiles
from ml_core.graph.bipartite import build_bipartite
from ml_core.node_features import build_node_features


@pytest.fixture(scope="module")
def trained(synthetic_lake):
    cfg, lake, days = synthetic_lake
    eval_day = days[-1]
    P.run_trained_model(cfg, lake, eval_day, P.train_window_days(cfg, eval_day))
    manifest = json.loads((lake.partition_dir("trained_model", eval_day) / "manifest.json").read_text())
    return cfg, lake, days, eval_day, manifest


def _pairs(df: pl.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df["user_id"].to_list(), df["item_id"].to_list()))


def _graph_pairs(bip) -> dict[tuple[int, int], float]:
    rows = bip.user_ids[bip.ui.row_of_entries()]
    cols = bip.item_ids[np.asarray(bip.ui.indices)]
    return dict(zip(zip(rows.tolist(), cols.tolist()), np.asarray(bip.ui.weights).tolist()))


def test_model_inputs_are_all_from_days_before_the_evaluation_day(trained):
    cfg, lake, _, eval_day, manifest = trained
    assert manifest["train_days"] and all(d < eval_day for d in manifest["train_days"])
    for asset, versions in manifest["input_versions"].items():
        for d, version in versions.items():
            assert d < eval_day, (asset, d)
            assert lake.version(asset, d) == version  # exactly those stored partitions
    for d in manifest["train_days"]:
        assert (lake.read_table("training_samples", d)["ds"].cast(pl.Utf8) == d).all()


def test_graphs_and_features_never_contain_their_own_day_or_later(trained):
    cfg, lake, days, eval_day, manifest = trained
    eval_events = lake.read_table("interaction_logs", eval_day)
    for d in [*manifest["train_days"], eval_day]:
        bip = P.load_bipartite(lake, d)
        assert bip.days and all(x < d for x in bip.days)
        # the stored graph is exactly the graph of its window: rebuild it from those days only
        rebuilt = build_bipartite(lake.scan_tables("interaction_logs", bip.days), cfg.graph.behavior_weights, bip.days)
        assert _graph_pairs(bip) == _graph_pairs(rebuilt)
        # features equal the aggregates of the window (no day >= d)
        users, items = P.load_features(lake, d)
        up, ip = profiles(cfg.source)
        u2, i2 = build_node_features(lake.scan_tables("interaction_logs", bip.days), up, ip)
        assert users.equals(u2) and items.equals(i2)
    # an evaluation-day interaction that is new that day is in no graph the model saw
    seen_edges = set()
    for d in manifest["train_days"]:
        seen_edges |= set(_graph_pairs(P.load_bipartite(lake, d)))
    before = _pairs(lake.scan_tables("interaction_logs", [d for d in days if d < eval_day]).collect())
    new_on_eval_day = _pairs(eval_events) - before
    assert new_on_eval_day and not (new_on_eval_day & seen_edges)
    samples_seen = set()
    for d in manifest["train_days"]:
        samples_seen |= _pairs(lake.read_table("training_samples", d).filter(~pl.col("is_negative")))
    assert not (new_on_eval_day & samples_seen)


@pytest.mark.parametrize("mask", [False, True])
def test_training_positive_edge_not_visible_to_its_message_passing(trained, mask):
    cfg, lake, days, _, manifest = trained
    d = manifest["train_days"][-1]
    inputs = P.load_day_inputs(lake, d)
    spec = FeatureSpec.fit([inputs], list(cfg.samples.tasks))
    ctx = DayContext.build(inputs, spec, with_graph=True)
    maker = BatchMaker(ctx, [10, 5], need_graph=True, mask_target_edges=mask)
    day_pairs = _pairs(lake.read_table("interaction_logs", d))
    older = _pairs(lake.scan_tables("interaction_logs", [x for x in days if x < d]).collect())
    only_today = day_pairs - older
    pos_rows = np.flatnonzero(ctx.labels[:, 0] == 1)
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for start in range(0, len(pos_rows), 256):
        rows = pos_rows[start : start + 256]
        batch = maker.make(rows, gen)
        ch = batch.channels["bipartite"]
        # map sampled edges back to raw (user, item) pairs
        n_id = ch.n_id.numpy()
        nu = len(ctx.user_raw)
        is_item = n_id >= nu
        node_raw = np.where(is_item, ctx.item_raw[np.clip(n_id - nu, 0, None)], ctx.user_raw[np.minimum(n_id, nu - 1)])
        src, dst = ch.edge_index.numpy()
        ui = [(node_raw[a], node_raw[b]) if not is_item[a] else (node_raw[b], node_raw[a]) for a, b in zip(src, dst)]
        sampled = set(ui)
        batch_pairs = set(zip(ctx.sample_user_raw[rows].tolist(), ctx.item_raw[ctx.sample_item[rows]].tolist()))
        assert not (sampled & only_today)  # the day's own interactions are never message-passing edges
        if mask:
            assert not (sampled & batch_pairs)  # with masking, not even older edges of the same pairs
        checked += len(sampled)
    assert checked > 0



def test_lightgode_inference_graph_has_no_evaluation_day_edge(synthetic_lake):
    """LightGODE's inference ODE runs over graph[D] of the scored day D (as evaluation builds it):
    every edge of it is a pair seen before D, and no pair that is new on day D is among them."""
    from ml_core.contracts.spec import ModelSpec
    from ml_core.inference import inference_needs_graph, predict
    from ml_core.models.lightgode import LightGODE
    from ml_core.nn.graph_ode import graph_ode
    from ml_core.nn.id_graph import id_adjacency, stack_rows

    cfg, lake, days = synthetic_lake
    eval_day = days[-1]
    inputs = P.load_day_inputs(lake, eval_day)
    spec = FeatureSpec.fit([inputs], list(cfg.samples.tasks))  # the day's own ids are all known: strictest
    mspec = ModelSpec.from_feature_spec(spec, 8, [3, 3])
    model = LightGODE(mspec)
    assert inference_needs_graph(model)  # so evaluation and serving build the day's context with its graphs
    ctx = DayContext.build(inputs, spec, with_graph=True)
    predict(model, ctx, [3, 3])
    nu, ni = mspec.user.n_ids, mspec.item.n_ids
    adj = id_adjacency([ctx], nu, ni).adj
    e0 = torch.nn.functional.normalize(stack_rows((model.user_enc.id_emb, model.item_enc.id_emb)), dim=-1)
    torch.testing.assert_close(model._day_emb, graph_ode(e0, adj, model.T))  # the ODE read exactly this graph
    # id row -> raw id, from the context's node tables
    u_raw = dict(zip(ctx.users.ids.numpy().tolist(), ctx.user_raw.tolist()))
    i_raw = dict(zip(ctx.items.ids.numpy().tolist(), ctx.item_raw.tolist()))
    crow, col = adj.crow_indices().numpy(), adj.col_indices().numpy()
    rows = np.repeat(np.arange(nu + ni), np.diff(crow))
    ui = (rows < nu) & (col >= nu)
    used = {(u_raw[r], i_raw[c - nu]) for r, c in zip(rows[ui].tolist(), col[ui].tolist())}
    before = _pairs(lake.scan_tables("interaction_logs", [d for d in days if d < eval_day]).collect())
    new_on_eval_day = _pairs(lake.read_table("interaction_logs", eval_day)) - before
    assert used and used <= before
    users, items = set(u_raw.values()), set(i_raw.values())
    known = {(u, i) for u, i in new_on_eval_day if u in users and i in items}
    assert known and not (known & used)
