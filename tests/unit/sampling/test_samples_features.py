from datetime import date

import numpy as np
import polars as pl

from ml_core.config import SampleConfig
from ml_core.contracts.day import DayInputs
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.node_features import build_node_features
from ml_core.sampling.samples import build_training_samples, positive_pairs
from ml_core.storage import Lake  # noqa: F401


def _events():
    return pl.DataFrame({
        "user_id": [1, 1, 1, 2, 2, 3],
        "item_id": [10, 10, 11, 10, 12, 13],
        "behavior": ["view", "buy", "view", "cart", "view", "fav"],
        "category": [1, 1, 1, 1, 2, 3],
        "ds": [date(2026, 1, 2)] * 6,
    })


def test_positive_labels_follow_task_definitions():
    pos = positive_pairs(_events(), {"click": ["view", "cart", "fav", "buy"], "purchase": ["buy"]})
    got = {(r["user_id"], r["item_id"]): (r["label_click"], r["label_purchase"]) for r in pos.iter_rows(named=True)}
    assert got == {(1, 10): (1, 1), (1, 11): (1, 0), (2, 10): (1, 0), (2, 12): (1, 0), (3, 13): (1, 0)}


def test_negatives_are_untouched_items_and_deterministic():
    cfg = SampleConfig(negatives_per_positive=3, seed=1)
    pool = np.arange(10, 60, dtype=np.int64)
    deg = np.ones(len(pool))
    s1, stats = build_training_samples(_events(), pool, deg, cfg, "2026-01-02")
    s2, _ = build_training_samples(_events(), pool, deg, cfg, "2026-01-02")
    assert s1.equals(s2)
    neg = s1.filter(pl.col("is_negative"))
    assert neg.height == stats["negatives"] == 5 * 3
    touched = set(zip(_events()["user_id"], _events()["item_id"]))
    assert not any((u, i) in touched for u, i in zip(neg["user_id"], neg["item_id"]))
    assert (neg["label_click"] == 0).all() and (neg["label_purchase"] == 0).all()
    s3, _ = build_training_samples(_events(), pool, deg, cfg, "2026-01-03")
    assert not s1.drop("ds").equals(s3.drop("ds"))


def test_node_features_aggregate_window_and_keep_profiles():
    users, items = build_node_features(_events(), pl.DataFrame({"user_id": [1, 9], "u_cat_age": [2, 3]}), None)
    assert users["user_id"].to_list() == [1, 2, 3, 9]
    u9 = users.filter(pl.col("user_id") == 9)
    assert u9["u_num_log_view"][0] == 0.0 and u9["u_cat_age"][0] == 3
    assert users.filter(pl.col("user_id") == 2)["u_cat_age"][0] == -1  # unknown profile
    assert items.filter(pl.col("item_id") == 10)["i_num_log_users"][0] == np.float32(np.log1p(2))
    assert items.filter(pl.col("item_id") == 12)["category"][0] == 2


def test_categorical_codes_get_a_compact_vocabulary_that_survives_save_and_load(tmp_path):
    """Raw codes as large as Taobao's (millions) map to rows 1..n of a small table; unseen -> 0."""
    import numpy as np
    import polars as pl

    from ml_core.contracts.day import DayInputs
    from ml_core.contracts.vocabulary import FeatureSpec

    users = pl.DataFrame({"user_id": [1, 2, 3], "u_num_x": [0.0, 1.0, 2.0]})
    items = pl.DataFrame({"item_id": [10, 11, 12], "i_cat_category": [5_000_000, 7, 5_000_000]})
    samples = pl.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "label_click": [1, 0]})
    spec = FeatureSpec.fit([DayInputs("2026-01-01", samples, users, items)], ["click"])
    assert spec.item.cat_sizes == [3]  # unknown + two seen codes, not 5,000,002 rows
    probe = pl.DataFrame({"item_id": [10, 11, 12, 13], "i_cat_category": [5_000_000, 7, 99, 7]})
    rows = spec.item.encode(np.array([10, 11, 12, 13, 14]), probe, "item_id").cats[:, 0].tolist()
    assert rows == [2, 1, 0, 1, 0]  # 99 never seen and item 14 without features -> unknown
    spec.save(tmp_path)
    again = FeatureSpec.load(tmp_path)
    assert again.item.encode(np.array([10, 11, 12, 13, 14]), probe, "item_id").cats[:, 0].tolist() == rows


def test_feature_specs_compare_by_what_they_encode(tmp_path):
    # the deployment reuses the evaluation's day context for a reference model only when its spec is the same
    users = pl.DataFrame({"user_id": [1, 2, 3], "u_num_x": [0.0, 1.0, 2.0]})
    items = pl.DataFrame({"item_id": [10, 11, 12], "i_cat_category": [4, 7, 4]})
    samples = pl.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "label_click": [1, 0]})
    spec = FeatureSpec.fit([DayInputs("2026-01-01", samples, users, items)], ["click"])
    spec.save(tmp_path)
    assert FeatureSpec.load(tmp_path).same_as(spec) and spec.same_as(spec)
    more_users = FeatureSpec.fit([DayInputs("2026-01-01", samples, users.with_columns(pl.col("user_id") + 1), items)],
                                 ["click"])
    other_codes = FeatureSpec.fit([DayInputs("2026-01-01", samples, users, items.with_columns(pl.lit(5).alias("i_cat_category")))],
                                  ["click"])
    other_scaling = FeatureSpec.fit([DayInputs("2026-01-01", samples, users.with_columns(pl.col("u_num_x") * 2), items)],
                                    ["click"])
    for other in (more_users, other_codes, other_scaling):
        assert not spec.same_as(other) and not other.same_as(spec)
    assert not spec.same_as(FeatureSpec.fit([DayInputs("2026-01-01", samples, users, items)], ["purchase"]))
