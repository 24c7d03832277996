"""Late data on a real file source: rows added to day 3 after the flow ran. The day's source
version changes (and no other day's); re-ingesting day 3 and rebuilding day 5's graphs, whose
previous-day state was built from the old day 3, gives exactly the graphs a fresh lake builds:
the stale state is not used (a full rebuild, with its reason)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from ml_core import stages as P
from ml_core.catalog import GRAPHS
from ml_core.data.sources import day_versions
from ml_core.storage import Lake
from tests.conftest import make_config

DAY0 = date(2026, 3, 1)
DAYS = [(DAY0 + timedelta(days=i)).isoformat() for i in range(6)]
BEHAVIOURS = ["view"] * 6 + ["cart", "fav", "buy"]


def _rows(day: int, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    t0 = int(datetime.combine(DAY0 + timedelta(days=day), datetime.min.time(), tzinfo=UTC).timestamp())
    return [f"u{int(rng.integers(80))},i{int(rng.integers(50))},{BEHAVIOURS[int(rng.integers(9))]},"
            f"{t0 + int(rng.integers(86_400))},{int(rng.integers(5))}" for _ in range(n)]


def _config(src, root):
    return make_config(
        root, 'source.kind="table"', f'source.path="{src}"', f'source.start_date="{DAYS[0]}"',
        'source.columns={user_id="user", item_id="item", behavior="action", ts="time", category="cat"}')


def test_rows_added_to_a_day_change_its_version_and_rebuild_the_windows_that_read_it(tmp_path):
    src = tmp_path / "events.csv"
    header = ["user,item,action,time,cat"]
    src.write_text("\n".join(header + [r for d in range(6) for r in _rows(d, 300, d)]) + "\n")
    cfg, lake = _config(src, tmp_path / "a"), Lake(tmp_path / "a")
    P.run_data_days(cfg, lake, DAYS)
    before = day_versions(cfg.source, DAYS)
    logs_before = lake.version("interaction_logs", DAYS[2])

    with open(src, "a") as fh:  # late rows of day 3 arrive
        fh.write("\n".join(_rows(2, 120, 99)) + "\n")
    after = day_versions(cfg.source, DAYS)
    assert {d for d in DAYS if after[d] != before[d]} == {DAYS[2]}

    # what the automation re-runs, in its order: the day's logs, then a window that reads it
    # (day 5 = DAYS[4]: its previous day's graphs were built from the old logs of DAYS[2])
    P.run_interaction_logs(cfg, lake, DAYS[2])
    assert lake.version("interaction_logs", DAYS[2]) != logs_before
    out = P.run_window_graphs(cfg, lake, DAYS[4], P.graph_window_days(cfg, DAYS[4]))
    assert out.mode == "full"
    assert "other versions of the logs of ['2026-03-03']" in out.bipartite.full_rebuild_reason

    fresh = Lake(tmp_path / "b")  # the same source, built from scratch
    P.run_data_days(_config(src, tmp_path / "b"), fresh, DAYS[:4])
    P.run_window_graphs(cfg, fresh, DAYS[4], P.graph_window_days(cfg, DAYS[4]))
    for asset in GRAPHS.values():
        assert lake.version(asset, DAYS[4]) == fresh.version(asset, DAYS[4]), asset

    # day 6's graphs from day 5's (rebuilt, on today's logs): incremental again
    again = P.run_window_graphs(cfg, lake, DAYS[5], P.graph_window_days(cfg, DAYS[5]))
    assert again.mode == "incremental", again.bipartite.full_rebuild_reason
