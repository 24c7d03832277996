"""The embedded default source: synthetic e-commerce traffic, any day, deterministically.

:class:`SyntheticTraffic` produces the raw events of any calendar day from ``(seed, day)``
alone, so partitions can be generated and backfilled in parallel and in any order, and the
same call always returns the same frame. It exists so the pipeline runs end to end with no
download, and so the models have something to learn that rewards the graph (as in the MoGE
paper): who-interacts-with-what carries more signal than the user and item features.

Generative process
==================

Static world (from ``seed`` only)
---------------------------------
* ``C = n_communities`` latent communities with unit-norm centroids ``c_k`` in ``R^latent_dim``
  (default 16) and unequal sizes (Dirichlet proportions).
* Every user ``u`` and item ``i`` belongs to one community and has a latent vector
  ``z = c_community + e`` with isotropic noise ``e`` (norm about ``user_noise`` / ``item_noise``).
  The **true affinity** is the dot product ``a(u, i) = <z_u, z_i>``: about 1 inside a
  community, about 0 across communities, with a per-user / per-item spread.
* **Item popularity** is Zipf-like: ``pop_i = (rank_i + 10) ** -item_zipf`` over a random rank
  permutation (independent of the community, so some communities are bigger sellers).
* **User activity** is power-law: ``w_u ~ Pareto(user_pareto)`` capped at ``max_activity``. A
  user is active on a day with probability ``1 - exp(-lam * w_u)`` and then views
  ``1 + Poisson(s * w_u)`` items; ``lam`` and ``s`` are solved at start-up so the daily active
  share and the mean views per active user match the spec.
* Two more latent scalars drive purchases (not clicks): a user **buying propensity**
  ``b_u ~ N(0, 0.7^2)`` and an item **conversion quality** ``q_i = -0.4 price_i + N(0, 0.5^2)``.

Features: noisy functions of the latents
----------------------------------------
Profiles are static (computed from the seed and the day-0 latents):

* users: ``u_cat_age`` (6 buckets), ``u_cat_gender`` (2), ``u_cat_city`` (4 tiers), each a
  quantile bucket of a random projection of ``z_u`` plus noise; dense ``u_num_taste_0..3``
  (random projections of ``z_u`` plus noise of ``dense_noise`` x their signal's std),
  ``u_num_activity`` (log activity + noise) and ``u_num_spend`` (``b_u`` + noise).
* items: ``category`` (also the events' ``category``): each category has a home community and an
  item takes one of its community's categories with probability ``category_purity``, otherwise
  any category; ``i_cat_price`` (5 buckets of the price latent + noise); ``i_cat_brand`` (brands
  also have home communities, purity ``brand_purity``); dense ``i_num_taste_0..3`` and
  ``i_num_quality`` (``q_i`` + noise).

So features carry *partial* signal: a feature-only model beats random but cannot recover a
user's community nearly as well as the items the user interacted with, which are drawn with a
strong community bias (next section). Graph models should win.

A day's events
--------------
For day ``D``, ``d = (D - start_date).days`` and all randomness of the day comes from
generators seeded with ``(seed, stream, d)`` (``np.random.default_rng``; days before
``start_date`` work too), so no day depends on another:

1. **Drift state** (closed form in ``(seed, d)``, no iteration over earlier days):
   ``log pop_i(d) = log pop_i + drift_sigma * X_i(d) + daily_sigma * eps_i(d)`` where ``X_i`` is a
   stationary slow process that rotates between independent standard-normal anchors drawn
   every ``drift_period`` days (``cos/sin`` interpolation keeps unit variance, so popularity
   wanders without diverging) and ``eps_i(d)`` is fresh daily noise. Each user also has a
   community-switch day ``~ Exponential(1 / community_shift_rate)`` (drawn once, static): from that
   day on the user's latent uses a different centroid (features keep describing the old
   one); at the default 0.1% a day, ~3% of users have moved after a month. Day-of-week factors
   change traffic volume by a few percent.
2. **Active users and their view counts** as above.
3. **Views**: a user views item ``i`` with probability proportional to
   ``pop_i(d) * exp(a(u, i) / temperature)``. This is sampled exactly at community level (a
   ``users x C`` softmax of ``<z_u, c_k> / T + log sum_{i in k} pop_i(d)``) and, within the
   community, by sampling-importance-resampling: ``sir_candidates`` items drawn by popularity,
   one kept with weight ``exp(<z_u, e_i> / T)``. All of it vectorised (no loop over events).
   Repeat views of the same item are allowed (as in real logs).
4. **Funnel**, per view, with ``A`` = the standardised affinity:
   ``cart ~ Bernoulli(sigmoid(cart_bias + 0.8 A + 0.5 b_u + 0.3 q_i))``,
   ``fav ~ Bernoulli(sigmoid(fav_bias + 0.6 A + 0.3 b_u))``,
   ``buy | cart ~ Bernoulli(sigmoid(buy_bias + 0.8 A + 0.8 b_u + 0.6 q_i))`` and a rarer direct
   buy without cart (``direct_buy_bias``). ``A`` is standardised over viewed pairs (a small
   simulated batch of views at start-up), so the rates hold for every preset and seed: per
   view about 6.4% carts, 3% favs and 2.4% buys, four fifths of buys after a cart. Purchases depend on more hidden factors than
   views do, which makes the purchase task learnable but harder than click.
5. **Timestamps**: a user's views are split into sessions of up to 12 views; sessions start at
   a diurnal (UTC) hour profile, views inside a session are ~40 s apart; cart/fav/buy follow
   their view (or cart) by exponential delays, capped at the end of the day, so every
   cart/fav/buy has a view of the same (user, item) on the same day, earlier or at the same
   instant.

Events are sorted by ``(ts, user_id)`` (ties: funnel order). Raw ids: users ``1..n_users``,
items ``1..n_items`` (the ranges overlap, as in real logs).

Presets
=======
``small`` (tests, demo; 3k users, 2k items, ~24k events/day, ~30 ms per day),
``medium`` (50k users, 30k items, ~300k events/day, ~0.4 s per day) and ``large`` (IJCAI-15
scale of the MoGE paper: 600k users + 420k items ~ 1M nodes, ~750k events/day and ~4.1M
distinct user-item edges per 7-day window, ~1.5 s per day after a ~2 s start-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl

from ml_core.data.schema import BEHAVIORS, EVENT_SCHEMA, conform_events

__all__ = ["SyntheticSpec", "PRESETS", "SyntheticTraffic"]

# Independent random streams: default_rng([seed, stream, *key]).
_STREAM_WORLD = 0
_STREAM_ANCHOR = 1
_STREAM_DAY_POP = 2
_STREAM_EVENTS = 3
_STREAM_CALIB = 4

#: Relative session-start weight of each UTC hour (e-commerce: quiet at night, evening peak).
_HOURLY = np.array(
    [2.0, 1.2, 0.8, 0.6, 0.5, 0.6, 1.0, 1.8, 2.8, 3.4, 3.8, 4.0,
     4.3, 4.1, 3.9, 3.9, 4.0, 4.2, 4.6, 5.2, 5.8, 6.0, 5.0, 3.4]
)  # fmt: skip
_HOURLY = _HOURLY / _HOURLY.sum()
#: Traffic volume factor by weekday (Monday = 0).
_WEEKDAY = np.array([1.0, 0.97, 0.97, 1.0, 1.04, 1.1, 1.08])
_SESSION_VIEWS = 12
_DAY_S = 86_400.0
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of a synthetic world. See the module docstring for each parameter's role."""

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


def _key(n: int) -> list[int]:
    """A non-negative SeedSequence key for a possibly negative integer."""
    return [0, n] if n >= 0 else [1, -n]


def _to_date(day: date | datetime | str) -> date:
    if isinstance(day, datetime):
        return day.date()
    if isinstance(day, date):
        return day
    return date.fromisoformat(str(day)[:10])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _searchsorted(sorted_arr: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``searchsorted(side="right")`` of random queries; sorting them first is ~3x faster."""
    order = np.argsort(q)
    out = np.empty(q.size, dtype=np.int64)
    out[order] = np.searchsorted(sorted_arr, q[order], side="right")
    return out


def _quantile_bucket(x: np.ndarray, n: int) -> np.ndarray:
    edges = np.quantile(x, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, x).astype(np.int64)


class SyntheticTraffic:
    """Deterministic synthetic events for any day; see the module docstring."""

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
        self.start_date = _to_date(start_date)
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
        return (_to_date(day) - self.start_date).days

    def user_community(self, day: date | str) -> np.ndarray:
        """Community of users 1..n_users (array position = user_id - 1) on ``day``."""
        d = self.day_index(day)
        return np.where(self._shift_day <= d, self._user_comm_new, self._user_comm0)

    def _log_popularity(self, d: int) -> np.ndarray:
        s = self.spec
        k, r = divmod(d, s.drift_period)
        theta = 0.5 * math.pi * r / s.drift_period
        a0 = np.random.default_rng([self.seed, _STREAM_ANCHOR, *_key(k)]).standard_normal(s.n_items)
        a1 = np.random.default_rng([self.seed, _STREAM_ANCHOR, *_key(k + 1)]).standard_normal(s.n_items)
        eps = np.random.default_rng([self.seed, _STREAM_DAY_POP, *_key(d)]).standard_normal(s.n_items)
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

    # ------------------------------------------------------------------ events
    def events(self, day: date | str) -> pl.DataFrame:
        """The raw events of ``day`` in :data:`~ml_core.data.schema.EVENT_SCHEMA`."""
        s = self.spec
        day = _to_date(day)
        d = (day - self.start_date).days
        rng = np.random.default_rng([self.seed, _STREAM_EVENTS, *_key(d)])

        # 1. drift state
        log_pop = self._log_popularity(d)
        pop = np.exp(log_pop - log_pop.max())
        comm = self.user_community(day)

        # 2. active users, view counts
        wf = _WEEKDAY[day.weekday()]
        p_act = -np.expm1(-self._lam * wf * self._activity)
        active = np.flatnonzero(rng.random(s.n_users) < p_act)
        n_views = 1 + rng.poisson(self._view_scale * self._activity[active])
        n_views = np.minimum(n_views, s.max_views_per_user)
        V = int(n_views.sum())
        if V == 0:
            return conform_events(pl.DataFrame(schema=EVENT_SCHEMA))
        vrow = np.repeat(np.arange(active.size), n_views)  # view -> row in `active`
        zu = self._user_z(comm, active)  # (A, dim)

        # 3. views: pop(d) * exp(affinity / T)
        item, zv = self._sample_views(rng, zu, n_views, pop)

        # 4. funnel
        a = (np.einsum("ij,ij->i", zv, self._item_z[item]) - self._aff_center) / self._aff_scale
        b = self._propensity[active][vrow]
        q = self._quality[item]
        cart = rng.random(V) < _sigmoid(s.cart_bias + 0.8 * a + 0.5 * b + 0.3 * q)
        fav = rng.random(V) < _sigmoid(s.fav_bias + 0.6 * a + 0.3 * b)
        buy_logit = 0.8 * a + 0.8 * b + 0.6 * q
        buy_after_cart = cart & (rng.random(V) < _sigmoid(s.buy_bias + buy_logit))
        direct_buy = ~cart & (rng.random(V) < _sigmoid(s.direct_buy_bias + buy_logit))

        # 5. timestamps (seconds into the day)
        n_sess = (n_views - 1) // _SESSION_VIEWS + 1
        sess_off = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
        view_off = np.concatenate([[0], np.cumsum(n_views)[:-1]])
        pos_in_user = np.arange(V) - view_off[vrow]
        sess = sess_off[vrow] + pos_in_user // _SESSION_VIEWS
        n_sessions = int(n_sess.sum())
        sess_start = (rng.choice(24, size=n_sessions, p=_HOURLY) + rng.random(n_sessions)) * 3600.0
        gaps = rng.exponential(40.0, size=V)
        cs = np.cumsum(gaps)
        first = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        base = (cs[first] - gaps[first])[np.repeat(np.arange(first.size), np.diff(np.r_[first, V]))]
        t_view = np.mod(sess_start[sess] + cs - base, _DAY_S)
        end = _DAY_S - 1e-6
        t_cart = np.minimum(t_view + rng.exponential(90.0, size=V), end)
        t_fav = np.minimum(t_view + rng.exponential(60.0, size=V), end)
        t_buy = np.where(
            cart,
            np.minimum(t_cart + rng.exponential(300.0, size=V), end),
            np.minimum(t_view + rng.exponential(200.0, size=V), end),
        )
        buy = buy_after_cart | direct_buy

        users = (active[vrow] + 1).astype(np.int64)
        items = item + 1
        parts = [
            (np.ones(V, bool), t_view, 0),
            (cart, t_cart, 1),
            (fav, t_fav, 2),
            (buy, t_buy, 3),
        ]
        u_all = np.concatenate([users[m] for m, _, _ in parts])
        i_all = np.concatenate([items[m] for m, _, _ in parts])
        t_all = np.concatenate([t[m] for m, t, _ in parts])
        b_all = np.concatenate([np.full(int(m.sum()), code, np.int8) for m, _, code in parts])
        day_us = (day - _EPOCH).days * 86_400_000_000
        ts = day_us + np.minimum((t_all * 1e6).astype(np.int64), 86_400_000_000 - 1)
        order = np.lexsort((b_all, u_all, ts))
        df = pl.DataFrame(
            {
                "user_id": u_all[order],
                "item_id": i_all[order],
                "behavior": b_all[order],
                "ts": ts[order],
                "category": self.item_category[i_all[order] - 1],
            }
        ).with_columns(
            pl.col("behavior").replace_strict(dict(enumerate(BEHAVIORS)), return_dtype=pl.Utf8),
            pl.col("ts").cast(pl.Datetime("us", "UTC")),
            pl.lit(day, dtype=pl.Date).alias("ds"),
        )
        return conform_events(df)

    def __repr__(self) -> str:
        return f"SyntheticTraffic({self.spec.name!r}, seed={self.seed}, start_date={self.start_date})"
