import dataclasses

import numpy as np
import pytest
import torch

from ml_core import stages as P
from ml_core.contracts.day import DayContext
from ml_core.inference import predict
from ml_core.registry.bundles import BundleStore
from ml_core.train.trainer import resolve_device, train


def test_resolve_device_picks_cuda_only_when_present():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_mmoe_learns_on_synthetic_days(synthetic_lake):
    cfg, lake, days = synthetic_lake
    train_days = [P.load_day_inputs(lake, d) for d in days[2:4]]
    # two full epochs (the shared FAST budget of 40 steps is too short since negatives follow the
    # positives' item distribution: no popularity shortcut to learn; measured 0.53 click at 40x2, 0.71 here)
    tcfg = dataclasses.replace(cfg.train, model="mmoe", epochs=2, max_steps_per_epoch=0)
    res = train(train_days, tcfg, list(cfg.samples.tasks))
    epoch_losses = [h["epoch_loss"] for h in res.history if "epoch_loss" in h]
    assert epoch_losses[1] < epoch_losses[0]
    from ml_core.inference import evaluate

    test_day = P.load_day_inputs(lake, days[4])
    metrics = evaluate(res, res.feature_spec, test_day, cfg.train.fanouts)
    for task in cfg.samples.tasks:
        assert metrics[task]["gauc"] > 0.55, metrics
    # (save -> load of every model, mmoe included: tests/unit/models/test_contract.py)


def test_empty_training_window_is_a_clear_error(synthetic_lake):
    cfg, _, _ = synthetic_lake
    with pytest.raises(ValueError, match="no training samples"):
        train([], cfg.train, list(cfg.samples.tasks))


def test_registry_pointer_moves_only_to_published_versions(tmp_path):
    reg = BundleStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        reg.set_production("nope", {})
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "model.pt").write_bytes(b"x")
    reg.publish(tmp_path / "bundle", "2026-01-01-abc")
    reg.set_production("2026-01-01-abc", {"partition": "2026-01-01"})
    assert reg.production()["version"] == "2026-01-01-abc"


def test_prefetching_gives_the_same_batches_in_the_same_order(synthetic_lake):
    from ml_core.batching import BatchMaker, batch_plan, iterate
    from ml_core.contracts.vocabulary import FeatureSpec

    cfg, lake, days = synthetic_lake
    inputs = P.load_day_inputs(lake, days[3])
    spec = FeatureSpec.fit([inputs], list(cfg.samples.tasks))
    maker = BatchMaker(DayContext.build(inputs, spec, with_graph=True), [5, 3], need_graph=True)
    plan = batch_plan([maker.ctx], 300, shuffle=True, rng=np.random.default_rng(0))[:12]
    plain = list(iterate([maker], plan, torch.Generator().manual_seed(1)))
    ahead = list(iterate([maker], plan, torch.Generator().manual_seed(1), prefetch=3))
    assert len(plain) == len(ahead) == 12
    for a, b in zip(plain, ahead):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.user.ids, b.user.ids)
        assert torch.equal(a.channels["bipartite"].edge_index, b.channels["bipartite"].edge_index)


def test_prefetch_errors_surface_in_the_training_loop():
    from ml_core.batching import iterate

    class Broken:
        def make(self, rows, gen):
            raise RuntimeError("sampler exploded")

    with pytest.raises(RuntimeError, match="sampler exploded"):
        list(iterate([Broken()], [(0, np.arange(3))], None, prefetch=2))


def test_predict_is_the_same_with_and_without_prefetch():
    """Evaluation builds batches in a background thread: same sampled subgraphs, same scores."""
    from ml_core.config import TrainConfig
    from ml_core.contracts.day import DayContext
    from ml_core.train.trainer import train
    from tests.planted import planted_days

    train_day, test_day = planted_days(n_users=300, n_items=30)
    cfg = TrainConfig(model="moge", epochs=1, batch_size=128, dim=8, fanouts=[3, 2], threads=1)
    res = train([train_day], cfg, ["click", "purchase"])
    ctx = DayContext.build(test_day, res.feature_spec, with_graph=True)
    a = predict(res.model, ctx, cfg.fanouts, batch_size=64, seed=5, prefetch=0)
    b = predict(res.model, ctx, cfg.fanouts, batch_size=64, seed=5, prefetch=3)
    assert a.shape == (ctx.n_samples, 2) and np.array_equal(a, b)


@pytest.mark.parametrize("every", [5, 0])
def test_training_logs_progress_every_n_steps(every):
    """A progress line every ``train.log_every_steps`` optimiser steps of each epoch (0 = none), with
    the step of the epoch, the loss, both rates and the epoch's ETA (and the training's: 2 epochs)."""
    import re

    from ml_core.config import TrainConfig
    from tests.helpers import TASKS, planted_day

    pd = planted_day()  # 600 samples: 19 batches of 32, capped at 12 steps
    cfg = dataclasses.replace(TrainConfig(), model="mlp", dim=8, batch_size=32, epochs=2, max_steps_per_epoch=12,
                              log_every_steps=every, prefetch=0)
    lines: list[str] = []
    train([pd.day], cfg, TASKS, log=lines.append)
    progress = [line for line in lines if " step " in line]
    number, took = r"[\d,]+", r"(?:\d+s|\d+m\d\ds|\d+h\d\dm|\?)"
    pattern = (rf"epoch (\d)/2 step (\d+)/12 \(\d+%\): loss \d+\.\d{{4}} \| {number} samples/s \({number} since start\) "
               rf"\| ETA epoch {took}, training {took}")
    steps = [tuple(int(g) for g in re.fullmatch(pattern, line).groups()) for line in progress]
    assert steps == ([(1, 5), (1, 10), (2, 5), (2, 10)] if every else []), lines
    # the epoch summaries stay, one per epoch, numbered like the progress lines
    assert [line.split(" done")[0] for line in lines if " done in " in line] == ["epoch 1/2", "epoch 2/2"]


def test_training_threads_do_not_outlive_training():
    """``train.threads`` applies to training only: a step after it in the same process (evaluation
    in an in-process Dagster run) gets the thread count it had before."""
    from ml_core.config import TrainConfig
    from tests.helpers import TASKS, planted_day

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        cfg = dataclasses.replace(TrainConfig(), model="mlp", dim=8, batch_size=64, epochs=1, max_steps_per_epoch=2,
                                  threads=1, prefetch=0, validation="none")
        train([planted_day().day], cfg, TASKS, log=lambda line: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}  # training ran on one thread
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_requested_stop_ends_training_between_two_steps():
    """A stop asked for while training (the run command got SIGINT or SIGTERM) ends it before the
    next optimiser step, with the reason, instead of after the last one."""
    from ml_core.config import TrainConfig
    from ml_core.stop import StopRequested, clear_stop, request_stop
    from tests.helpers import TASKS, planted_day

    cfg = dataclasses.replace(TrainConfig(), model="mlp", dim=8, batch_size=32, epochs=2, max_steps_per_epoch=12,
                              log_every_steps=3, prefetch=0, validation="none")
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if " step 3/12" in line:
            request_stop("SIGTERM received")

    try:
        with pytest.raises(StopRequested, match="stopped before training step 4: SIGTERM received"):
            train([planted_day().day], cfg, TASKS, log=log)
    finally:
        clear_stop()
    assert not any(" step 6/12" in line for line in lines)
