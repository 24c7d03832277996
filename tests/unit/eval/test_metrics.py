import numpy as np
import pytest

from ml_core.eval.metrics import Groups, auc, gauc, group_aucs, group_codes, logloss, task_metrics


def brute_gauc(groups, labels, scores):
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        pos, neg = scores[m][labels[m] == 1], scores[m][labels[m] == 0]
        if len(pos) == 0 or len(neg) == 0:
            continue  # single-class users are skipped
        pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        num += pairs / (len(pos) * len(neg)) * m.sum()
        den += m.sum()
    return num / den


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tied", [False, True])
def test_gauc_equals_bruteforce_pairwise(seed, tied):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.integers(0, 150, n)
    labels = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
    scores = rng.integers(0, 6, n).astype(float) if tied else rng.normal(size=n) + labels * 0.5
    assert gauc(groups, labels, scores)["gauc"] == pytest.approx(brute_gauc(groups, labels, scores), abs=1e-12)


def test_coded_groups_and_grouping_once_change_nothing():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 40, 2000) * 1000 + 17  # raw ids, not codes
    labels = (rng.random(2000) < 0.3).astype(int)
    scores = rng.integers(0, 8, 2000).astype(float)
    codes, n = group_codes(groups)
    assert n == len(np.unique(groups)) and codes.max() == n - 1
    direct = gauc(groups, labels, scores)
    assert gauc(codes, labels, scores, n) == direct == gauc(Groups.of(groups), labels, scores)
    # a subset keeps every code: codes without samples are not counted as groups
    sub = groups < 20_000
    assert gauc(codes[sub], labels[sub], scores[sub], n) == gauc(groups[sub], labels[sub], scores[sub])


def test_gauc_skips_single_class_users_and_counts_them():
    groups = np.array([1, 1, 2, 2, 3, 3, 3])
    labels = np.array([1, 0, 1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.8, 0.2])
    out = gauc(groups, labels, scores)
    assert out["groups_used"] == 2 and out["groups_skipped"] == 1
    # user 1: AUC 1 (2 samples); user 3: positive 0.2 below both negatives -> AUC 0 (3 samples)
    assert out["gauc"] == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)


def test_gauc_all_single_class_is_nan_not_crash():
    out = gauc(np.array([1, 1, 2]), np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(out["gauc"]) and out["groups_used"] == 0


def test_auc_matches_bruteforce_and_logloss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 10, 500).astype(float)
    assert auc(y, s) == pytest.approx(brute_gauc(np.zeros(500), y, s))
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))


def test_task_metrics_per_task_keys():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 20, 400)
    labels = rng.integers(0, 2, (400, 2)).astype(float)
    probs = rng.random((400, 2))
    m = task_metrics(users, labels, probs, ["click", "purchase"])
    assert set(m) == {"click", "purchase"}
    assert {"gauc", "auc", "logloss", "pos_rate", "gauc_users", "n"} <= set(m["click"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(bad):
    groups = np.array([1, 1, 1, 2, 2])
    labels = np.array([1, 1, 0, 1, 0])
    scores = np.array([bad, bad, 0.5, 0.2, 0.1])  # NaN positives used to give user 1 an AUC of 1.0
    with pytest.raises(ValueError, match="2 of 5 are not finite"):
        gauc(groups, labels, scores)
    with pytest.raises(ValueError, match="not finite"):
        auc(labels, scores)
    with pytest.raises(ValueError, match="not finite"):
        task_metrics(groups, labels[:, None], scores[:, None], ["click"])


# A handmade day: click positives c, purchase positives p (a subset of c), sampled negatives n.
#   user 1: n 0.9, c 0.8, p 0.7, p 0.6, c 0.1 -> within click: p {0.7, 0.6} vs c {0.8, 0.1}: 2/4 = 0.5, weight 4
#   user 2: p 0.2, c 0.3, n 0.05           -> within click: p 0.2 below c 0.3: 0.0, weight 2
#   user 3: p 0.4, n 0.5                   -> no click-but-no-purchase: not used
#   user 4: c 0.1, c 0.2, n 0.3            -> no purchase: not used
NESTED_USERS = np.array([1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4])
NESTED_CLICK = np.array([0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0])
NESTED_BUY = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
NESTED_PBUY = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.05, 0.4, 0.5, 0.1, 0.2, 0.3])


def test_nested_task_gets_its_gauc_within_the_outer_tasks_positives():
    labels = np.stack([NESTED_CLICK, NESTED_BUY], axis=1).astype(float)
    probs = np.stack([np.full(13, 0.5), NESTED_PBUY], axis=1)
    m = task_metrics(NESTED_USERS, labels, probs, ["click", "purchase"])
    assert m["purchase"]["gauc_within_click"] == pytest.approx((0.5 * 4 + 0.0 * 2) / 6)
    assert m["purchase"]["gauc_within_click_users"] == 2
    assert "gauc_within_purchase" not in m["click"]  # click is not nested in purchase
    # the entire-space GAUC is another number: the sampled negatives take part there
    # (user 1: 2/6 over 5 samples, user 2: 1/2 over 3, user 3: 0 over 2, user 4 skipped)
    assert m["purchase"]["gauc"] == pytest.approx((5 / 3 + 1.5 + 0.0) / 10)


def test_nesting_is_read_from_the_labels():
    from ml_core.eval.metrics import nested_tasks

    click, buy = NESTED_CLICK, NESTED_BUY
    assert nested_tasks(np.stack([click, buy], 1), ["click", "purchase"]) == [("purchase", "click")]
    assert nested_tasks(np.stack([buy, click], 1), ["purchase", "click"]) == [("purchase", "click")]
    broken = buy.copy()
    broken[0] = 1  # a purchase without a click: not nested
    assert nested_tasks(np.stack([click, broken], 1), ["click", "purchase"]) == []
    assert nested_tasks(np.stack([click, click], 1), ["a", "b"]) == []  # equal sets: neither way
    assert nested_tasks(np.stack([click, 0 * click], 1), ["a", "b"]) == []  # no positives
    rng = np.random.default_rng(0)
    labels = np.stack([click.repeat(4), rng.permutation(buy.repeat(4))], 1).astype(float)
    assert nested_tasks(labels, ["a", "b"]) == []
    m = task_metrics(rng.integers(0, 5, 52), labels, rng.random((52, 2)), ["a", "b"])
    assert not any(k.startswith("gauc_within") for t in m.values() for k in t)


@pytest.mark.parametrize("tied", [False, True])
def test_tasks_sharing_one_score_column_get_each_their_own_metrics(tied):
    # a sanity scorer gives every task the same scores: one sort serves both label columns
    rng = np.random.default_rng(7)
    n = 4000
    users = rng.integers(0, 90, n) * 13
    labels = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.1], axis=1).astype(float)
    s = rng.integers(0, 5, n).astype(float) if tied else rng.random(n)
    shared = task_metrics(users, labels, np.stack([s, s], axis=1), ["a", "b"])
    for k, task in enumerate(["a", "b"]):
        assert shared[task]["gauc"] == pytest.approx(brute_gauc(users, labels[:, k], s), abs=1e-12)
        assert shared[task]["auc"] == pytest.approx(brute_gauc(np.zeros(n), labels[:, k], s), abs=1e-12)
    auc_g, size, ok = group_aucs(users, labels, s)  # [G, K] at once = one column at a time
    for k in range(2):
        one = group_aucs(users, labels[:, k], s)
        assert np.array_equal(auc_g[:, k], one[0]) and np.array_equal(ok[:, k], one[2])
        assert np.array_equal(size, one[1])
