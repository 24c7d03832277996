"""Days without data in a file source, through every stage of the daily flow: a table source
written to tmp_path with data on days 1, 2 and 4 (day 3 is a gap) and nothing after day 4.

Data stages give empty partitions (logs, samples) or graphs and features over whatever the window
holds (an entirely empty window: empty graphs and feature tables); training on a window with no
sample is a ValueError that says so; an evaluation day with no sample is recorded as not scored
and the deployment refuses it with that reason."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from ml_core import stages as P
from ml_core.data.sources import day_versions
from ml_core.data.versions import EMPTY_VERSION
from ml_core.inference import score_day
from ml_core.registry.bundles import BundleStore
from ml_core.storage import Lake
from tests.conftest import make_config

DAY0 = date(2026, 2, 1)
DAYS = [(DAY0 + timedelta(days=i)).isoformat() for i in range(8)]
DATA_DAYS = (0, 1, 3)  # day 2 is a gap; nothing after day 3
BEHAVIOURS = ["view"] * 6 + ["cart", "fav", "buy"]


def _write_source(path) -> None:
    rng = np.random.default_rng(0)
    lines = ["user,item,action,time,cat"]
    for k in DATA_DAYS:
        t0 = int(datetime.combine(DAY0 + timedelta(days=k), datetime.min.time(), tzinfo=UTC).timestamp())
        for _ in range(400):
            u, i = int(rng.integers(60)), int(rng.integers(40))
            b = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
            lines.append(f"u{u},i{i},{b},{t0 + int(rng.integers(86_400))},{i % 5}")
    path.write_text("\n".join(lines) + "\n")


def _config(root, lake_root, *extra):
    return make_config(
        lake_root, 'source.kind="table"', f'source.path="{root / "events.csv"}"', f'source.start_date="{DAYS[0]}"',
        'source.columns={user_id="user", item_id="item", behavior="action", ts="time", category="cat"}',
        "train.max_steps_per_epoch=5", "train.batch_size=256", *extra)


@pytest.fixture(scope="module")
def gap_lake(tmp_path_factory):
    """The data stages of all eight days (days 5-8 have no data), run in order."""
    root = tmp_path_factory.mktemp("gap")
    _write_source(root / "events.csv")
    cfg = _config(root, root / "lake")
    lake = Lake(root / "lake")
    P.run_data_days(cfg, lake, DAYS)
    return root, cfg, lake


def test_day_versions_of_the_gap_source(gap_lake):
    _, cfg, _ = gap_lake
    v = day_versions(cfg.source, [date.fromisoformat(d) for d in DAYS])
    assert [v[d] is not None and v[d] != EMPTY_VERSION for d in DAYS] == [True, True, False, True] + [False] * 4
    assert v[DAYS[2]] == EMPTY_VERSION and all(v[d] is None for d in DAYS[4:])


@pytest.mark.parametrize("incremental", [True, False])
def test_data_stages_give_empty_partitions(gap_lake, tmp_path, incremental):
    root, cfg, lake = gap_lake
    if not incremental:  # the full rebuild of every day's graphs, on a lake of its own
        cfg, lake = _config(root, tmp_path / "lake", "graph.incremental=false"), Lake(tmp_path / "lake")
        P.run_data_days(cfg, lake, DAYS)
    for k, d in enumerate(DAYS):
        logs = lake.read_table("interaction_logs", d)
        samples = lake.read_table("training_samples", d)
        assert (logs.height > 0) == (k in DATA_DAYS) and (samples.height > 0) == (k in DATA_DAYS), d
    # graph/feature windows (3 days before): partly empty (day 4: days 1-3, day 3 a gap), entirely
    # empty (day 8: days 5-7), or after the data (day 6: days 3-5, only day 4 has rows)
    assert P.load_bipartite(lake, DAYS[3]).days == DAYS[0:3]
    assert P.load_bipartite(lake, DAYS[3]).ui.nnz > 0 and P.load_bipartite(lake, DAYS[5]).ui.nnz > 0
    empty = P.load_bipartite(lake, DAYS[7])
    assert empty.days == DAYS[4:7] and empty.ui.nnz == 0 and len(empty.item_ids) == 0
    assert P.load_similarity(lake, DAYS[7], "user").adj.nnz == 0
    users, items = P.load_features(lake, DAYS[7])
    assert users.height == 0 and items.height == 0
    assert lake.read_table("training_samples", DAYS[7]).height == 0


def test_training_on_partly_empty_windows_and_a_clear_error_on_empty_ones(gap_lake):
    _, cfg, lake = gap_lake
    res = P.run_trained_model(cfg, lake, DAYS[3], P.train_window_days(cfg, DAYS[3]))  # days 2 and 3 (empty)
    assert res.train_days == DAYS[1:3] and res.samples_seen > 0
    with pytest.raises(ValueError, match=r"no training samples: the training window \['2026-02-06', '2026-02-07'\]"):
        P.run_trained_model(cfg, lake, DAYS[7], P.train_window_days(cfg, DAYS[7]))  # days 6 and 7: no data
    assert not lake.exists("trained_model", DAYS[7])


def test_an_evaluation_day_without_samples_is_recorded_and_refused(gap_lake):
    _, cfg, lake = gap_lake
    P.run_trained_model(cfg, lake, DAYS[2], P.train_window_days(cfg, DAYS[2]))  # trained on days 1-2
    ev = P.run_model_evaluation(cfg, lake, DAYS[2])  # day 3: the gap
    assert ev.samples == 0 and ev.candidate == {} and ev.skipped.startswith("no evaluation samples")
    assert P.load_evaluation(lake, DAYS[2]).skipped == ev.skipped
    assert "Not scored: no evaluation samples" in P.gauc_table(ev)
    dec = P.run_deployed_model(cfg, lake, DAYS[2])
    assert not dec.promoted and dec.reasons == [ev.skipped]
    assert BundleStore(lake.root).production() is None
    # scored directly, the empty day gives NaN metrics with n = 0, not an error deep in numpy
    from ml_core.registry.bundles import load_model

    model, fspec, mspec, _ = load_model(lake.partition_dir("trained_model", DAYS[2]))
    metrics = score_day(model, fspec, P.load_day_inputs(lake, DAYS[2]), mspec.fanouts).metrics
    assert all(m["n"] == 0 and np.isnan(m["gauc"]) for m in metrics.values())
    # a day with samples is still scored as before
    P.run_trained_model(cfg, lake, DAYS[3], P.train_window_days(cfg, DAYS[3]))
    scored = P.run_model_evaluation(cfg, lake, DAYS[3])
    assert scored.samples > 0 and not scored.skipped and set(scored.candidate) == set(cfg.samples.tasks)


def test_a_comparison_on_an_empty_day_is_a_clear_error(gap_lake):
    _, cfg, lake = gap_lake
    with pytest.raises(ValueError, match="no evaluation samples"):
        P.run_model_comparison(cfg, lake, DAYS[2], DAYS[0:2])
    with pytest.raises(ValueError, match="no training samples"):
        P.run_model_comparison(cfg, lake, DAYS[3], [DAYS[2]])
