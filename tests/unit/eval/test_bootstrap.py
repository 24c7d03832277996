import numpy as np
import pytest

from ml_core.eval.bootstrap import gauc_difference
from ml_core.eval.metrics import gauc


def _day(seed=0, n=4000, users=300):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, users, n)
    labels = (rng.random(n) < 0.3).astype(int)
    return rng, groups, labels


def test_identical_scorers_differ_by_zero_with_a_zero_width_interval():
    rng, groups, labels = _day()
    s = rng.normal(size=len(labels)) + labels
    out = gauc_difference(groups, labels, s, s.copy(), n_boot=200, seed=1)
    assert out["diff"] == 0.0 and out["low"] == 0.0 and out["high"] == 0.0
    assert out["n_groups"] == gauc(groups, labels, s)["groups_used"]


def test_point_estimate_is_the_gauc_difference_and_a_clearly_better_scorer_is_above_zero():
    rng, groups, labels = _day()
    noise = rng.normal(size=len(labels))
    good, weak = noise + 2.0 * labels, noise + 0.3 * labels
    out = gauc_difference(groups, labels, good, weak, n_boot=500, seed=0)
    ga, gb = gauc(groups, labels, good)["gauc"], gauc(groups, labels, weak)["gauc"]
    assert out["gauc_a"] == pytest.approx(ga) and out["gauc_b"] == pytest.approx(gb)
    assert out["diff"] == pytest.approx(ga - gb)
    assert 0 < out["low"] < out["diff"] < out["high"]
    flipped = gauc_difference(groups, labels, weak, good, n_boot=500, seed=0)
    assert flipped["high"] < 0 and flipped["diff"] == pytest.approx(-out["diff"])


def test_equal_scorers_interval_covers_zero_and_narrows_with_the_level():
    rng, groups, labels = _day(seed=2)
    a, b = rng.normal(size=len(labels)) + labels, rng.normal(size=len(labels)) + labels
    wide = gauc_difference(groups, labels, a, b, n_boot=400, seed=3, level=0.99)
    narrow = gauc_difference(groups, labels, a, b, n_boot=400, seed=3, level=0.5)
    assert wide["low"] < 0 < wide["high"]
    assert wide["low"] <= narrow["low"] <= narrow["high"] <= wide["high"]


def test_resamples_whole_users_with_their_weights():
    """Two users: a resample is user 1 twice (D* = 0.5), user 2 twice (1.0) or both (the weighted
    2/3, half the time); so the 90% interval is [0.5, 1.0] and the point estimate weighs 4:2."""
    groups = np.array([1, 1, 1, 1, 2, 2])
    labels = np.array([1, 0, 1, 0, 1, 0])
    a = np.array([0.9, 0.1, 0.8, 0.2, 0.9, 0.1])  # user 1: 1.0, user 2: 1.0
    b = np.array([0.9, 0.5, 0.1, 0.5, 0.1, 0.9])  # user 1: 0.5, user 2: 0.0
    out = gauc_difference(groups, labels, a, b, n_boot=2000, seed=0, level=0.9)
    assert out["diff"] == pytest.approx((0.5 * 4 + 1.0 * 2) / 6)
    assert out["low"] == pytest.approx(0.5) and out["high"] == pytest.approx(1.0)
    assert out["gauc_a"] == pytest.approx(1.0) and out["gauc_b"] == pytest.approx(2 / 6)


def test_seeded_and_validated():
    rng, groups, labels = _day(seed=4, n=800, users=60)
    a, b = rng.random(len(labels)), rng.random(len(labels))
    assert gauc_difference(groups, labels, a, b, n_boot=300, seed=7) == gauc_difference(groups, labels, a, b, n_boot=300, seed=7)
    assert gauc_difference(groups, labels, a, b, n_boot=300, seed=7) != gauc_difference(groups, labels, a, b, n_boot=300, seed=8)
    empty = gauc_difference(np.array([1, 2]), np.array([1, 0]), np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    assert empty["n_groups"] == 0 and np.isnan(empty["diff"]) and np.isnan(empty["low"])
    bad = a.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        gauc_difference(groups, labels, a, bad)
    with pytest.raises(ValueError, match="differ in length"):
        gauc_difference(groups, labels, a, b[:-1])
    with pytest.raises(ValueError, match="level"):
        gauc_difference(groups, labels, a, b, level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        gauc_difference(groups, labels, a, b, n_boot=0)


def test_the_resamples_do_not_depend_on_the_thread_count():
    import numba

    rng, groups, labels = _day(seed=5)
    a, b = rng.random(len(labels)), rng.random(len(labels)) + 0.2 * labels
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = gauc_difference(groups, labels, a, b, n_boot=300, seed=11)
    finally:
        numba.set_num_threads(threads)
    assert gauc_difference(groups, labels, a, b, n_boot=300, seed=11) == one
