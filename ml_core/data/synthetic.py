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

from datetime import date

import numpy as np
import polars as pl

from ml_core.data.schema import BEHAVIORS, EVENT_SCHEMA, conform_events
from ml_core.data.synthetic_world import (
    PRESETS,
    STREAM_EVENTS,
    SyntheticSpec,
    SyntheticWorld,
    seed_key,
    to_date,
)

__all__ = ["PRESETS", "SyntheticSpec", "SyntheticTraffic"]  # the spec and presets: synthetic_world.py

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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class SyntheticTraffic(SyntheticWorld):
    """Deterministic synthetic events for any day; see the module docstring.

    ``SyntheticTraffic(spec="small", seed=7, start_date="2026-01-01")``: the static world and
    per-day state come from :class:`~ml_core.data.synthetic_world.SyntheticWorld`.
    """

    # ------------------------------------------------------------------ events
    def events(self, day: date | str) -> pl.DataFrame:
        """The raw events of ``day`` in :data:`~ml_core.data.schema.EVENT_SCHEMA`."""
        s = self.spec
        day = to_date(day)
        d = (day - self.start_date).days
        rng = np.random.default_rng([self.seed, STREAM_EVENTS, *seed_key(d)])

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
