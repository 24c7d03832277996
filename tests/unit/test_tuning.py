"""The hyper-parameter search (ml_core/tuning.py): its space, the [tuning] checks, and seeded
searches on the planted data (a few trials of a few steps; the asset test runs the stage)."""

from __future__ import annotations

import pytest

from ml_core.config import TrainConfig, TuningConfig, load_config
from ml_core.config.tuning import MODEL_SPACES, TRAIN_SPACE
from ml_core.eval.plots import tuning_plot
from ml_core.models.registry import available_models
from ml_core.preflight import load_runnable_config
from ml_core.tuning import config_of, default_params, markdown_report, resolve_space, run_search
from ml_core.typed import ConfigError
from tests.planted import planted_days

TASKS = ["click", "purchase"]
#: A tiny budget: 12 optimiser steps per trial on the planted data.
TINY = TrainConfig(epochs=1, max_steps_per_epoch=12, batch_size=128, dim=16, fanouts=[4, 3], log_every_steps=0)


def test_default_space_is_the_train_space_plus_the_models_declared_or_derived_arguments():
    model, space = resolve_space(TuningConfig(), TrainConfig())
    assert model == "moge" and list(space) == [*TRAIN_SPACE, *MODEL_SPACES["moge"]]
    assert (space["lr"].kind, space["lr"].range.log) == ("float", True)
    assert space["dim"].kind == "categorical" and space["model_args.n_experts"].kind == "int"
    # a model without a declared entry: its positive float arguments over d/10 .. 10 d (log);
    # booleans (e.g. MGOE's leakage guard) and integers only when declared
    _, e2e = resolve_space(TuningConfig(model="e2e_grec"), TrainConfig())
    alpha = e2e["model_args.alpha"].range
    assert (alpha.low, alpha.high, alpha.log) == pytest.approx((0.15, 15.0, True))
    assert "model_args.gfae" not in e2e and "model_args.n_experts" not in e2e
    for m in available_models():  # every model has a space whose bounds its config accepts
        assert resolve_space(TuningConfig(model=m), TrainConfig())[1]
    # an explicit space replaces the default; the daily model's arguments are the starting point
    tuning = TuningConfig(space={"lr": [1e-3, 1e-2], "model_args.interaction": {"choices": ["ep", "con"]}})
    _, space = resolve_space(tuning, TrainConfig(model_args={"n_experts": 2}))
    assert list(space) == ["lr", "model_args.interaction"] and space["lr"].range.log is False
    assert default_params(TrainConfig(model_args={"interaction": "con"}), tuning, space) == \
        {"lr": 1e-3, "model_args.interaction": "con"}


def test_a_point_of_the_space_is_a_train_config_with_the_search_budget_and_seed():
    train = TrainConfig(model="moge", epochs=5, model_args={"n_experts": 2, "beta": 1e-5})
    tuning = TuningConfig(seed=7, epochs=1, max_steps_per_epoch=30)
    cfg = config_of(train, tuning, {"lr": 0.005, "dim": 32, "model_args.l2": 1e-4})
    assert (cfg.model, cfg.lr, cfg.dim, cfg.seed, cfg.epochs, cfg.max_steps_per_epoch) == ("moge", 0.005, 32, 7, 1, 30)
    assert cfg.model_args == {"n_experts": 2, "beta": 1e-5, "l2": 1e-4}
    # another model than the daily one starts from its own defaults, not the daily model's arguments
    assert config_of(train, TuningConfig(model="mmoe"), {"model_args.n_experts": 3}).model_args == {"n_experts": 3}


@pytest.mark.parametrize("override, message", [
    ("tuning.space={lrr=[1e-4, 1e-2]}", r"tuning.space.lrr: not a searchable \[train\] setting"),
    ("tuning.space={epochs=[1, 3]}", r"tuning.space.epochs: not a searchable"),  # the budget is tuning.epochs
    ("tuning.space={l2=[1e-4, 1e-2]}", r"'l2' is an argument of 'moge': write 'model_args.l2'"),
    ('tuning.space={"model_args.nope"=[1, 2]}', r"model 'moge' has no argument 'nope'"),
    ("tuning.space={dim=[16.5, 64]}", r"tuning.space.dim = 16.5 \(float\): expected int"),
    ('tuning.space={"model_args.n_experts"=[1, 9]}', r"n_experts must be in 1..4"),
    ('tuning.space={optimizer={choices=["adam", "sgd"]}}', r"train.optimizer must be one of"),
    ('tuning.space={"model_args.interaction"=[1, 2]}', r"model_args.interaction = 1 \(int\): expected str"),
    ('tuning.model="nope"', r"tuning.model = 'nope'.*unknown model"),
    ('tuning.metric="buy"', r"tuning.metric = 'buy': expected 'mean' or a task"),
])
def test_a_space_the_model_cannot_take_fails_when_the_configuration_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_runnable_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("tuning.space={lr=[1, 2, 3, 4]}", r'tuning.space.lr = \[1, 2, 3, 4\]: expected \[low, high\], \[low, high, "log"\]'),
    ("tuning.space={lr=[0.1, 0.01]}", r"tuning.space.lr\] expected low < high"),
    ('tuning.space={lr=[0, 0.01, "log"]}', r"a log range needs low > 0"),
    ("tuning.space={lr={choices=[]}}", r"non-empty choices"),
    ("tuning.trials=0", r"trials >= 1"),
    ("tuning.trial=3", r"unknown key tuning.trial"),
])
def test_the_tuning_section_is_checked_by_the_configuration_layer(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.fixture(scope="module")
def planted():
    return planted_days(seed=1, n_users=400, n_items=40, split="samples", code_noise=0.3)


def _search(planted, **tuning):
    train_day, valid_day = planted
    return run_search([train_day], valid_day, TASKS, TINY, TuningConfig(**{"trials": 4, "startup_trials": 2, **tuning}))


def test_the_search_is_seeded_starts_from_the_default_and_stores_every_trial(planted):
    space = {"lr": [1e-4, 3e-2, "log"], "dim": {"choices": [8, 16]}, "model_args.n_experts": [1, 4]}
    a = _search(planted, space=space, seed=3)
    b = _search(planted, space=space, seed=3)
    assert [t["params"] for t in a["trials"]] == [t["params"] for t in b["trials"]]
    assert [t["value"] for t in a["trials"]] == pytest.approx([t["value"] for t in b["trials"]], abs=1e-6)
    assert (a["best_params"], a["best_trial"]) == (b["best_params"], b["best_trial"])
    assert len(a["trials"]) == 4 and all(t["state"] == "COMPLETE" for t in a["trials"])
    assert a["default_trial"] == 0 and a["trials"][0]["params"] == a["default_params"] == \
        {"lr": TINY.lr, "dim": 16, "model_args.n_experts": 4}
    best = max(a["trials"], key=lambda t: t["value"])
    assert a["best_value"] == best["value"] and a["best_params"] == best["params"]
    for t in a["trials"]:
        assert set(t["metrics"]) == set(TASKS) and t["seconds"] > 0
        assert t["value"] == pytest.approx(sum(m["gauc"] for m in t["metrics"].values()) / 2)
    assert set(a["importances"]) <= set(space)
    other = _search(planted, space=space, seed=4)
    assert [t["params"] for t in other["trials"][1:]] != [t["params"] for t in a["trials"][1:]]
    report = markdown_report({**a, "meta": {"validation day": "2026-01-02"}})
    assert "| model_args.n_experts | 1 .. 4 | 4 |" in report and report.count("| COMPLETE |") == 4
    png = tuning_plot(a["trials"], a["space"], a["importances"], "mean")
    assert png.startswith(b"\x89PNG")


def test_a_trial_that_cannot_train_is_recorded_and_the_search_goes_on(planted):
    # 3 MGNN layers over a 2-hop sampler: the model refuses to build (a check that needs the data)
    out = _search(planted, trials=3, startup_trials=3, space={"model_args.layers": {"choices": [2, 3]}}, metric="click")
    states = {t["params"]["model_args.layers"]: t["state"] for t in out["trials"]}
    assert states == {2: "COMPLETE", 3: "FAIL"}, states
    failed = next(t for t in out["trials"] if t["state"] == "FAIL")
    assert "layers" in failed["error"] and failed["value"] is None
    assert out["best_params"] == {"model_args.layers": 2} and out["default_trial"] is None  # None: not a choice
    assert out["best_value"] == out["trials"][out["best_trial"]]["metrics"]["click"]["gauc"]
    with pytest.raises(ValueError, match="all 2 trials failed; first error: .*layers"):
        _search(planted, trials=2, space={"model_args.layers": {"choices": [3]}})


def test_the_stage_needs_a_validation_day_before_day_d(tmp_path):
    from ml_core.stages.tuning import run_hyperparameter_search
    from ml_core.storage import Lake
    from tests.conftest import make_config

    with pytest.raises(ValueError, match=r"needs >= 2 training days .* validated on the last"):
        run_hyperparameter_search(make_config(tmp_path), Lake(tmp_path), "2026-01-03", ["2026-01-02"])
