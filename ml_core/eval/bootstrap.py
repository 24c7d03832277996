"""Differences between two scorers' GAUC with a paired bootstrap interval over users.

Two models scored on the same samples differ in GAUC by ``D = GAUC_a - GAUC_b``. Its sampling
uncertainty comes from *which users* the day happened to have, so the bootstrap resamples users
(the GAUC groups) with replacement and keeps each drawn user's samples whole; both scorers see the
same draw (paired), so what is shared between them cancels and the interval is much narrower
than comparing two independent intervals.

Precomputation makes a resample cheap. With ``AUC^a_g``, ``AUC^b_g`` the per-user AUCs and
``w_g`` the user's sample count (GAUC's weight; users with one class only are left out, as GAUC
does), a resample that draws user ``g`` ``c_g`` times has

    D* = sum_g c_g w_g (AUC^a_g - AUC^b_g) / sum_g c_g w_g

(a user drawn twice counts twice, exactly as if its samples were duplicated). The per-user AUCs
are computed once; each resample is then two weighted sums over ``n`` users drawn with
replacement, in a compiled loop (:func:`_resample_differences`, numba, resamples spread over the
cores). Each resample draws from its own splitmix64 stream, seeded by ``(seed, resample)``, so the
result does not depend on the number of threads. At the ``large`` preset (90k users, 1,000
resamples) this took 3.1 s per task with NumPy's generator and fancy indexing. The interval is
the percentile interval ``[q_{(1-level)/2}, q_{(1+level)/2}]`` of the ``n_boot`` values of ``D*``;
the point estimate is ``D`` on the full data.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ml_core.eval.metrics import Groups, group_aucs
from ml_core.mixing import GOLDEN, splitmix64


@njit(parallel=True, cache=True, nogil=True)
def _resample_differences(wd, w, n_boot, seed):
    """``D*`` of ``n_boot`` resamples of the ``n`` users (module docstring): resample ``b`` draws
    ``n`` users uniformly with replacement from the splitmix64 stream seeded by ``(seed, b)``."""
    n = len(w)
    out = np.empty(n_boot)
    nn = np.uint64(n)
    for b in prange(n_boot):
        state = splitmix64(np.uint64(seed) * GOLDEN + np.uint64(b) + np.uint64(1))
        num = 0.0
        den = 0.0
        for _ in range(n):
            state += GOLDEN
            k = np.int64(splitmix64(state) % nn)
            num += wd[k]
            den += w[k]
        out[b] = num / den
    return out


def gauc_difference(groups, labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap over users of ``GAUC(scores_a) - GAUC(scores_b)`` on the same samples.

    ``groups``: the users (raw ids, or their :class:`~ml_core.eval.metrics.Groups` when several
    differences are taken on the same samples). Returns ``{"diff", "low", "high", "gauc_a",
    "gauc_b", "n_groups", "n_boot", "level"}``:
    ``diff`` the point estimate on all users, ``low``/``high`` the percentile interval at
    ``level``, ``n_groups`` the users with both classes (those GAUC uses and the bootstrap draws).
    All three are NaN when no user has both classes. Deterministic for a given ``seed``.
    ``ValueError`` on non-finite scores, unequal lengths, ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(scores_a) != len(scores_b):
        raise ValueError(f"scores_a and scores_b differ in length: {len(scores_a)}, {len(scores_b)}")
    groups = Groups.of(groups)  # grouped once for both scorers
    auc_a, size, ok = group_aucs(groups, labels, scores_a)
    auc_b, _, _ = group_aucs(groups, labels, scores_b)
    w = size[ok]
    n = len(w)
    out = {"n_groups": n, "n_boot": int(n_boot), "level": float(level)}
    if n == 0:
        nan = float("nan")
        return {"diff": nan, "low": nan, "high": nan, "gauc_a": nan, "gauc_b": nan, **out}
    wa, wb = w * auc_a[ok], w * auc_b[ok]
    wd = wa - wb  # exactly 0 where the two scorers rank a user's samples the same way
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    diffs = _resample_differences(np.ascontiguousarray(wd, np.float64), np.ascontiguousarray(w, np.float64),
                                  int(n_boot), int(seed))
    alpha = (1 - level) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    gauc_a, gauc_b = wa.sum() / w.sum(), wb.sum() / w.sum()
    return {"diff": float(wd.sum() / w.sum()), "low": float(low), "high": float(high),
            "gauc_a": float(gauc_a), "gauc_b": float(gauc_b), **out}
