"""A compact console display of a run: each stage (step) as it starts and ends, with its
duration, and the stages' own progress messages (training, evaluation), one line each::

    [2026-01-05] trained_model: started
    [2026-01-05] trained_model: epoch 1/1 step 50/200 (25%): loss 0.5123 | 812 samples/s (790 since start) | ETA epoch 12s
    [2026-01-05] trained_model: done in 45.1s
    [2026-01-05] deployed_model: skipped

It is a Dagster logger (:data:`stage_logger`). Every record of a run reaches a run's loggers;
this one keeps the step events (``STEP_START``, ``STEP_SUCCESS``, ``STEP_FAILURE``,
``STEP_SKIPPED``) and the messages a step logs while it runs (``context.log``), and prints each
in one line, where Dagster's console logger prints every event in full. It plugs into any
``execute_in_process`` call, the job and the run config each getting one wrapper::

    job = with_stage_display(defs.resolve_job_def("daily_data"))
    job.execute_in_process(partition_key=day, run_config=stage_display_config(
        {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}))

A stage's messages at or above ``console_level`` (default ``WARNING``) are left to the console
logger, which prints them in full; the display shows those from ``log_level`` (default
``INFO``) up to below it, so nothing is printed twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

#: The display's key among a job's loggers (``run_config["loggers"][STAGE_LOGGER]``).
STAGE_LOGGER = "stages"

_STEP_EVENTS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"}


class StageDisplay(logging.Handler):
    """Prints a run's step events and step messages, one compact line each, to ``stream``
    (default: ``sys.stdout`` at the time of printing).

    Args:
        log_level (int): lowest level of a stage's own messages that is shown (default: INFO).
        console_level (int): messages at this level and above are not shown (the console
            logger prints them); ``logging.CRITICAL + 1`` shows every level (default: WARNING).
        stream: where lines go (default: ``sys.stdout``, looked up at each line).
        clock (Callable[[], float]): seconds, for step durations (default: ``time.perf_counter``).
    """

    def __init__(self, log_level: int = logging.INFO, console_level: int = logging.WARNING, stream=None,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__(level=logging.DEBUG)  # step events are DEBUG records: filtered in emit
        self.log_level = log_level
        self.console_level = console_level
        self.stream = stream
        self.clock = clock
        self._started: dict[str, float] = {}

    def line(self, record: logging.LogRecord) -> str | None:
        """The display line of ``record``, or ``None`` when it is not shown."""
        meta = getattr(record, "dagster_meta", None)
        if meta is None:  # not a Dagster record
            return None
        tags = meta.get("job_tags") or {}
        first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
        where = tags.get("dagster/partition") or (f"{first}..{last}" if first else meta.get("job_name") or "run")
        step = meta.get("step_key")
        event = meta.get("dagster_event")
        if event is not None:
            kind = event.event_type_value
            if kind not in _STEP_EVENTS or not step:
                return None
            if kind == "STEP_START":
                self._started[step] = self.clock()
                return f"[{where}] {step}: started"
            if kind == "STEP_SKIPPED":
                return f"[{where}] {step}: skipped"
            start = self._started.pop(step, None)
            took = f"{self.clock() - start:.1f}s" if start is not None else "?"
            return f"[{where}] {step}: " + (f"done in {took}" if kind == "STEP_SUCCESS" else f"FAILED after {took}")
        # a running step's own messages (not Dagster's notes on steps it does not run)
        if step not in self._started or not self.log_level <= record.levelno < self.console_level:
            return None
        return f"[{where}] {step}: {meta.get('orig_message', record.getMessage())}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.line(record)
            if text is not None:
                stream = self.stream or sys.stdout
                stream.write(text + "\n")
                stream.flush()
        except Exception:  # a display problem never fails a run
            self.handleError(record)


@dg.logger(
    config_schema={
        "log_level": dg.Field(str, default_value="INFO", is_required=False,
                              description="Lowest level of a stage's own messages that is shown."),
        "console_level": dg.Field(str, default_value="WARNING", is_required=False,
                                  description="Messages at this level and above are left to the console logger."),
    },
    description="One line per step start / end (with its duration) and per step message: a compact run display.",
)
def stage_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A logger whose :class:`StageDisplay` prints the run's stages and their messages to stdout."""
    cfg = init_context.logger_config
    # not registered with logging.getLogger: one per run, dropped with the run
    logger = logging.Logger(f"moge.stages.{init_context.run_id}", level=logging.DEBUG)
    logger.addHandler(StageDisplay(level_number(cfg["log_level"]), level_number(cfg["console_level"])))
    return logger


def level_number(name: str) -> int:
    """``"info"`` -> 20; ``ValueError`` naming the known levels otherwise."""
    levels = logging.getLevelNamesMapping()
    if name.upper() not in levels:
        raise ValueError(f"log level {name!r}: expected one of {sorted(levels, key=levels.get)}")
    return levels[name.upper()]


def with_stage_display(job: dg.JobDefinition) -> dg.JobDefinition:
    """``job`` with :data:`stage_logger` among its loggers (its other loggers kept). The display
    prints only in runs whose config names it: :func:`stage_display_config`."""
    return job.with_logger_defs({**job.loggers, STAGE_LOGGER: stage_logger})


def stage_display_config(run_config: Mapping[str, Any] | None = None, log_level: str = "INFO",
                         console_level: str = "WARNING") -> dict[str, Any]:
    """``run_config`` (default: none) with the stage display switched on. Only the loggers a run
    config names run (one that names none gets Dagster's console logger at DEBUG): with this one
    alone the console is off, so name the console in ``run_config`` to keep it, as the run
    command does for warnings and errors."""
    out = dict(run_config or {})
    out["loggers"] = {**out.get("loggers", {}),
                      STAGE_LOGGER: {"config": {"log_level": log_level, "console_level": console_level}}}
    return out
