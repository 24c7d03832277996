"""benchmarks/backfill.py's pieces that need no Dagster process: its arguments, the pipeline
config it writes for each side, and its run-timeline arithmetic (the benchmark itself is not run
by the suite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.backfill import config_text, max_overlap, model_chain, parse_args
from ml_core.config import load_config
from ml_core.stages.windows import model_start


def test_defaults_are_thirty_days_of_the_small_synthetic_source():
    args = parse_args([])
    assert (args.days, args.start, args.sides, args.concurrently) == (30, "2026-01-01", "both", False)
    assert args.timeout_s == 4 * 3600


@pytest.mark.parametrize("argv", [["--days", "4", "--train-days", "3"], ["--max-steps", "0"], ["--start", "2026-13-01"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises((SystemExit, ValueError)):
        parse_args(argv)


def test_the_config_covers_exactly_the_benchmarked_days(tmp_path):
    args = parse_args(["--start", "2026-03-01", "--days", "12", "--max-steps", "7", "--window-days", "4",
                       "--train-days", "2"])
    path = tmp_path / "pipeline.toml"
    path.write_text(config_text(args, tmp_path / "data"))
    cfg = load_config(path)
    assert (cfg.source.kind, cfg.source.preset) == ("synthetic", "small")
    assert (cfg.source.start_date, cfg.source.end_date) == ("2026-03-01", "2026-03-12")
    assert (cfg.graph.window_days, cfg.train.train_days, cfg.train.max_steps_per_epoch) == (4, 2, 7)
    assert cfg.storage.root == str(tmp_path / "data")
    assert model_start(cfg).isoformat() == "2026-03-04"


def test_the_catch_up_config_is_open_ended_from_days_ago(tmp_path):
    args = parse_args(["--sides", "catchup", "--days", "20", "--away-days", "5"])
    path = tmp_path / "pipeline.toml"
    path.write_text(config_text(args, tmp_path / "data"))
    cfg = load_config(path)
    today = datetime.now(UTC).date()
    assert cfg.source.start_date == (today - timedelta(days=20)).isoformat() and cfg.source.end_date == ""
    assert cfg.automation.catch_up_days == 5


def test_run_timeline_arithmetic():
    assert max_overlap([(0, 10), (5, 15), (10, 20)]) == 2  # an end before a start at the same instant

    def run(day, created, started, steps):
        return {"partition": day, "created": created, "started": started, "steps": steps}

    runs = [run("d1", 0, 5, {"trained_model": [6, 8], "deployed_model": [9, 10]}),
            run("d2", 25, 40, {"trained_model": [42, 50], "deployed_model": [51, 52]})]
    gaps = model_chain(runs, ["d1", "d2"])
    assert gaps == {"tick_wait_s": {"mean": 15.0, "sum": 15.0}, "launch_s": {"mean": 15.0, "sum": 15.0},
                    "to_first_step_s": {"mean": 2.0, "sum": 2.0}}
    # several days in one run leave no gap to count
    assert model_chain([run("d1", 0, 5, {"trained_model": [6, 8], "deployed_model": [9, 10]})], ["d1", "d2"]) == {}
