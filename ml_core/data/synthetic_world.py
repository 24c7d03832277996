"""The static world of the synthetic traffic source: its size presets, and everything drawn from
``seed`` alone (communities, latents, popularity, activity, profiles, calibration) plus the
per-day state that is closed-form in ``(seed, day)`` (popularity drift, community switches).

:class:`SyntheticWorld` is the base of :class:`~ml_core.data.synthetic.SyntheticTraffic`, which
adds a day's events. The generative process is described in ml_core/data/synthetic.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl

__all__ = ["PRESETS", "STREAM_EVENTS", "SyntheticSpec", "SyntheticWorld", "seed_key", "to_date"]

# Independent random streams: default_rng([seed, stream, *key]).
_STREAM_WORLD = 0
_STREAM_ANCHOR = 1
_STREAM_DAY_POP = 2
STREAM_EVENTS = 3
_STREAM_CALIB = 4


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of a synthetic world. See ml_core/data/synthetic.py for each parameter's role."""

    name: str
    n_users: int
    n_items: int
    n_categories: int
    n_communities: int
    #: Mean number of views of a user who is active on a day.
    mean_views_per_active_user: float
    #: Expected share of users active on a day (weekday factors move it a few percent).
    daily_active_share: float
    latent_dim: int = 16
    #: Norm of the user / item latent noise around the community centroid (centroids: norm 1).
    user_noise: float = 0.6
    item_noise: float = 0.6
    #: Item popularity ~ (rank + 10) ** -item_zipf.
    item_zipf: float = 0.9
    #: User activity ~ Pareto(user_pareto) (tail index; smaller = more skewed), capped.
    user_pareto: float = 1.5
    max_activity: float = 100.0
    max_views_per_user: int = 1000
    #: Softness of the affinity bias of views: weight = pop * exp(affinity / temperature).
    temperature: float = 0.25
    sir_candidates: int = 4
    #: Chance that an item's category / brand is one of its community's own.
    category_purity: float = 0.6
    brand_purity: float = 0.5
    items_per_brand: int = 25
    #: Std of the noise added to the dense features, in units of their signal's std.
    dense_noise: float = 1.5
    #: Std of the noise added to the projections the categorical user features bucket.
    cat_noise: float = 1.0
    #: Popularity drift: slow stationary wander (log scale), its period and daily jitter.
    drift_sigma: float = 0.5
    drift_period: int = 14
    daily_sigma: float = 0.1
    #: Per-day probability that a user switches community (once).
    community_shift_rate: float = 0.001
    #: Funnel logit intercepts (see module docstring), tuned for ~6% / 3% / 2.5% per view.
    cart_bias: float = -3.0
    fav_bias: float = -3.66
    buy_bias: float = -1.74
    direct_buy_bias: float = -5.7


PRESETS: dict[str, SyntheticSpec] = {
    "small": SyntheticSpec(
        name="small", n_users=3_000, n_items=2_000, n_categories=24, n_communities=12,
        mean_views_per_active_user=18.0, daily_active_share=0.4,
    ),
    "medium": SyntheticSpec(
        name="medium", n_users=50_000, n_items=30_000, n_categories=60, n_communities=24,
        mean_views_per_active_user=18.0, daily_active_share=0.3,
    ),
    "large": SyntheticSpec(
        name="large", n_users=600_000, n_items=420_000, n_categories=200, n_communities=48,
        mean_views_per_active_user=7.0, daily_active_share=0.15,
    ),
}  # fmt: skip


def seed_key(n: int) -> list[int]:
    """A non-negative SeedSequence key for a possibly negative integer."""
    return [0, n] if n >= 0 else [1, -n]


def to_date(day: date | datetime | str) -> date:
    if isinstance(day, datetime):
        return day.date()
    if isinstance(day, date):
        return day
    return date.fromisoformat(str(day)[:10])


def _searchsorted(sorted_arr: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``searchsorted(side="right")`` of random queries; sorting them first is ~3x faster."""
    order = np.argsort(q)
    out = np.empty(q.size, dtype=np.int64)
    out[order] = np.searchsorted(sorted_arr, q[order], side="right")
    return out


def _quantile_bucket(x: np.ndarray, n: int) -> np.ndarray:
    edges = np.quantile(x, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, x).astype(np.int64)


class SyntheticWorld:
    """The static world of a :class:`SyntheticSpec` and seed, and its per-day state."""

    def __init__(
        self,
        spec: SyntheticSpec | str = "small",
        seed: int = 7,
        start_date: date | str = "2026-01-01",
    ):
        if isinstance(spec, str):
            if spec not in PRESETS:
                raise ValueError(f"unknown synthetic preset {spec!r}; known: {list(PRESETS)}")
            spec = PRESETS[spec]
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if spec.n_communities < 2 or spec.n_categories < 1:
            raise ValueError("need n_communities >= 2 and n_categories >= 1")
        self.spec = spec
        self.seed = int(seed)
        self.start_date = to_date(start_date)
        self._build_world()

    # ------------------------------------------------------------------ static world
    def _build_world(self) -> None:
        s = self.spec
        rng = np.random.default_rng([self.seed, _STREAM_WORLD])
        C, dim, nu, ni = s.n_communities, s.latent_dim, s.n_users, s.n_items

        cent = rng.standard_normal((C, dim))
        self._centroids = (cent / np.linalg.norm(cent, axis=1, keepdims=True)).astype(np.float32)
        share = rng.dirichlet(np.full(C, 5.0))
        self._user_comm0 = rng.choice(C, size=nu, p=share).astype(np.int64)
        self.item_community = rng.choice(C, size=ni, p=share).astype(np.int64)
        self._user_noise = rng.standard_normal((nu, dim), dtype=np.float32) * np.float32(s.user_noise / math.sqrt(dim))
        self._item_noise = rng.standard_normal((ni, dim), dtype=np.float32) * np.float32(s.item_noise / math.sqrt(dim))
        self._item_z = self._centroids[self.item_community] + self._item_noise

        # community switches (static draw, applied by day)
        self._shift_day = rng.exponential(1.0 / max(s.community_shift_rate, 1e-12), size=nu)
        self._user_comm_new = (self._user_comm0 + 1 + rng.integers(0, C - 1, size=nu)) % C

        # popularity and activity
        rank = rng.permutation(ni)
        self._log_pop0 = -s.item_zipf * np.log(rank + 10.0)
        self._activity = np.minimum((1.0 - rng.random(nu)) ** (-1.0 / s.user_pareto), s.max_activity)
        self._propensity = rng.normal(0.0, 0.7, size=nu)
        price = rng.normal(0.0, 0.5, size=C)[self.item_community] + rng.normal(0.0, 1.0, size=ni)
        self._price = price
        self._quality = -0.4 * price + rng.normal(0.0, 0.5, size=ni)

        # items: category / brand with home communities
        self.item_category = self._assign_home(rng, self.item_community, s.n_categories, s.category_purity)
        n_brands = max(C, ni // max(s.items_per_brand, 1))
        item_brand = self._assign_home(rng, self.item_community, n_brands, s.brand_purity)
        price_bucket = _quantile_bucket(price + rng.normal(0.0, 0.5, size=ni), 5)

        # user categorical features: buckets of noisy projections of the day-0 latent
        z_u0 = self._centroids[self._user_comm0] + self._user_noise
        proj = rng.standard_normal((3, dim))
        proj /= np.linalg.norm(proj, axis=1, keepdims=True)
        p = z_u0 @ proj.T
        p = p + rng.standard_normal(p.shape) * (s.cat_noise * p.std(axis=0))
        age, gender, city = _quantile_bucket(p[:, 0], 6), _quantile_bucket(p[:, 1], 2), _quantile_bucket(p[:, 2], 4)

        def dense(z: np.ndarray, k: int) -> np.ndarray:
            w = rng.standard_normal((k, dim))
            w /= np.linalg.norm(w, axis=1, keepdims=True)
            x = z @ w.T
            x = (x - x.mean(axis=0)) / x.std(axis=0)
            return (x + rng.standard_normal(x.shape) * s.dense_noise).astype(np.float32)

        u_dense, i_dense = dense(z_u0, 4), dense(self._item_z, 4)
        log_act = np.log(self._activity)
        u_cols: dict[str, np.ndarray] = {
            "user_id": np.arange(1, nu + 1, dtype=np.int64),
            "u_cat_age": age,
            "u_cat_gender": gender,
            "u_cat_city": city,
        }
        for j in range(4):
            u_cols[f"u_num_taste_{j}"] = u_dense[:, j]
        u_cols["u_num_activity"] = (log_act + rng.normal(0.0, 0.5, size=nu)).astype(np.float32)
        u_cols["u_num_spend"] = (self._propensity + rng.normal(0.0, 0.7, size=nu)).astype(np.float32)
        i_cols: dict[str, np.ndarray] = {
            "item_id": np.arange(1, ni + 1, dtype=np.int64),
            "category": self.item_category,
            "i_cat_price": price_bucket,
            "i_cat_brand": item_brand,
        }
        for j in range(4):
            i_cols[f"i_num_taste_{j}"] = i_dense[:, j]
        i_cols["i_num_quality"] = (self._quality + rng.normal(0.0, 0.5, size=ni)).astype(np.float32)
        self._user_cols, self._item_cols = u_cols, i_cols

        # items grouped by community, for popularity sampling within a community
        self._item_order = np.argsort(self.item_community, kind="stable")
        counts = np.bincount(self.item_community, minlength=C)
        self._comm_start = np.concatenate([[0], np.cumsum(counts)])
        if (counts == 0).any():
            raise ValueError("a community has no items; use fewer communities or more items")

        # calibration: activity scale
        crng = np.random.default_rng([self.seed, _STREAM_CALIB])
        w = self._activity if nu <= 200_000 else self._activity[crng.integers(0, nu, 200_000)]
        lo, hi = 1e-8, 1e3
        for _ in range(80):  # bisection on mean(1 - exp(-lam w)) = share
            mid = math.sqrt(lo * hi)
            if np.mean(-np.expm1(-mid * w)) < s.daily_active_share:
                lo = mid
            else:
                hi = mid
        self._lam = math.sqrt(lo * hi)
        p_act = -np.expm1(-self._lam * w)
        w_active = float((p_act * w).sum() / p_act.sum())
        self._view_scale = max(s.mean_views_per_active_user - 1.0, 0.0) / w_active

        # the funnel reads affinity standardised over *viewed* pairs: simulate a few views of
        # day 0's world (static popularity) and keep their affinity mean and std
        n_sim = min(nu, 4000)
        rows = crng.choice(nu, size=n_sim, replace=False, p=self._activity / self._activity.sum())
        zu = self._centroids[self._user_comm0[rows]] + self._user_noise[rows]
        sim_items, zv = self._sample_views(crng, zu, np.full(n_sim, 5), np.exp(self._log_pop0))
        a = np.einsum("ij,ij->i", zv, self._item_z[sim_items])
        self._aff_center, self._aff_scale = float(a.mean()), float(a.std())

    @staticmethod
    def _assign_home(rng: np.random.Generator, comm: np.ndarray, n_labels: int, purity: float) -> np.ndarray:
        """Labels whose home community is ``label % C``; an item takes a home label w.p. purity."""
        C = int(comm.max()) + 1 if comm.size else 1
        n = comm.size
        if n_labels >= C:
            # home labels of community k: k, k + C, k + 2C, ... < n_labels
            n_home = (n_labels - comm + C - 1) // C
            home = comm + C * np.floor(rng.random(n) * n_home).astype(np.int64)
        else:
            home = comm % n_labels
        other = rng.integers(0, n_labels, n)
        return np.where(rng.random(n) < purity, home, other).astype(np.int64)

    # ------------------------------------------------------------------ per-day state
    def day_index(self, day: date | str) -> int:
        return (to_date(day) - self.start_date).days

    def user_community(self, day: date | str) -> np.ndarray:
        """Community of users 1..n_users (array position = user_id - 1) on ``day``."""
        d = self.day_index(day)
        return np.where(self._shift_day <= d, self._user_comm_new, self._user_comm0)

    def _log_popularity(self, d: int) -> np.ndarray:
        s = self.spec
        k, r = divmod(d, s.drift_period)
        theta = 0.5 * math.pi * r / s.drift_period
        a0 = np.random.default_rng([self.seed, _STREAM_ANCHOR, *seed_key(k)]).standard_normal(s.n_items)
        a1 = np.random.default_rng([self.seed, _STREAM_ANCHOR, *seed_key(k + 1)]).standard_normal(s.n_items)
        eps = np.random.default_rng([self.seed, _STREAM_DAY_POP, *seed_key(d)]).standard_normal(s.n_items)
        return self._log_pop0 + s.drift_sigma * (math.cos(theta) * a0 + math.sin(theta) * a1) + s.daily_sigma * eps

    def item_popularity(self, day: date | str) -> np.ndarray:
        """The day's item popularity (sums to 1; array position = item_id - 1), before affinity."""
        lp = self._log_popularity(self.day_index(day))
        p = np.exp(lp - lp.max())
        return p / p.sum()

    def _user_z(self, comm: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._centroids[comm[rows]] + self._user_noise[rows]

    def affinity(self, user_ids: np.ndarray, item_ids: np.ndarray, day: date | str) -> np.ndarray:
        """True latent affinity ``<z_u, z_i>`` of (user_id, item_id) pairs on ``day`` (float64)."""
        u = np.asarray(user_ids, dtype=np.int64) - 1
        i = np.asarray(item_ids, dtype=np.int64) - 1
        if u.size and (u.min() < 0 or u.max() >= self.spec.n_users):
            raise ValueError("user_ids out of range 1..n_users")
        if i.size and (i.min() < 0 or i.max() >= self.spec.n_items):
            raise ValueError("item_ids out of range 1..n_items")
        zu = self._user_z(self.user_community(day), u)
        return np.einsum("ij,ij->i", zu, self._item_z[i]).astype(np.float64)

    # ------------------------------------------------------------------ profiles
    def user_profiles(self) -> pl.DataFrame:
        return pl.DataFrame(self._user_cols)

    def item_profiles(self) -> pl.DataFrame:
        return pl.DataFrame(self._item_cols)

    def _sample_views(
        self, rng: np.random.Generator, zu: np.ndarray, n_views: np.ndarray, pop: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items (0-based) viewed by users with latents ``zu`` (``n_views`` each, concatenated).

        Item ``i`` has weight ``pop_i exp(<z_u, z_i> / T)``: the community ``k`` is drawn exactly
        from ``softmax_k(<z_u, c_k> / T + log sum_{i in k} pop_i)``, then ``sir_candidates`` items
        of ``k`` drawn by popularity compete with weight ``exp(<z_u, e_i> / T)`` (Gumbel-max).
        Returns the items and the per-view user latents.
        """
        s, T, C, A = self.spec, self.spec.temperature, self.spec.n_communities, zu.shape[0]
        V = int(n_views.sum())
        vrow = np.repeat(np.arange(A), n_views)
        cum = np.cumsum(pop[self._item_order])
        cstart = np.concatenate([[0.0], cum])[self._comm_start]  # cum pop before each community
        P = cstart[1:] - cstart[:-1]
        logits = (zu @ self._centroids.T) / T + np.log(P)[None, :]
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        # one searchsorted for all users: row r's CDF shifted into [r, r + 1]
        flat = (np.cumsum(prob, axis=1) + np.arange(A)[:, None]).ravel()
        flat[C - 1 :: C] = np.arange(1, A + 1)  # guard rounding: a row ends exactly at r + 1
        k = np.searchsorted(flat, vrow + rng.random(V), side="right") - vrow * C
        k = np.clip(k, 0, C - 1)

        zv = zu[vrow]
        best_item = np.zeros(V, dtype=np.int64)
        best_key = np.full(V, -np.inf)
        lo, hi = self._comm_start[k], self._comm_start[k + 1] - 1
        for _ in range(max(s.sir_candidates, 1)):  # a fixed few rounds, each vectorised over views
            target = cstart[k] + rng.random(V) * P[k]
            cand = self._item_order[np.clip(_searchsorted(cum, target), lo, hi)]
            key = np.einsum("ij,ij->i", zv, self._item_noise[cand]) / T + rng.gumbel(size=V)
            better = key > best_key
            best_item[better], best_key[better] = cand[better], key[better]
        return best_item, zv
