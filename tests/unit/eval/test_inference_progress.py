"""Scoring reports its progress through an optional ``log`` (silent without one), and reporting
never changes the scores."""

import re

import numpy as np

from ml_core.inference import evaluate, predict
from ml_core.models.registry import build_model
from tests.helpers import planted_day


def test_predict_logs_samples_scored_every_n_batches():
    pd = planted_day(with_graph=False)  # 600 samples: 10 batches of 64 (the last one 24)
    model = build_model("mlp", pd.mspec)
    silent = predict(model, pd.ctx, list(pd.mspec.fanouts), batch_size=64)
    lines: list[str] = []
    probs = predict(model, pd.ctx, list(pd.mspec.fanouts), batch_size=64, log=lines.append, log_every=3,
                    what="candidate")
    np.testing.assert_array_equal(probs, silent)
    pattern = r"candidate: (\d+)/600 samples \((\d+)%\) \| [\d,]+ samples/s \([\d,]+ since start\) \| ETA (\d+s|\?)"
    scored = [re.fullmatch(pattern, line) for line in lines]
    assert all(scored), lines
    assert [(int(m[1]), int(m[2])) for m in scored] == [(192, 32), (384, 64), (576, 96)]  # batches 3, 6, 9
    # log_every = 0, or no log: nothing
    quiet: list[str] = []
    predict(model, pd.ctx, list(pd.mspec.fanouts), batch_size=64, log=quiet.append, log_every=0)
    assert quiet == []


def test_evaluate_passes_the_log_through():
    pd = planted_day(with_graph=False)
    model = build_model("mlp", pd.mspec)
    lines: list[str] = []
    metrics = evaluate(model, pd.fspec, pd.day, list(pd.mspec.fanouts), log=lines.append, log_every=1, what="ref 1/2")
    assert set(metrics) == set(pd.fspec.tasks)
    assert len(lines) == 1 and lines[0].startswith("ref 1/2: 600/600 samples (100%)")  # one scoring batch (SCORE_BATCH)
