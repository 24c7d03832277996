"""The run display of the run command (orchestration/console.py): one line per stage start and
end with its duration, and the stages' own progress lines, in a real run of the daily flow."""

import io
import logging
import re
from types import SimpleNamespace

import dagster as dg
import pytest

from ml_core.inference import SCORE_BATCH
from ml_core.storage import Lake
from orchestration.console import StageDisplay, level_number, stage_display_config, with_stage_display
from orchestration.definitions import defs
from tests.assets.test_flow_assets import resources
from tests.conftest import build_data_days


def record(step, message="", event=None, level=logging.INFO, partition="2026-01-02"):
    """A record as a run's loggers receive it: the message and Dagster's metadata on it."""
    meta = {"job_name": "daily_flow", "job_tags": {"dagster/partition": partition}, "step_key": step,
            "orig_message": message, "dagster_event": event and SimpleNamespace(event_type_value=event)}
    return logging.makeLogRecord({"levelno": level, "msg": f"daily_flow - run - {step} - {message}", "dagster_meta": meta})


def test_display_lines_on_a_fake_clock():
    now = [10.0]
    out = io.StringIO()
    display = StageDisplay(stream=out, clock=lambda: now[0])
    display.handle(record("model_evaluation", "Skipping step model_evaluation ..."))  # not running: not shown
    display.handle(record("model_evaluation", event="STEP_SKIPPED", level=logging.DEBUG))
    display.handle(record("trained_model", event="STEP_START", level=logging.DEBUG))
    display.handle(record("trained_model", "epoch 1/1 step 50/200 (25%): loss 0.5"))
    display.handle(record("trained_model", "some detail", level=logging.DEBUG))  # below INFO
    display.handle(record("trained_model", "not promoted", level=logging.WARNING))  # the console logger's
    display.handle(record(None, event="RUN_START", level=logging.DEBUG))  # not a step event
    display.handle(record("trained_model", event="ASSET_MATERIALIZATION", level=logging.DEBUG))
    now[0] += 42.25
    display.handle(record("trained_model", event="STEP_SUCCESS", level=logging.DEBUG))
    display.handle(record("deployed_model", event="STEP_START", level=logging.DEBUG, partition=None))
    now[0] += 1.0
    display.handle(record("deployed_model", event="STEP_FAILURE", level=logging.ERROR, partition=None))
    display.handle(logging.makeLogRecord({"msg": "a plain Python record"}))
    assert out.getvalue().splitlines() == [
        "[2026-01-02] model_evaluation: skipped",
        "[2026-01-02] trained_model: started",
        "[2026-01-02] trained_model: epoch 1/1 step 50/200 (25%): loss 0.5",
        "[2026-01-02] trained_model: done in 42.2s",
        "[daily_flow] deployed_model: started",
        "[daily_flow] deployed_model: FAILED after 1.0s",
    ]


def test_console_level_decides_which_messages_the_display_leaves_out():
    out = io.StringIO()
    display = StageDisplay(log_level=logging.DEBUG, console_level=level_number("critical") + 1, stream=out)
    display.handle(record("s", event="STEP_START", level=logging.DEBUG))
    for level in (logging.DEBUG, logging.WARNING, logging.ERROR):
        display.handle(record("s", logging.getLevelName(level), level=level))
    assert out.getvalue().splitlines()[1:] == ["[2026-01-02] s: DEBUG", "[2026-01-02] s: WARNING", "[2026-01-02] s: ERROR"]
    with pytest.raises(ValueError, match="log level 'loud'"):
        level_number("loud")


def test_the_daily_flow_shows_each_stage_and_the_progress_lines(tmp_path, capsys):
    """A day of the daily flow run as the run command runs it (days 1-3 built beforehand): each
    stage's start and end, and a progress line every 10 training steps / scoring batches."""
    res = resources(tmp_path, 'train.model="mlp"', "train.max_steps_per_epoch=20", "train.log_every_steps=10",
                    "deploy.bootstrap_samples=20")
    build_data_days(res["pipeline"].config(), Lake(tmp_path), ["2026-01-01", "2026-01-02", "2026-01-03"])
    capsys.readouterr()
    run_config = stage_display_config({"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    instance = dg.DagsterInstance.ephemeral()
    for name in ("daily_logs", "daily_data", "daily_model"):  # the run command's three runs of the day
        job = with_stage_display(defs.resolve_job_def(name))
        result = job.execute_in_process(partition_key="2026-01-04", instance=instance, resources=res,
                                        run_config=run_config)
        assert result.success
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("[2026-01-04] ") for line in lines), lines  # no verbose event log on stdout
    started = {line.split()[1].rstrip(":") for line in lines if line.endswith(": started")}
    done = {m[1] for line in lines if (m := re.fullmatch(r"\S+ (\w+): done in \d+\.\d+s", line))}
    assert started == done >= {"interaction_logs", "window_graphs", "node_features", "training_samples",
                               "trained_model", "model_evaluation", "deployed_model"}, lines
    training = [line for line in lines if line.startswith("[2026-01-04] trained_model: epoch 1/1 step ")]
    assert [line.split()[5] for line in training] == ["10/20", "20/20"], lines
    assert any(line.startswith("[2026-01-04] model_evaluation: scoring the candidate") for line in lines)
    n = Lake(tmp_path).read_table("training_samples", "2026-01-04").height
    batches = -(-n // SCORE_BATCH)  # scoring from node representations: a line every 10 batches
    assert batches >= 10
    progress = [line for line in lines if line.startswith("[2026-01-04] model_evaluation: candidate: ")]
    assert len(progress) == batches // 10 and progress[0].startswith(
        f"[2026-01-04] model_evaluation: candidate: {10 * SCORE_BATCH:,}/{n:,} samples"), progress
    # one stage in order: started, its messages, done
    i, j = lines.index("[2026-01-04] trained_model: started"), lines.index(training[-1])
    assert lines[i + 1].startswith("[2026-01-04] trained_model: training mlp") and i < lines.index(training[0]) < j
    # after the epoch line: the final validation and why training stopped (ml_core/train/trainer.py), then done
    assert lines[j + 1].startswith("[2026-01-04] trained_model: epoch 1/1 done in ")
    assert lines[j + 2].startswith("[2026-01-04] trained_model: validation after 20 steps: mean GAUC ")
    assert lines[j + 3].startswith("[2026-01-04] trained_model: training stopped (max_steps) after 20 steps")
    assert re.fullmatch(r"\[2026-01-04\] trained_model: done in \d+\.\ds", lines[j + 4]), lines[j:]
