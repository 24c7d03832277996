"""The deployment gate (ml_core/stages/gate.py): pure verdicts on metrics measured on one day."""

from __future__ import annotations

import math

import pytest

from ml_core.config import DeployConfig
from ml_core.stages.gate import gate

DEPLOY = DeployConfig(gauc_tolerance=0.005, min_gauc=0.5, compare_last=3)
SANITY = {"popularity": {"click": {"gauc": 0.52}, "purchase": {"gauc": 0.60}},
          "random": {"click": {"gauc": 0.50}, "purchase": {"gauc": 0.49}}}
CF = {"item_knn": {"click": {"gauc": 0.55}, "purchase": {"gauc": 0.57}}, "ease": {"click": {"gauc": 0.56}, "purchase": {"gauc": 0.55}}}


def m(click: float, purchase: float) -> dict:
    return {"click": {"gauc": click}, "purchase": {"gauc": purchase}}


def test_first_model_must_beat_every_sanity_scorer():
    assert gate(m(0.70, 0.72), None, DEPLOY, SANITY, cf=CF).promote
    d = gate(m(0.70, 0.59), None, DEPLOY, SANITY, cf=CF)  # purchase below window popularity
    assert not d.promote and d.reasons == ["purchase: GAUC 0.5900 does not beat the sanity scorer popularity (0.6000)"]
    assert not gate(m(0.70, 0.60), None, DEPLOY, SANITY, cf=CF).promote  # a tie does not beat it


def test_no_sanity_metrics_is_a_refusal():
    d = gate(m(0.70, 0.72), None, DEPLOY, None, cf=CF)
    assert not d.promote and "no sanity-scorer metrics" in d.reasons[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gauc_is_refused(bad):
    d = gate(m(bad, 0.72), None, DEPLOY, SANITY, cf=CF)
    assert not d.promote and d.reasons[0].startswith("click: GAUC is")


def test_floor_and_the_best_reference():
    assert not gate(m(0.49, 0.72), None, DeployConfig(min_gauc=0.5), {}, cf={}).promote
    refs = {"v1": m(0.71, 0.70), "v2": m(0.69, 0.72)}
    d = gate(m(0.70, 0.72), refs, DEPLOY, SANITY, cf=CF)  # click within 0.005 of v1? 0.70 < 0.705: refused
    assert not d.promote and d.reasons == ["click: GAUC 0.7000 < best recent model v1 0.7100 - tolerance 0.005"]
    assert gate(m(0.706, 0.726), refs, DEPLOY, SANITY, cf=CF).promote


def test_a_slow_drift_stops_once_the_bound_is_reached():
    """Candidates each 0.004 worse than the last (within the per-step tolerance 0.005): comparing
    with production alone would promote every one; the best of the last 3 stops the second."""
    history: list[tuple[str, dict]] = []  # promoted (version, metrics), as re-scored on one day
    g, promoted = 0.80, []
    for step in range(6):
        cand = m(g, 0.75)
        refs = dict(history[-DEPLOY.compare_last:])
        if gate(cand, refs, DEPLOY, SANITY, cf=CF).promote:
            history.append((f"v{step}", cand))
            promoted.append(step)
        g -= 0.004
    assert promoted == [0, 1]  # v1 is 0.004 below v0; v2 would be 0.008 below v0: refused, and so on
    best = max(x["click"]["gauc"] for _, x in history)
    assert all(x["click"]["gauc"] >= best - DEPLOY.gauc_tolerance for _, x in history)
    # with production alone as the reference (compare_last = 1) the same drift walks on
    history, promoted, g = [], [], 0.80
    for step in range(6):
        cand = m(g, 0.75)
        if gate(cand, dict(history[-1:]), DEPLOY, SANITY, cf=CF).promote:
            history.append((f"v{step}", cand))
            promoted.append(step)
        g -= 0.004
    assert promoted == list(range(6)) and math.isclose(history[-1][1]["click"]["gauc"], 0.78)


def test_with_intervals_worse_means_the_whole_interval_below_zero_and_beyond_the_tolerance():
    refs = {"v1": m(0.72, 0.75)}
    cand = m(0.70, 0.75)  # 0.02 below on click

    def diffs(low, high, diff=-0.02):
        return {"v1": {"click": {"diff": diff, "low": low, "high": high, "level": 0.95},
                       "purchase": {"diff": 0.0, "low": -0.01, "high": 0.01, "level": 0.95}}}

    # the interval reaches 0: not shown to be worse, promoted although the point value is 0.02 below
    assert gate(cand, refs, DEPLOY, SANITY, diffs(-0.05, 0.001), cf=CF).promote
    d = gate(cand, refs, DEPLOY, SANITY, diffs(-0.03, -0.01), cf=CF)
    assert not d.promote and "interval [-0.0300, -0.0100]" in d.reasons[0]
    # significant but smaller than the tolerance: not worse
    assert gate(m(0.716, 0.75), refs, DEPLOY, SANITY, diffs(-0.006, -0.002, diff=-0.004), cf=CF).promote


def test_a_candidate_without_metrics_is_refused():
    """Nothing evaluated (a day without samples): never promoted, even with nothing to compare to."""
    d = gate({}, None, DEPLOY, {}, cf={})
    assert not d.promote and d.reasons == ["no candidate metrics: nothing was evaluated (no evaluation samples)"]
