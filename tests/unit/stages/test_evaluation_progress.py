"""The evaluation stage says what it scores (candidate, each reference, the sanity scorers), how
far along it is, and what each scored, through its ``log``."""

import re
import shutil

import pytest

from ml_core import stages as P
from ml_core.inference import SCORE_BATCH
from ml_core.registry.bundles import BundleStore
from ml_core.storage import Lake
from tests.conftest import make_config
from tests.unit.serving.deployed import publish_without_gate


def test_evaluation_logs_each_scoring_and_its_progress(synthetic_lake, tmp_path):
    _, shared, days = synthetic_lake
    shutil.copytree(shared.root / "lake", tmp_path / "lake")  # the shared lake stays as it is
    cfg = make_config(tmp_path, 'train.model="mlp"', "train.max_steps_per_epoch=12", "train.log_every_steps=10",
                      "deploy.bootstrap_samples=20")
    lake, day = Lake(tmp_path), days[-1]
    trained: list[str] = []
    P.run_trained_model(cfg, lake, day, P.train_window_days(cfg, day), log=trained.append)
    assert [line.split(":")[0] for line in trained if " step " in line] == ["epoch 1/1 step 10/12 (83%)"]

    lines: list[str] = []
    ev = P.run_model_evaluation(cfg, lake, day, log=lines.append)
    n = lake.read_table("training_samples", day).height
    assert re.fullmatch(rf"scoring the candidate \(trained_model {day}, version [0-9a-f]{{12}}\) on {n:,} samples", lines[0])
    progress = [line for line in lines if line.startswith("candidate: ")]
    batches = -(-n // SCORE_BATCH)  # a line every 10 batches
    first = min(10 * SCORE_BATCH, n)
    assert len(progress) == batches // 10 >= 1 and progress[0].startswith(f"candidate: {first:,}/{n:,} samples")
    assert any(line.startswith("candidate scored in ") and "GAUC click " in line for line in lines)
    assert lines[-4] == f"scoring the sanity scorers (popularity, item_is_new, seen_pair, random) on {n:,} samples"
    assert lines[-3].startswith("sanity scorers scored in ") and "random click " in lines[-3]
    assert lines[-2] == f"scoring the CF scorers (item_knn, user_knn, ease) on {n:,} samples"
    assert lines[-1].startswith("CF scorers scored in ") and "ease click " in lines[-1]
    assert not any("reference" in line for line in lines)  # nothing promoted yet

    # the candidate in production: the decision's judgement scores it as its reference, with progress
    version = publish_without_gate(lake, day, ev.candidate)
    store = BundleStore(tmp_path)
    lines.clear()
    P.judge_against_references(cfg, lake, day, store, log=lines.append)
    assert f"scoring reference 1/1: production model {version}" in lines
    assert sum(line.startswith(f"reference 1/1: {first:,}/{n:,} samples") for line in lines) == 1
    done = [line for line in lines if line.startswith("reference 1/1 scored in ")]
    assert len(done) == 1 and "candidate minus it: click +0.0000, purchase +0.0000" in done[0], lines


def test_the_deployment_scores_references_on_the_evaluations_day_context(synthetic_lake, tmp_path, monkeypatch):
    """The day the evaluation read and built is reused by the reference scoring from this
    process's cache once (same partitions, same feature spec): no second build, and the same
    metrics as when the deployment reads the day itself."""
    from ml_core.contracts.day import DayContext
    from ml_core.stages.inputs import cached_scoring_days

    _, shared, days = synthetic_lake
    shutil.copytree(shared.root / "lake", tmp_path / "lake")
    cfg = make_config(tmp_path, 'train.model="moge"', "train.max_steps_per_epoch=4", "deploy.bootstrap_samples=20")
    lake, day = Lake(tmp_path), days[-1]
    P.run_trained_model(cfg, lake, day, P.train_window_days(cfg, day))
    ev = P.run_model_evaluation(cfg, lake, day)
    version = publish_without_gate(lake, day, ev.candidate)
    store = BundleStore(tmp_path)
    builds = []
    build = DayContext.build.__func__
    monkeypatch.setattr(DayContext, "build", classmethod(lambda cls, *a, **k: builds.append(a[0].day) or build(cls, *a, **k)))
    held = P.judge_against_references(cfg, lake, day, store)
    assert builds == [] and cached_scoring_days() == 0  # reused once, then released
    fresh = P.judge_against_references(cfg, lake, day, store)
    assert builds == [day]
    assert held.references == fresh.references and held.differences == fresh.differences
    assert held.differences[version]["click"]["diff"] == 0.0  # the candidate against itself


def test_a_context_re_encoded_for_another_spec_equals_one_built_for_it(synthetic_lake):
    """A reference model whose feature spec differs (fitted on other days) scores on the
    evaluation's context with its node inputs encoded again: the same as building it."""
    import dataclasses

    import numpy as np
    import torch

    from ml_core.contracts.day import DayContext
    from ml_core.contracts.vocabulary import FeatureSpec
    from ml_core.stages.inputs import load_day_inputs

    cfg, lake, days = synthetic_lake
    inputs = load_day_inputs(lake, days[-1])
    tasks = list(cfg.samples.tasks)
    spec_a = FeatureSpec.fit([load_day_inputs(lake, days[0])], tasks)
    spec_b = FeatureSpec.fit([load_day_inputs(lake, d) for d in days[1:3]], tasks)
    assert not spec_a.same_as(spec_b)
    for graph in (True, False):
        built = DayContext.build(inputs, spec_b, with_graph=graph)
        again = DayContext.build(inputs, spec_a, with_graph=True).for_spec(inputs, spec_b, graph)
        assert set(built.channels) == set(again.channels) == ({"bipartite", "user_sim", "item_sim"} if graph else set())
        for f in dataclasses.fields(DayContext):
            x, y = getattr(built, f.name), getattr(again, f.name)
            if f.name in ("users", "items"):
                assert all(torch.equal(getattr(x, k), getattr(y, k)) for k in ("ids", "cats", "nums")), f.name
            elif f.name == "channels":
                assert all(np.array_equal(x[c].indices, y[c].indices) and np.array_equal(x[c].weights, y[c].weights)
                           for c in x)
            else:
                assert np.array_equal(np.asarray(x), np.asarray(y)), f.name
    with pytest.raises(ValueError, match="without the graph channels"):
        DayContext.build(inputs, spec_a, with_graph=False).for_spec(inputs, spec_b, True)
