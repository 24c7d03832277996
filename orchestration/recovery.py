"""Crash recovery: runs whose process died are marked failed, and what killed writers left in the
lake is cleared (docs/operations.md, "Crash recovery").

Dagster's run monitoring (orchestration/dagster.yaml) cannot tell that a STARTED run's process is
gone under the DefaultRunLauncher (it has no worker health check), and nothing watches the runs
the run command executes in its own process. While the code server that launched a run lives, it
fails the run within a second of its worker dying; when the code server died too (``dagster dev``
killed, a machine restart) or the run was the run command's, the run stays STARTED for ever and
holds a run slot. This module judges those runs by their process:

* the run command tags each run with its process (:func:`process_tags`: host, pid, process start
  time, bound to the run id so a re-execution that copies the tags is not judged by them);
* a run launched through a code server is judged by the pid its worker recorded ("Started
  process for run (pid: N)") and the code server's address (a local code server ran it here);
* a recorded process on this host that is gone (or whose pid now belongs to a later process)
  means the run can never finish: it is marked failed (:func:`fail_dead_runs`), with the reason;
* a run whose process cannot be checked from here (another host, or no process recorded) is
  marked failed only once it has logged nothing for :data:`STALE_AFTER_S`.

:data:`RECOVERY_SENSORS` does this every 30 s in the code location (and sweeps the lake); the run
command does it once when it starts. A failed launched run is then retried once by Dagster's
run retries; the run command re-runs its days when it is run again (idempotent).

Dagster's run retries refuse a run of a backfill that has reached a terminal status, and a
``dagster job backfill`` from the command line is COMPLETED as soon as it has submitted its
runs: a crashed run of such a backfill would never be retried. The sensor requests that retry
itself (:func:`refused_backfill_retries`): a new run of the same job and partition, once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason
from dagster._core.storage.tags import (
    AUTO_RETRY_RUN_ID_TAG,
    BACKFILL_ID_TAG,
    GRPC_INFO_TAG,
    MAX_RETRIES_TAG,
    WILL_RETRY_TAG,
)

from ml_core.storage import hostname, process_start_time, sweep_stale_writes
from orchestration.jobs import ALL_JOBS
from orchestration.resources import PipelineResource

#: The process that executes a run, as JSON: {"run_id", "host", "pid", "started"}.
PROCESS_TAG = "moge/process"
#: A run whose process cannot be checked from here is failed after this long without any event.
STALE_AFTER_S = float(os.environ.get("MOGE_RECOVERY_STALE_AFTER_S", 6 * 3600))
#: Seconds between two checks by the sensor.
SENSOR_INTERVAL_S = 30
#: Clock tolerance when comparing process start times (psutil's are derived from the boot time).
_TOLERANCE_S = 2.0
_WORKER_STARTED = "Started process for run (pid:"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
#: The jobs whose refused backfill retries the sensor requests (it can launch only its own jobs).
RETRIED_JOBS = ALL_JOBS
#: The tag of a retry the sensor requested: the failed run it retries.
RETRY_OF_TAG = "moge/retry_of"
_REFUSED = "Not retrying run since it is part of a backfill that is in a terminal state"
#: Backfills that ended by finishing (not canceled or failed by an operator or the daemon).
_FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"}
#: How far back the sensor looks for runs whose retry Dagster refused.
_RETRY_LOOKBACK_S = 24 * 3600


def process_tags(run_id: str) -> dict[str, str]:
    """Tags for a run executed in this process (the run command): its process, and no run-level
    retry (Dagster cannot re-launch an in-process run; the command re-runs the day itself)."""
    pid = os.getpid()
    proc = {"run_id": run_id, "host": hostname(), "pid": pid, "started": process_start_time(pid)}
    return {PROCESS_TAG: json.dumps(proc, sort_keys=True), MAX_RETRIES_TAG: "0"}


@dataclass(frozen=True)
class RunProcess:
    """Where a run executes. ``started`` is its process's start time when ``exact``, otherwise a
    time at which the process was already running."""

    host: str | None
    pid: int
    started: float | None
    exact: bool
    source: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "?"
        return f"pid {self.pid} on {self.host or 'an unknown host'} ({self.source}, started {when})"


def _local(host: str) -> bool:
    return host in _LOCAL_HOSTS or host in (hostname(), socket.getfqdn())


def run_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunProcess | None:
    """The process that executes ``run``, if it recorded one."""
    raw = run.tags.get(PROCESS_TAG)
    if raw:
        try:
            p = json.loads(raw)
            if p.get("run_id") == run.run_id:  # tags copied into a re-execution describe another run
                return RunProcess(p["host"], int(p["pid"]), p.get("started"), True, "run command")
        except (ValueError, KeyError, TypeError):
            pass
    grpc = run.tags.get(GRPC_INFO_TAG)
    if not grpc:
        return None
    try:
        info = json.loads(grpc)
    except ValueError:
        return None
    host = hostname() if "socket" in info or _local(str(info.get("host", ""))) else str(info.get("host"))
    for entry in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        if (entry.dagster_event and entry.dagster_event.message or "").startswith(_WORKER_STARTED):
            data = entry.dagster_event.engine_event_data
            pid = data.metadata.get("pid") if data else None
            if pid is not None:
                return RunProcess(host, int(pid.value), entry.timestamp, False, "run worker")
    return None


def process_gone(proc: RunProcess) -> bool | None:
    """True when ``proc`` has ended, False when it runs, None when that cannot be told from here."""
    if proc.host != hostname():
        return None
    started = process_start_time(proc.pid)
    if started is None:
        return True
    if started == 0.0 or proc.started is None:  # another user's process, or no time recorded
        return False
    if proc.exact:
        return abs(started - proc.started) > _TOLERANCE_S
    return started > proc.started + _TOLERANCE_S  # the worker was running at that time: a later one reused the pid


def _last_event_time(instance: dg.DagsterInstance, record) -> float:
    logs = instance.event_log_storage.get_logs_for_run(record.dagster_run.run_id, limit=1, ascending=False)
    if logs:
        return logs[0].timestamp
    return record.update_timestamp.timestamp()


def dead_run_reason(instance: dg.DagsterInstance, record, now: float | None = None,
                    stale_after_s: float | None = None) -> str | None:
    """Why the STARTED run of ``record`` can never finish, or None while it may still be running."""
    now = time.time() if now is None else now
    stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
    run = record.dagster_run
    proc = run_process(instance, run)
    gone = process_gone(proc) if proc else None
    if gone:
        return (f"its process ({proc.describe()}) is gone: it was killed or its machine restarted, "
                f"so the run can never finish")
    if gone is None:
        idle = now - _last_event_time(instance, record)
        if idle > stale_after_s:
            where = proc.describe() if proc else "no process recorded"
            return (f"no event for {idle / 3600:.1f} h and its process cannot be checked from host "
                    f"{hostname()} ({where}): treated as dead after {stale_after_s / 3600:.1f} h")
    return None


def fail_dead_runs(instance: dg.DagsterInstance, now: float | None = None,
                   stale_after_s: float | None = None) -> list[str]:
    """Mark failed every STARTED run that can never finish (see :func:`dead_run_reason`).
    Returns one line per run marked failed."""
    out = []
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in records:
        reason = dead_run_reason(instance, record, now, stale_after_s)
        if reason is None:
            continue
        run = instance.get_run_by_id(record.dagster_run.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:  # it ended meanwhile
            continue
        retry = ("the run command re-runs the day when it is run again" if PROCESS_TAG in run.tags
                 else "Dagster's run retries re-execute it once (dagster.yaml run_retries)")
        msg = (f"Marked failed by crash recovery (orchestration/recovery.py): {reason}. Partitions are "
               f"written atomically, so none is half-written; {retry}.")
        instance.report_run_failed(run, msg, JobFailureData(error=None,
                                                            failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
        # the pool slots it held (pool "model"): nothing else frees those of a run that died in process
        # (the daemon's run monitoring does, free_slots_after_run_end_seconds, but not without a daemon)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        out.append(f"run {run.run_id} ({run.job_name} {run.tags.get('dagster/partition', '')}) failed: {reason}")
    return out


def refused_backfill_retries(instance: dg.DagsterInstance, now: float | None = None) -> list[dg.RunRequest]:
    """Retries that Dagster's run retries decided to make (``dagster/will_retry`` true) and then
    refused because the run's backfill had ended: one new run of the same job, partition and
    assets each (the run key makes it once; the new run itself is not retried again)."""
    if not instance.run_retries_enabled:
        return []
    now = time.time() if now is None else now
    since = datetime.fromtimestamp(now - _RETRY_LOOKBACK_S, UTC)
    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"},
                                           updated_after=since))
    jobs = {j.name for j in RETRIED_JOBS}
    out = []
    for run in runs:
        if run.job_name not in jobs or AUTO_RETRY_RUN_ID_TAG in run.tags or RETRY_OF_TAG in run.tags:
            continue
        events = instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        if not any((e.dagster_event and e.dagster_event.message or "").startswith(_REFUSED) for e in events):
            continue
        backfill = instance.get_backfill(run.tags.get(BACKFILL_ID_TAG, ""))
        if backfill is None or backfill.status.value not in _FINISHED:
            continue  # a canceled backfill stays canceled
        if instance.get_run_ids(dg.RunsFilter(tags={RETRY_OF_TAG: run.run_id}), limit=1):
            continue  # already retried
        tags = {RETRY_OF_TAG: run.run_id, MAX_RETRIES_TAG: "0"}
        subset = bool(run.asset_selection)  # a subset of the job's assets (and checks), or the whole job
        out.append(dg.RunRequest(
            run_key=f"crash-retry:{run.run_id}", job_name=run.job_name, partition_key=run.tags.get("dagster/partition"),
            tags=tags, asset_selection=list(run.asset_selection) if subset else None,
            asset_check_keys=list(run.asset_check_selection or []) if subset else None))
    return out


def recover(instance: dg.DagsterInstance, lake_root=None) -> list[str]:
    """:func:`fail_dead_runs`, then clear what killed writers left under ``lake_root``."""
    out = fail_dead_runs(instance)
    if lake_root is not None:
        out += sweep_stale_writes(lake_root)
    return out


@dg.sensor(
    name="crash_recovery",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=list(RETRIED_JOBS),
    description="Every 30 s: marks failed the STARTED runs whose process is gone (killed run command, "
    "dagster dev or machine restarted under a run), so they stop holding a run slot and run retries "
    "re-execute them; clears temp directories that killed writers left in the lake; requests the "
    "one retry that run retries refuse to runs of an ended backfill. Launches nothing else.",
)
def crash_recovery(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
    try:
        root = pipeline.config().storage.root
    except Exception as e:  # a broken config must not stop the run recovery
        context.log.warning(f"lake not swept: {e}")
        root = None
    done = recover(context.instance, root)
    retries = refused_backfill_retries(context.instance)
    done += [f"retry of run {r.tags[RETRY_OF_TAG]} requested (its backfill had ended)" for r in retries]
    for line in done:
        context.log.warning(line)
    summary = "; ".join(done) if done else "no dead run, nothing left by a killed writer"
    if retries:
        return dg.SensorResult(run_requests=retries)
    return dg.SkipReason(summary)


RECOVERY_SENSORS = [crash_recovery]
