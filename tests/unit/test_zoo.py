"""Every registered model, with the same trainer and data: it learns a planted signal and its loss
decreases. A model added to ``ml_core/models`` is picked up here without editing this file."""

from __future__ import annotations

import pytest

from ml_core.config import TrainConfig
from ml_core.models.registry import available_models
from ml_core.train.trainer import evaluate, train
from tests.planted import planted_days

#: model -> (min GAUC on both tasks, extra TrainConfig fields). Default: clearly above chance.
EXPECT: dict[str, tuple[float, dict]] = {}
DEFAULT_MIN_GAUC = 0.6
# "+Graph" baselines read only the MGNN output, nearly constant across samples at init: ~2 epochs of plateau
EXPECT.update({f"{b}_graph": (DEFAULT_MIN_GAUC, {"epochs": 6}) for b in ("shared_bottom", "cross_stitch", "esmm", "mmoe", "snr_trans", "cgc")})


@pytest.fixture(scope="module")
def planted():
    return planted_days(seed=1, n_users=600, n_items=40, split="samples", code_noise=0.3)


def fit(name: str, days, **extra):
    base = dict(model=name, epochs=4, batch_size=128, lr=1e-2, dim=16, fanouts=[5, 5], seed=0, threads=1)
    cfg = TrainConfig(**{**base, **extra})  # EXPECT's extra fields may override the default budget
    res = train([days[0]], cfg, ["click", "purchase"])
    return cfg, res


@pytest.mark.parametrize("name", available_models())
def test_learns_planted_signal_and_loss_decreases(name, planted):
    min_gauc, extra = EXPECT.get(name, (DEFAULT_MIN_GAUC, {}))
    cfg, res = fit(name, planted, **extra)
    epochs = [h["epoch_loss"] for h in res.history if "epoch_loss" in h]
    assert epochs[-1] < epochs[0], f"{name}: epoch losses {epochs}"
    m = evaluate(res, res.feature_spec, planted[1], cfg.fanouts)
    for task in ("click", "purchase"):
        assert m[task]["gauc"] > min_gauc, f"{name} {task}: GAUC {m[task]['gauc']:.3f} (all: {m})"
