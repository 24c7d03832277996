"""Every registered model, with the same trainer and data: it learns a planted signal and its loss
decreases. A model added to ``ml_core/models`` is picked up here without editing this file.

Each run records its GAUC margin over the threshold; the terminal summary lists them (the
"model zoo margins" section, tests/conftest.py). The planted data's seed is 1; to see the margins
over more draws of the data, e.g. five:

    MOGE_ZOO_SEEDS=1,2,3,4,5 .venv/bin/python -m pytest tests/unit/models/test_zoo.py -q
"""

from __future__ import annotations

import os

import pytest

from ml_core.config import TrainConfig
from ml_core.inference import evaluate
from ml_core.models.registry import available_models
from ml_core.train.trainer import train
from tests.planted import planted_days

#: model -> (min GAUC on both tasks, extra TrainConfig fields). Default: clearly above chance,
#: with the same budget for every model.
EXPECT: dict[str, tuple[float, dict]] = {}
DEFAULT_MIN_GAUC = 0.6
TASKS = ("click", "purchase")
SEEDS = [int(s) for s in os.environ.get("MOGE_ZOO_SEEDS", "1").split(",")]


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"data{s}")
def planted(request):
    return request.param, planted_days(seed=request.param, n_users=600, n_items=40, split="samples", code_noise=0.3)


def fit(name: str, days, **extra):
    base = dict(model=name, epochs=4, batch_size=128, lr=1e-2, dim=16, fanouts=[5, 5], seed=0, threads=1)
    cfg = TrainConfig(**{**base, **extra})  # EXPECT's extra fields may override the default budget
    res = train([days[0]], cfg, list(TASKS))
    return cfg, res


@pytest.mark.parametrize("name", available_models())
def test_learns_planted_signal_and_loss_decreases(name, planted, record_property):
    data_seed, days = planted
    min_gauc, extra = EXPECT.get(name, (DEFAULT_MIN_GAUC, {}))
    cfg, res = fit(name, days, **extra)
    epochs = [h["epoch_loss"] for h in res.history if "epoch_loss" in h]
    m = evaluate(res, res.feature_spec, days[1], cfg.fanouts)
    for task in TASKS:
        record_property(f"zoo_margin/{name}/{data_seed}/{task}", m[task]["gauc"] - min_gauc)
    assert epochs[-1] < epochs[0], f"{name}: epoch losses {epochs}"
    for task in TASKS:
        assert m[task]["gauc"] > min_gauc, f"{name} {task}: GAUC {m[task]['gauc']:.3f} (all: {m})"
