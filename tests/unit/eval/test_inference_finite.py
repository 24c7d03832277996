"""Non-finite predictions fail inference instead of being ranked by the metrics."""

import numpy as np
import pytest
import torch

from ml_core.inference import predict, require_finite_probs
from ml_core.models.registry import build_model
from tests.helpers import TASKS, planted_day


def test_require_finite_probs_names_the_count_per_task():
    probs = np.array([[0.1, np.nan], [np.inf, np.nan], [0.3, 0.4]], np.float32)
    with pytest.raises(FloatingPointError, match=r"3 non-finite predictions of 3 samples \(click: 1, purchase: 2\)"):
        require_finite_probs(probs, ["click", "purchase"])
    with pytest.raises(FloatingPointError, match=r"task 1: 2"):
        require_finite_probs(probs)
    ok = np.array([[0.1, 0.2]])
    assert require_finite_probs(ok, ["click", "purchase"]) is ok


def test_predict_refuses_a_model_that_outputs_nan():
    pd = planted_day(with_graph=False)
    model = build_model("mlp", pd.mspec)
    probs = predict(model, pd.ctx, list(pd.mspec.fanouts), batch_size=64)
    assert probs.shape == (pd.ctx.n_samples, len(TASKS)) and np.isfinite(probs).all()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=f"{pd.ctx.n_samples * len(TASKS)} non-finite"):
        predict(model, pd.ctx, list(pd.mspec.fanouts), batch_size=64, tasks=TASKS)
