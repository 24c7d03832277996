"""Warm start (ml_core/train/warm.py): a model of an earlier window starts the next one when
compatible; vocabularies grow (known rows kept bit for bit, new rows a fresh model's), the
numeric standardisation is re-fitted and folded, so the start computes the previous model's
function; any incompatible change trains from scratch and says why."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from ml_core.config import TrainConfig
from ml_core.contracts.day import DayContext
from ml_core.graph.csr import lookup
from ml_core.inference import inference_needs_graph, predict
from ml_core.models.registry import available_models, model_class
from ml_core.registry.bundles import save_model
from ml_core.train.start import fresh_model
from ml_core.train.trainer import train
from ml_core.train.warm import OPTIMIZER_FILE, WarmStart
from tests.helpers import TASKS
from tests.planted import planted_days

BASE = TrainConfig(model="moge", epochs=1, batch_size=64, dim=8, fanouts=[3, 2], threads=1, prefetch=0,
                   validation="none", max_steps_per_epoch=5)


@pytest.fixture(scope="module")
def growing():
    """Day A: 150 users, 20 items, category codes 0/1, and a graph among them only (so scoring A
    reads known ids alone); day B: 240 users and 30 items (new ids) with new codes (users > 200:
    5, items > 25: 7) and other numeric values, so every vocabulary grows and the standardisation moves."""
    day_a, _ = planted_days(seed=0, n_users=150, n_items=20, split="samples")
    _, b = planted_days(seed=1, n_users=240, n_items=30, split="samples")
    code = lambda col, idc, above, new: pl.when(pl.col(idc) > above).then(new).otherwise(pl.col(col)).alias(col)
    day_b = dataclasses.replace(b, users=b.users.with_columns(code("u_cat_code", "user_id", 200, 5)),
                                items=b.items.with_columns(code("i_cat_code", "item_id", 25, 7)))
    return day_a, day_b


def saved(tmp_path, res, cfg, name="prev") -> WarmStart:
    """``res`` written as a model directory (as the trained_model stage writes it)."""
    d = tmp_path / name
    save_model(d, res.model, res.model_name, res.model_args, res.model_spec, res.feature_spec,
               extra={"train_config": dataclasses.asdict(cfg)})
    if res.optimizer_state is not None:
        torch.save(res.optimizer_state, d / OPTIMIZER_FILE)
    return WarmStart(d, "2026-01-01", "v-prev")


def scores(res, day, seed=3) -> np.ndarray:
    ctx = DayContext.build(day, res.feature_spec, with_graph=inference_needs_graph(res.model))
    return predict(res.model, ctx, res.model_spec.fanouts, batch_size=128, seed=seed, prefetch=0)


def rows_of(spec_side, ids) -> torch.Tensor:
    return torch.from_numpy(lookup(spec_side.ids, np.asarray(ids)) + 1)


def test_warm_start_keeps_known_rows_bit_for_bit_and_trains_new_ones(growing, tmp_path):
    day_a, day_b = growing
    prev = train([day_a], BASE, TASKS)
    warm = saved(tmp_path, prev, BASE)
    start = train([day_b], dataclasses.replace(BASE, epochs=0), TASKS, warm=warm)  # initialised, not trained
    assert start.init == {"mode": "warm", "from": "2026-01-01", "from_version": "v-prev", "reason": "",
                          "grown": start.init["grown"]}
    assert start.init["grown"]["user_ids"] == {"kept": 150, "new": 90}
    assert start.init["grown"]["u_cat_code"] == {"kept": 2, "new": 1} and start.init["grown"]["i_cat_code"]["new"] == 1
    fresh, _ = fresh_model(BASE, start.feature_spec)
    old_state, new_state, fresh_state = prev.model.state_dict(), start.model.state_dict(), fresh.state_dict()
    for side, enc in (("user", "user_enc"), ("item", "item_enc")):
        o, n = getattr(prev.feature_spec, side), getattr(start.feature_spec, side)
        known = rows_of(n, o.ids)
        new = torch.from_numpy(np.setdiff1d(np.arange(1, n.n_ids), known.numpy()))
        assert len(new) > 0
        tables = [(f"{enc}.id_emb.weight", known, torch.arange(1, o.n_ids))]
        tables += [(f"{enc}.cat_embs.{j}.weight", rows_of_vocab(n.cat_vocabs[j], o.cat_vocabs[j]),
                    torch.arange(1, len(o.cat_vocabs[j]) + 1)) for j in range(len(n.cats))]
        for key, new_rows, old_rows in tables:
            assert torch.equal(new_state[key][new_rows], old_state[key][old_rows]), key  # known: bit for bit
            assert torch.equal(new_state[key][0], old_state[key][0]), key  # unknown row
            grown = torch.from_numpy(np.setdiff1d(np.arange(1, new_state[key].shape[0]), new_rows.numpy()))
            assert torch.equal(new_state[key][grown], fresh_state[key][grown]), key  # new: a fresh model's rows
    assert start.feature_spec.user.num_mean != prev.feature_spec.user.num_mean  # re-fitted, and folded:
    np.testing.assert_allclose(scores(start, day_a), scores(prev, day_a), rtol=0, atol=2e-6)  # the same function
    # a few steps train the new rows
    trained = train([day_b], BASE, TASKS, warm=warm)
    for enc, side in (("user_enc", "user"), ("item_enc", "item")):
        key = f"{enc}.id_emb.weight"
        n = getattr(start.feature_spec, side)
        new = torch.from_numpy(np.setdiff1d(np.arange(1, n.n_ids), rows_of(n, getattr(prev.feature_spec, side).ids).numpy()))
        moved = (trained.model.state_dict()[key][new] != new_state[key][new]).any(dim=1).float().mean()
        assert moved > 0.5, (key, float(moved))


def rows_of_vocab(new_vocab, old_vocab) -> torch.Tensor:
    return torch.from_numpy(lookup(new_vocab, old_vocab) + 1)


@pytest.mark.parametrize("name", available_models())
def test_every_model_warm_starts_or_says_why_not(name, growing, tmp_path):
    """Every registered model either starts from its previous weights with the previous model's
    function on known inputs, or declares why it cannot (RecModel.warm_start_blocker)."""
    day_a, day_b = growing
    cfg = dataclasses.replace(BASE, model=name, max_steps_per_epoch=2)
    prev = train([day_a], cfg, TASKS)
    start = train([day_b], dataclasses.replace(cfg, epochs=0), TASKS, warm=saved(tmp_path, prev, cfg))
    blocker = model_class(name).warm_start_blocker
    if blocker:
        assert start.init["mode"] == "scratch" and start.init["reason"] == f"incompatible: {blocker}"
        return
    assert start.init["mode"] == "warm", start.init
    np.testing.assert_allclose(scores(start, day_a), scores(prev, day_a), rtol=0, atol=2e-6)


def _drop_item_noise(day):
    return dataclasses.replace(day, items=day.items.drop("i_num_noise"))


@pytest.mark.parametrize("change, expect", [
    ({"model_args": {"n_experts": 2}}, "incompatible: model_args {} -> {'n_experts': 2}"),
    ({"dim": 12}, "incompatible: dim 8 -> 12"),
    ({"model": "cgc"}, "incompatible: model mmoe -> cgc"),
    ("drop a column", "incompatible: i feature columns ['i_cat_code', 'i_num_noise'] -> ['i_cat_code']"),
])
def test_an_incompatible_start_trains_from_scratch_and_says_why(change, expect, growing, tmp_path):
    day_a, day_b = growing
    cfg = dataclasses.replace(BASE, model="mmoe")
    warm = saved(tmp_path, train([day_a], cfg, TASKS), cfg)
    if change == "drop a column":
        day_b = _drop_item_noise(day_b)
    else:
        cfg = dataclasses.replace(cfg, **change)
    res = train([day_b], cfg, TASKS, warm=warm)
    assert res.init == {"mode": "scratch", "from": "2026-01-01", "from_version": "v-prev", "reason": expect}
    scratch = train([day_b], cfg, TASKS)
    assert all(torch.equal(v, scratch.model.state_dict()[k]) for k, v in res.model.state_dict().items())


def test_model_args_are_compared_as_configurations(growing, tmp_path):
    """``{}`` and the defaults written out are the same model: a warm start."""
    day_a, day_b = growing
    cfg = dataclasses.replace(BASE, model="mmoe")
    warm = saved(tmp_path, train([day_a], cfg, TASKS), cfg)
    res = train([day_b], dataclasses.replace(cfg, model_args={"n_experts": 4}), TASKS, warm=warm)
    assert res.init["mode"] == "warm"


def test_warm_start_none_is_the_trainer_of_a_fresh_model_bit_for_bit(growing, tmp_path):
    day_a, day_b = growing
    warm = saved(tmp_path, train([day_a], BASE, TASKS), BASE)
    off = train([day_b], dataclasses.replace(BASE, warm_start="none"), TASKS, warm=warm)
    plain = train([day_b], BASE, TASKS)
    assert off.init == {"mode": "scratch", "from": None, "from_version": None, "reason": "train.warm_start = none"}
    assert plain.init["mode"] == "scratch"
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in off.model.state_dict().items())


def test_a_start_model_changed_by_post_training_is_refused(growing, tmp_path):
    day_a, day_b = growing
    cfg = dataclasses.replace(BASE, model="mmoe", post_training=["lightgode"])
    warm = saved(tmp_path, train([day_a], cfg, TASKS), cfg)
    res = train([day_b], cfg, TASKS, warm=warm)
    assert res.init["mode"] == "scratch" and "post_training ['lightgode']" in res.init["reason"]


def test_adam_moments_follow_their_rows_and_grown_rows_start_at_zero(growing, tmp_path):
    day_a, day_b = growing
    cfg = dataclasses.replace(BASE, model="mmoe", warm_start_optimizer=True)
    prev = train([day_a], cfg, TASKS)
    assert set(prev.optimizer_state["state"]) == {n for n, _ in prev.model.named_parameters()}
    start = train([day_b], dataclasses.replace(cfg, epochs=0), TASKS, warm=saved(tmp_path, prev, cfg))
    assert start.init["optimizer"] == f"restored for {len(prev.optimizer_state['state'])} parameters"
    old, new = prev.optimizer_state["state"]["user_enc.id_emb.weight"], start.optimizer_state["state"]["user_enc.id_emb.weight"]
    known = rows_of(start.feature_spec.user, prev.feature_spec.user.ids)
    grown = torch.from_numpy(np.setdiff1d(np.arange(1, start.feature_spec.user.n_ids), known.numpy()))
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(new[k][known], old[k][1:]) and torch.equal(new[k][0], old[k][0])
        assert not new[k][grown].any()
    assert int(new["step"]) == int(old["step"])  # an int for a row-sparse table (SparseAdam)
    dense = "moe.gates.0.net.0.weight"
    assert torch.equal(start.optimizer_state["state"][dense]["exp_avg"], prev.optimizer_state["state"][dense]["exp_avg"])
    # a start model saved without optimizer state: weights warm, moments fresh, and it says so
    plain = saved(tmp_path, train([day_a], dataclasses.replace(cfg, warm_start_optimizer=False), TASKS), cfg, "plain")
    res = train([day_b], dataclasses.replace(cfg, epochs=0), TASKS, warm=plain)
    assert res.init["mode"] == "warm" and res.init["optimizer"].startswith("fresh: the start model saved no optimizer state")
