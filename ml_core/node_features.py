"""Node features of day D: profile columns (when the source has profiles) plus behavioural
aggregates over the graph window (days D-W .. D-1, never day D itself).

Column naming is the contract with the models: ``*_cat_*`` columns are small non-negative
integer codes (embedded), ``*_num_*`` columns are floats (standardised by the trainer), the id
column is ``user_id`` / ``item_id``, and the item's ``category`` is a categorical column too.
"""

from __future__ import annotations

import polars as pl

from ml_core.data.schema import BEHAVIORS


def user_aggregates(events: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    lf = events.lazy()
    return (
        lf.group_by("user_id")
        .agg(
            *[(pl.col("behavior") == b).sum().cast(pl.Float32).log1p().alias(f"u_num_log_{b}") for b in BEHAVIORS],
            pl.col("item_id").n_unique().cast(pl.Float32).log1p().alias("u_num_log_items"),
            pl.col("category").n_unique().cast(pl.Float32).log1p().alias("u_num_log_categories"),
            pl.col("ds").n_unique().cast(pl.Float32).alias("u_num_active_days"),
            (((pl.col("behavior") == "buy").sum() + 0.1) / (pl.col("behavior") == "view").sum().add(1.0))
            .cast(pl.Float32)
            .alias("u_num_buy_per_view"),
        )
        .collect()
    )


def item_aggregates(events: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    lf = events.lazy()
    return (
        lf.group_by("item_id")
        .agg(
            *[(pl.col("behavior") == b).sum().cast(pl.Float32).log1p().alias(f"i_num_log_{b}") for b in BEHAVIORS],
            pl.col("user_id").n_unique().cast(pl.Float32).log1p().alias("i_num_log_users"),
            (((pl.col("behavior") == "buy").sum() + 0.1) / (pl.col("behavior") == "view").sum().add(1.0))
            .cast(pl.Float32)
            .alias("i_num_buy_per_view"),
            pl.col("category").drop_nulls().first().alias("category_seen"),
        )
        .collect()
    )


def build_node_features(
    window_events: pl.LazyFrame | pl.DataFrame,
    user_profiles: pl.DataFrame | None = None,
    item_profiles: pl.DataFrame | None = None,
    user_attributes: pl.DataFrame | None = None,
    item_attributes: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """User and item feature tables for every node seen in the window or in the profiles.

    Missing aggregates (a node with a profile but no events in the window) are 0; a missing
    category is -1 (the models map it to the unknown bucket). ``user_attributes`` /
    ``item_attributes`` (a file source's static attribute tables, ml_core/data/attributes.py)
    are left-joined by id: they add columns, not nodes; a node absent from the table gets -1
    (categorical, the unknown bucket) or 0 (numeric).
    """
    ua = user_aggregates(window_events)
    ia = item_aggregates(window_events)
    users = ua if user_profiles is None else user_profiles.join(ua, on="user_id", how="full", coalesce=True)
    items = ia if item_profiles is None else item_profiles.join(ia, on="item_id", how="full", coalesce=True)
    if "category" in items.columns:
        items = items.with_columns(pl.coalesce("category", "category_seen").alias("category")).drop("category_seen")
    else:
        items = items.rename({"category_seen": "category"})
    if user_attributes is not None:
        users = users.join(user_attributes, on="user_id", how="left")
    if item_attributes is not None:
        items = items.join(item_attributes, on="item_id", how="left")
    users = _fill(users, "user_id")
    items = _fill(items, "item_id")
    return users.sort("user_id"), items.sort("item_id")


def _fill(df: pl.DataFrame, id_col: str) -> pl.DataFrame:
    exprs = []
    for c, t in df.schema.items():
        if c == id_col:
            continue
        if t.is_float():
            exprs.append(pl.col(c).fill_null(0.0).fill_nan(0.0).cast(pl.Float32))
        elif c == "category" or "_cat_" in c:
            exprs.append(pl.col(c).fill_null(-1).cast(pl.Int64))
    return df.with_columns(exprs)


def feature_columns(df: pl.DataFrame, prefix: str) -> tuple[list[str], list[str]]:
    """(categorical columns, numeric columns) of a feature table, in a stable order."""
    cats = sorted(c for c in df.columns if c.startswith(f"{prefix}_cat_") or c == "category")
    nums = sorted(c for c in df.columns if c.startswith(f"{prefix}_num_"))
    return cats, nums
