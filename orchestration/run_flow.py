"""Run the daily flow over a range of days on a persistent Dagster instance, then print the
GAUC table of the last day and the production model.

    python -m orchestration.run_flow --start 2026-01-01 --end 2026-01-08
    python -m orchestration.run_flow --start 2025-01-01 --end 2025-12-31 --range

Each day is one run of the ``daily_logs`` job, from the second day one of ``daily_data`` (the
derived data) and, from the first day with a whole training window, one of ``daily_model`` (in
process, in date order, so every day's windows are already materialized), recorded in ``$DAGSTER_HOME`` so ``dagster dev`` shows the runs, partitions,
metadata and lineage afterwards.

With ``--range`` (a backfill of history, in this process, no daemon) each job runs the range
instead: one run per ``automation.data_days_per_run`` days of logs, then of derived data, then
one per ``automation.model_days_per_run`` model days (0: the whole range in one run), each
run's days in date order (:mod:`assets.ranges`). Every day is recorded as a one-day run
records it (metadata, data version, decision); a failure names its day, the days before it stay
materialized, and running the command again over the range re-runs it. While a day runs, each stage prints one line when it starts and
one when it ends (with its duration), and the stages' progress lines (training steps, evaluation
scoring) in between (:mod:`orchestration.console`); warnings and errors come from Dagster's
console logger (``--log-level``). For parallel backfills and the daily automation use the UI
(docs/operations.md).

Stopping (SIGINT, e.g. Ctrl-C, or SIGTERM, what a container stop sends): the first signal asks the
run in progress to stop (:mod:`ml_core.stop`): its stage fails at its next checkpoint (between two
training steps or scoring batches, before a partition is written) with the signal as the reason,
publishes nothing, the run is marked failed, and the command exits with 128 + the signal's number
without starting another run. A second signal exits at once (the run is then left STARTED, and
marked failed by crash recovery as below).

Crash recovery (orchestration/recovery.py): each run is tagged with this process, so that if the
process is killed, the ``crash_recovery`` sensor of ``dagster dev`` (or this command, when it
starts again) marks the run failed instead of leaving it STARTED. Running the command again
re-runs every day of the range; a day's partitions are replaced atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta

#: The signals that stop the run command.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """For the block: SIGINT and SIGTERM become :func:`ml_core.stop.request_stop` (the first) and
    an immediate exit (the second). Yields ``{"signal": number}`` once one arrived (empty until
    then); the previous handlers are put back after the block (the command can run in a test's process).

    The signals are read from a wakeup pipe (:func:`signal.set_wakeup_fd`) by a thread of their
    own, not by a Python handler: Dagster's in-process execution swaps in its own SIGINT/SIGTERM
    handler for the length of a run (it records the signal and runs on), and the pipe receives
    every signal whatever handler is installed. The handlers installed here do nothing; they
    replace the default ones (KeyboardInterrupt, or death by SIGTERM) so the pipe sees them."""
    from ml_core.stop import clear_stop, request_stop

    got: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield got
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def watch() -> None:
        while (data := os.read(read_fd, 1)) and data[0] != 0:  # a 0 byte: the block ended
            signum = data[0]
            if signum not in STOP_SIGNALS:
                continue
            name = signal.Signals(signum).name
            if got:
                print(f"\n{name} again: exiting now (the run in progress stays STARTED until crash recovery)",
                      file=sys.stderr, flush=True)
                os._exit(128 + signum)
            got["signal"] = signum
            request_stop(f"{name} received")
            print(f"\n{name}: stopping at the next checkpoint of the stage in progress (again to exit at once)",
                  file=sys.stderr, flush=True)
        os.close(read_fd)

    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="moge-stop-signals", daemon=True)
    watcher.start()
    try:
        yield got
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.write(write_fd, b"\0")
        watcher.join(timeout=5)
        os.close(write_fd)
        clear_stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", help="first day (default: source.start_date)")
    ap.add_argument("--end", help="last day, inclusive (default: start + 7 days)")
    ap.add_argument("--days", type=int, default=8, help="number of days when --end is not given")
    ap.add_argument("--range", action="store_true",
                    help="run each job over the range (automation.data_days_per_run / model_days_per_run days a run) "
                    "instead of one run per day and job")
    ap.add_argument("--data-only", action="store_true",
                    help="the logs and derived data only (a history backfill): no model runs")
    ap.add_argument("--log-level", default="WARNING", help="Dagster console log level (default: WARNING)")
    args = ap.parse_args(argv)
    with stop_on_signals() as stopped:
        return run_days(args, stopped)


def run_days(args, stopped: dict[str, int]) -> int:
    """The days of ``args``, one run per job and day; ``stopped``: :func:`stop_on_signals`'s."""
    from orchestration.instance_setup import sync_instance_yaml

    msg = sync_instance_yaml()  # $DAGSTER_HOME (default data/dagster_home) with this repo's settings
    if msg:
        print(msg, file=sys.stderr)

    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from ml_core.registry.interface import open_bundle_registry
    from ml_core.stages.evaluation import gauc_table, load_evaluation
    from ml_core.stages.windows import model_start
    from orchestration.console import stage_display_config, with_stage_display
    from orchestration.definitions import defs
    from orchestration.jobs import DAILY_JOBS, daily_model
    from orchestration.recovery import process_tags, recover

    cfg = defs.resources["pipeline"].config()
    start = date.fromisoformat(args.start or cfg.source.start_date)
    end = date.fromisoformat(args.end) if args.end else start + timedelta(days=args.days - 1)
    jobs = [with_stage_display(defs.resolve_job_def(j.name)) for j in DAILY_JOBS
            if not (args.data_only and j.name == daily_model.name)]
    # the compact stage display, and Dagster's console logger for what is at --log-level and above
    run_config = stage_display_config({"loggers": {"console": {"config": {"log_level": args.log_level}}}},
                                      console_level=args.log_level)
    instance = dg.DagsterInstance.get()
    for line in recover(instance, cfg.storage.root):  # runs of an earlier, killed invocation
        print(f"crash recovery: {line}", file=sys.stderr)
    t_all = time.perf_counter()
    days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    observe_source(instance, defs, cfg, days)
    for job, first, last in (range_runs(jobs, days, cfg) if args.range else day_runs(jobs, days)):
        t0 = time.perf_counter()
        run_id = str(uuid.uuid4())
        part = {"partition_key": first} if first == last and not args.range else {}
        tags = {**process_tags(run_id), **({} if part else {ASSET_PARTITION_RANGE_START_TAG: first,
                                                 ASSET_PARTITION_RANGE_END_TAG: last})}
        res = job.execute_in_process(**part, instance=instance, raise_on_error=False, run_id=run_id, tags=tags,
                                     run_config=run_config)
        status = "ok" if res.success else "FAILED"
        label = first if first == last else f"{first}..{last}"
        print(f"[{label}] {job.name} {status} in {time.perf_counter() - t0:.1f}s (run {res.run_id[:8]})", flush=True)
        if stopped:
            print(f"stopped by {signal.Signals(stopped['signal']).name}: run {res.run_id[:8]} of {job.name} "
                  f"[{label}] is {'complete' if res.success else 'marked failed'}, no later run was started",
                  file=sys.stderr, flush=True)
            return 128 + stopped["signal"]
        if not res.success:
            for ev in res.all_events:
                if ev.is_failure:
                    print(ev.message, file=sys.stderr)
                if ev.is_step_failure or ev.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
                    print(f"  {ev.step_key}: {_error_text(ev)}", file=sys.stderr)  # what failed, and why
            return 1
    lake = defs.resources["pipeline"].lake()
    print(f"\nflow over {start}..{end} finished in {time.perf_counter() - t_all:.1f}s")
    if args.data_only:
        return 0
    if lake.exists("deployed_model", end.isoformat()):
        ev = load_evaluation(lake, end.isoformat(), judged=True)
        print(f"\nGAUC table, evaluation day {end} (model trained on {ev.candidate_manifest['train_days']}):\n")
        print(gauc_table(ev))
    else:  # a range of data days only (before the first model day)
        print(f"\nno deployment decision for {end}: the model partitions start on {model_start(cfg)}")
    store = open_bundle_registry(cfg.registry, lake.root)
    prod = store.production()
    print(f"\nproduction model: {prod['version'] if prod else 'none'}"
          f"  ({store.version_dir(prod['version']) if prod else '-'})")
    return 0


def observe_source(instance, defs, cfg, days: list[str]) -> None:
    """Observe the source first when the command ingests a day that one observation reports (the
    newest days, :func:`assets.logs.observed_days`), as the automation does before it ingests:
    the logs then record the source version they read, and when the automation is turned on
    later its first observation finds the same versions and re-ingests nothing. Without it the
    first observation counted as new data for every day the command had written (a catch-up after
    a week away re-ingested the ten days before it and rebuilt their windows)."""
    from dagster._core.definitions.observe import observe  # not exported in 1.13 (docs/dagster.md)

    from assets.logs import observed_days, source_logs

    observed = observed_days(cfg)
    if set(days) & set(observed):
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        res = observe([source_logs], instance=instance, resources=defs.resources, partition_key=observed[-1],
                      raise_on_error=False, run_config=quiet)
        if not res.success:
            print("the source could not be observed first: the automation may re-ingest these days once",
                  file=sys.stderr)


def day_runs(jobs: list, days: list[str]):
    """``(job, day, day)`` for each day and job that has it: derived data start on the 2nd day,
    models once a training window exists."""
    return [(job, d, d) for d in days for job in jobs if job.partitions_def.has_partition_key(d)]


def range_runs(jobs: list, days: list[str], cfg):
    """``(job, first, last)`` for each job in order (logs, data, model), its days of ``days`` cut
    into runs of ``automation.data_days_per_run`` (``model_days_per_run`` for the model job)."""
    from ml_core.stages.ranges import chunks
    from orchestration.jobs import daily_model

    out = []
    for job in jobs:
        size = cfg.automation.model_days_per_run if job.name == daily_model.name else cfg.automation.data_days_per_run
        out += [(job, c[0], c[-1]) for c in chunks([d for d in days if job.partitions_def.has_partition_key(d)], size)]
    return out


def _error_text(event) -> str:
    """The error of a failed (or retried) step, with the exceptions it came from."""
    data = event.event_specific_data
    err = getattr(data, "error", None)
    parts = []
    while err is not None:
        parts.append(f"{err.cls_name}: {err.message.strip()}" if err.cls_name else err.message.strip())
        err = err.cause
    return " <- ".join(parts) or event.message


if __name__ == "__main__":
    sys.exit(main())
