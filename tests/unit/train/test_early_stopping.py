"""Early stopping (ml_core/train/validation.py): the validation slice comes from the training
days only, never day D; training stops on patience, wall time or its budget, says which, and
keeps the best validated weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml_core import stages as P
from ml_core.config import TrainConfig
from ml_core.contracts.day import DayContext
from ml_core.train.trainer import train
from ml_core.train.validation import held_out_users, split_validation, validation_gauc
from tests.helpers import TASKS
from tests.planted import planted_days

FAST = TrainConfig(model="mmoe", epochs=30, batch_size=64, lr=0.05, dim=16, fanouts=[3, 2], threads=1, prefetch=0,
                   eval_every_steps=4, patience=3)


@pytest.fixture(scope="module")
def two_days():
    return planted_days(seed=0, n_users=200, n_items=30, split="samples")


def test_stops_on_patience_and_restores_the_best_weights(two_days):
    res = train(list(two_days), FAST, TASKS)
    st = res.stopping
    assert st["reason"] == "patience" and st["validation"]["how"] == "last_day"
    assert st["validation"]["days"] == [two_days[1].day]  # trained on the first day, validated on the last
    assert res.samples_seen <= st["steps"] * FAST.batch_size and st["steps"] < FAST.epochs * 16
    curve = st["curve"]
    assert [s for s, _ in curve] == list(range(4, st["steps"] + 1, 4))  # every eval_every_steps
    best = max(g for _, g in curve)
    assert st["best_val_gauc"] == best and st["best_step"] < st["steps"] and st["restored_best"]
    assert [g for s, g in curve if s > st["best_step"]] and all(g <= best for s, g in curve if s > st["best_step"])
    assert len([s for s, _ in curve if s > st["best_step"]]) == FAST.patience
    assert st["still_improving"] is False
    assert [h["val_gauc"] for h in res.history if "val_gauc" in h] == [g for _, g in curve]  # the curve in the history
    ctx = DayContext.build(two_days[1], res.feature_spec, with_graph=False)
    assert validation_gauc(res.model, [ctx], FAST.fanouts, TASKS) == best  # the restored weights are the best


def test_max_seconds_stops_and_the_budget_reasons(two_days):
    res = train(list(two_days), dataclasses.replace(FAST, max_seconds=1e-9), TASKS)
    assert res.stopping["reason"] == "max_seconds" and res.stopping["steps"] == 1
    assert res.stopping["curve"][-1][0] == 1  # the weights it stopped with were validated
    capped = train(list(two_days), dataclasses.replace(FAST, epochs=1, max_steps_per_epoch=3, patience=0), TASKS)
    assert capped.stopping["reason"] == "max_steps" and capped.stopping["steps"] == 3
    whole = train(list(two_days), dataclasses.replace(FAST, epochs=1, eval_every_steps=0, validation="none"), TASKS)
    assert whole.stopping["reason"] == "max_epochs" and whole.stopping["curve"] == []
    assert whole.stopping["validation"] == {"how": "none", "note": "", "days": [], "samples": 0}


def test_one_training_day_has_no_last_day_slice(two_days):
    split = split_validation([two_days[0]], "last_day", 0.1, 0)
    assert split.how == "none" and split.validation == [] and "two training days" in split.note


def test_held_out_users_are_a_seeded_share_stable_across_calls():
    ids = np.arange(1, 20001)
    mask = held_out_users(ids, 0.1, seed=0)
    assert 0.09 < mask.mean() < 0.11 and np.array_equal(mask, held_out_users(ids, 0.1, seed=0))
    assert not np.array_equal(mask, held_out_users(ids, 0.1, seed=1))
    assert np.array_equal(mask[::7], held_out_users(ids[::7], 0.1, seed=0))  # per id, not per position


def _sample_ids(days) -> set[tuple]:
    return {(str(d), u, i) for day in days for d, u, i in day.samples.select("ds", "user_id", "item_id").iter_rows()}


@pytest.mark.parametrize("mode", ["last_day", "users"])
def test_the_validation_slice_never_contains_day_d(mode, synthetic_lake):
    """Sample by sample: the slice is drawn from day D's training window only."""
    cfg, lake, days = synthetic_lake
    day = days[-1]
    window = P.train_window_days(cfg, day)
    inputs = [P.load_day_inputs(lake, d) for d in window]
    split = split_validation(inputs, mode, 0.2, seed=0)
    assert split.how == mode and split.validation
    val, trained = _sample_ids(split.validation), _sample_ids(split.train)
    d_samples = _sample_ids([P.load_day_inputs(lake, day)])
    assert val and not val & d_samples and all(d in window and d != day for d, _, _ in val)
    assert val <= _sample_ids(inputs) and not val & trained  # drawn from the training days, never trained on
    if mode == "last_day":
        assert {d for d, _, _ in val} == {window[-1]}
    else:
        users = lambda part: {u for day_in in part for u in day_in.samples["user_id"].to_list()}
        assert not users(split.validation) & users(split.train)


def test_the_stage_records_init_and_stopping_in_the_manifest(synthetic_lake, tmp_path):
    """trained_model[D]: the first model starts from scratch, the next from trained_model[D-1]
    (its data version recorded); ``production`` only takes a bundle trained before D."""
    import json
    import os

    from ml_core.registry.bundles import BundleStore
    from ml_core.storage import Lake
    from tests.conftest import make_config

    _, shared, days = synthetic_lake
    (tmp_path / "lake").mkdir()
    for asset in ("interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph",
                  "node_features", "training_samples"):
        os.symlink(shared.partition_dir(asset, days[0]).parent, tmp_path / "lake" / asset)
    cfg = make_config(tmp_path, 'train.model="mmoe"', "train.max_steps_per_epoch=8")
    lake = Lake(tmp_path)
    # derived data start on days[1], so with T = 2 the first model day is days[3]
    first = P.run_trained_model(cfg, lake, days[3], P.train_window_days(cfg, days[3]))
    assert first.init == {"mode": "scratch", "from": None, "from_version": None,
                          "reason": f"first day: trained_model starts on {days[3]}"}
    second = P.run_trained_model(cfg, lake, days[4], P.train_window_days(cfg, days[4]))
    assert second.init["mode"] == "warm" and second.init["from"] == days[3]
    assert second.init["from_version"] == lake.version("trained_model", days[3])
    manifest = json.loads((lake.partition_dir("trained_model", days[4]) / "manifest.json").read_text())
    assert manifest["init"] == second.init and manifest["stopping"] == second.stopping
    assert manifest["stopping"]["validation"]["days"] == [days[3]] and days[4] not in manifest["stopping"]["validation"]["days"]
    assert second.stopping["curve"][0][0] == 0  # a warm start is scored before its first step
    # production: nothing promoted yet, then a bundle of a later partition is refused (it saw later days)
    prod = make_config(tmp_path, 'train.model="mmoe"', "train.max_steps_per_epoch=8", 'train.warm_start="production"')
    assert P.run_trained_model(prod, lake, days[3], P.train_window_days(prod, days[3])).init["reason"] == \
        "no previous model: nothing is in production"
    store = BundleStore(lake.root)
    store.publish(lake.partition_dir("trained_model", days[3]), "v3")
    store.set_production("v3", {"partition": days[3]})
    refused = P.run_trained_model(prod, lake, days[3], P.train_window_days(prod, days[3])).init
    assert refused["mode"] == "scratch" and refused["reason"].startswith(f"no previous model: production is trained_model[{days[3]}]")
    res = P.run_trained_model(prod, lake, days[4], P.train_window_days(prod, days[4]))
    assert (res.init["mode"], res.init["from"]) == ("warm", "v3")
    assert res.init["from_version"] == (store.version_dir("v3") / "_VERSION").read_text().strip()
