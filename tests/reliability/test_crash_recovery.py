"""Crash recovery: a run whose process died is marked failed (not left STARTED, holding a run slot),
a live run is never touched, and what a killed writer left in the lake is cleared.

The end-to-end test SIGKILLs the README's run command in the middle of a lake write and recovers
both ways the project does: the ``crash_recovery`` sensor (what ``dagster dev`` runs every 30 s)
and the run command itself when it is started again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import EngineEventData
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import GRPC_INFO_TAG

from ml_core.storage import VERSION_FILE, atomic_dir, content_hash, hostname, process_start_time, sweep_stale_writes
from orchestration.definitions import defs
from orchestration.instance_setup import RETIRED, SOURCE, merged_text, sync_instance_yaml
from orchestration.recovery import (
    PROCESS_TAG,
    RETRY_OF_TAG,
    crash_recovery,
    dead_run_reason,
    fail_dead_runs,
    process_tags,
    refused_backfill_retries,
)
from orchestration.resources import PipelineResource
from tests.conftest import REPO
from tests.reliability.faults import hidden_entries, write_config

DAY = "2026-01-04"  # the first model day (derived data from day 2, train_days = 2 in these tests)


@dg.op
def _noop():
    pass


@dg.job
def _job():
    _noop()


def _dead_pid() -> tuple[int, float]:
    """The pid and start time of a process that has ended (started, killed and reaped here)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    started = process_start_time(p.pid)
    p.kill()
    p.wait(timeout=30)
    return p.pid, started


def _started_run(instance, tags=None, run_id=None) -> dg.DagsterRun:
    return instance.create_run_for_job(_job, run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                       tags={"dagster/partition": DAY, **(tags or {})})


def _status(instance, run) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def _failure_message(instance, run) -> str:
    [ev] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return ev.get_dagster_event().message


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _tags_of(run_id: str, pid: int, started: float | None, host: str | None = None) -> dict:
    proc = {"run_id": run_id, "host": host or hostname(), "pid": pid, "started": started}
    return {PROCESS_TAG: json.dumps(proc)}


def test_run_of_a_dead_process_is_failed_and_a_live_one_is_not(instance):
    pid, started = _dead_pid()
    dead_id, live_id = str(uuid.uuid4()), str(uuid.uuid4())
    dead = _started_run(instance, _tags_of(dead_id, pid, started), dead_id)
    live = _started_run(instance, process_tags(live_id), live_id)  # this test process, as the run command tags it

    out = fail_dead_runs(instance)

    assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert _status(instance, live) == dg.DagsterRunStatus.STARTED
    assert len(out) == 1 and dead.run_id in out[0]
    msg = _failure_message(instance, dead)
    assert f"pid {pid} on {hostname()}" in msg and "is gone" in msg and "re-runs the day" in msg, msg
    assert instance.get_run_by_id(dead.run_id).tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
    assert fail_dead_runs(instance) == []  # nothing left to do; the live run is still untouched
    assert _status(instance, live) == dg.DagsterRunStatus.STARTED


def test_reused_pid_and_copied_tags(instance):
    # our pid, but a start time 1 h earlier: the recorded process ended and the pid was reused
    reused_id = str(uuid.uuid4())
    reused = _started_run(instance, _tags_of(reused_id, os.getpid(), process_start_time(os.getpid()) - 3600), reused_id)
    # a re-execution that copied a dead run's tags is not judged by them (they name another run)
    pid, started = _dead_pid()
    copied = _started_run(instance, _tags_of(str(uuid.uuid4()), pid, started))
    fail_dead_runs(instance)
    assert _status(instance, reused) == dg.DagsterRunStatus.FAILURE
    assert _status(instance, copied) == dg.DagsterRunStatus.STARTED


def test_run_worker_of_a_dead_code_server(instance):
    """A run launched through a local code server: judged by the pid its worker recorded."""
    pid, _ = _dead_pid()
    grpc = {GRPC_INFO_TAG: json.dumps({"host": "localhost", "socket": "/tmp/x.sock"})}
    dead = _started_run(instance, grpc)
    instance.report_engine_event(f"Started process for run (pid: {pid}).", dead, EngineEventData.in_process(pid))
    live = _started_run(instance, grpc)
    instance.report_engine_event(f"Started process for run (pid: {os.getpid()}).", live,
                                 EngineEventData.in_process(os.getpid()))
    fail_dead_runs(instance)
    assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert "run retries re-execute it once" in _failure_message(instance, dead)
    assert _status(instance, live) == dg.DagsterRunStatus.STARTED


def test_process_that_cannot_be_checked_is_left_to_the_timeout(instance):
    pid, started = _dead_pid()
    other_id = str(uuid.uuid4())
    other_host = _started_run(instance, _tags_of(other_id, pid, started, host="another-host"), other_id)
    unknown = _started_run(instance)  # no process recorded at all
    fail_dead_runs(instance)
    assert _status(instance, other_host) == dg.DagsterRunStatus.STARTED
    assert _status(instance, unknown) == dg.DagsterRunStatus.STARTED
    record = instance.get_run_record_by_id(other_host.run_id)
    assert dead_run_reason(instance, record, now=time.time() + 3600, stale_after_s=6 * 3600) is None
    fail_dead_runs(instance, now=time.time() + 7 * 3600, stale_after_s=6 * 3600)
    assert _status(instance, other_host) == dg.DagsterRunStatus.FAILURE
    assert _status(instance, unknown) == dg.DagsterRunStatus.FAILURE
    assert "cannot be checked from host" in _failure_message(instance, other_host)


def test_sensor_fails_dead_runs_and_sweeps_the_lake(instance, tmp_path):
    pid, started = _dead_pid()
    run_id = str(uuid.uuid4())
    dead = _started_run(instance, _tags_of(run_id, pid, started), run_id)
    stale = tmp_path / "lake" / "interaction_logs" / f".tmp-ds={DAY}-0123abcd~{pid}.{int(started)}@{hostname()}"
    stale.mkdir(parents=True)
    resource = PipelineResource(overrides=[f'storage.root="{tmp_path}"'])
    result = crash_recovery(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
    assert isinstance(result, dg.SkipReason)  # it never launches a run
    assert run_id in result.skip_message and "removed" in result.skip_message
    assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert not stale.exists()
    assert crash_recovery.default_status == dg.DefaultSensorStatus.RUNNING


def test_retry_refused_for_an_ended_backfill_is_requested_once():
    """`dagster job backfill` marks its backfill COMPLETED once its runs are submitted, and run
    retries then refuse to retry a crashed run of it: the sensor requests that one retry."""
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 1}}) as instance:
        job = defs.resolve_job_def("daily_model")

        def failed(**tags):
            return instance.create_run_for_job(job, status=dg.DagsterRunStatus.FAILURE,
                                               tags={"dagster/partition": DAY, "dagster/will_retry": "true", **tags})

        for backfill_id, status in (("cli", BulkActionStatus.COMPLETED), ("stopped", BulkActionStatus.CANCELED)):
            instance.add_backfill(PartitionBackfill(backfill_id, status, from_failure=False, tags={},
                                                    backfill_timestamp=time.time(), partition_names=[DAY]))
        refused = failed(**{"dagster/backfill": "cli"})
        retried = failed(**{"dagster/backfill": "cli", "dagster/auto_retry_run_id": "x"})
        canceled = failed(**{"dagster/backfill": "stopped"})  # an operator canceled that backfill: no retry
        for run, status in ((refused, "COMPLETED"), (retried, "COMPLETED"), (canceled, "CANCELED")):
            instance.report_engine_event("Not retrying run since it is part of a backfill that is in a terminal "
                                         f"state ({status}).", run)
        failed()  # will retry, not refused (yet): Dagster's run retries handle it
        [req] = refused_backfill_retries(instance)
        assert (req.job_name, req.partition_key, req.tags[RETRY_OF_TAG]) == ("daily_model", DAY, refused.run_id)
        assert req.run_key == f"crash-retry:{refused.run_id}" and req.tags["dagster/max_retries"] == "0"
        instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags=req.tags)  # the daemon launched it
        assert refused_backfill_retries(instance) == []


def test_sweep_clears_only_what_dead_writers_left(tmp_path):
    base = tmp_path / "lake" / "t"
    base.mkdir(parents=True)
    pid, started = _dead_pid()
    dead = f"{pid}.{int(started)}@{hostname()}"
    (base / f"ds={DAY}").mkdir()
    (base / f"ds={DAY}" / VERSION_FILE).write_text("new")
    tmp_dead = base / f".tmp-ds=2026-01-03-00000001~{dead}"
    old_with_target = base / f".old-ds={DAY}-00000002~{dead}"
    old_alone = base / f".old-ds=2026-01-05-00000003~{dead}"  # killed between the two renames
    legacy_young = base / ".tmp-ds=2026-01-05-00000004"
    legacy_old = base / ".tmp-ds=2026-01-06-00000005"
    for d in (tmp_dead, old_with_target, old_alone, legacy_young, legacy_old):
        d.mkdir()
    (old_alone / VERSION_FILE).write_text("previous")
    os.utime(legacy_old, (time.time() - 25 * 3600,) * 2)
    pointer_tmp = tmp_path / "registry" / f".tmp-production.json-00000006~{dead}"
    pointer_tmp.parent.mkdir()
    pointer_tmp.write_text("{}")
    with atomic_dir(base / "ds=2026-01-07") as live_tmp:  # a live writer's temp dir (this process)
        done = sweep_stale_writes(tmp_path)
        assert live_tmp.exists()
    assert sorted(p.name for p in base.iterdir()) == [legacy_young.name, f"ds={DAY}", "ds=2026-01-05", "ds=2026-01-07"]
    assert (base / "ds=2026-01-05" / VERSION_FILE).read_text() == "previous"  # the previous version is back
    assert (base / f"ds={DAY}" / VERSION_FILE).read_text() == "new"
    assert not pointer_tmp.exists()
    assert len(done) == 5, done


def test_instance_yaml_upgrade_keeps_own_sections(tmp_path):
    old = "run_queue:\n  max_concurrent_runs: 1\ntelemetry:\n  enabled: false\nstorage:\n  sqlite:\n    base_dir: /x\n"
    (tmp_path / "dagster.yaml").write_text(old)
    msg = sync_instance_yaml(tmp_path)
    assert msg and "previous file" in msg
    [backup] = tmp_path.glob("dagster.yaml.*.bak")
    assert backup.read_text() == old
    new = (tmp_path / "dagster.yaml").read_text()
    assert new.startswith(SOURCE.read_text()) and "base_dir: /x" in new and "run_queue" not in yaml.safe_load(new)
    assert sync_instance_yaml(tmp_path) is None  # up to date: untouched
    assert merged_text(SOURCE.read_text(), None) == SOURCE.read_text()
    assert "run_queue" in RETIRED
    inst = dg.DagsterInstance.from_config(str(tmp_path))
    assert inst.run_monitoring_enabled and inst.run_retries_enabled and inst.run_retries_max_retries == 1
    assert not inst.run_retries_retry_on_asset_or_op_failure
    assert inst.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
    # queued runs are launched several at once (benchmarks/backfill.py: one at a time held backfills up)
    assert inst.run_coordinator.dequeue_use_threads and inst.run_coordinator.dequeue_num_workers == 4


# -- end to end: the run command killed in the middle of a lake write --------------------------


@pytest.mark.parametrize("recovered_by", ["sensor", "next_run_command"])
def test_killed_run_command_is_recovered(tmp_path, recovered_by):
    cfg, home, marker = write_config(tmp_path), tmp_path / "dagster_home", tmp_path / "crashed"
    env = {**os.environ, "MOGE_CONFIG": str(cfg), "DAGSTER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = ["--start", "2026-01-01", "--days", "4"]
    log = tmp_path / "crashed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.crashpoint", *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**env, "MOGE_CRASH_AT": f"trained_model/{DAY}", "MOGE_CRASH_MARKER": str(marker)})
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, f"the run command ended before the crash point:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"crash point not reached in 300 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of day 3's trained_model write
    finally:
        proc.kill()
        proc.wait(timeout=60)

    instance = dg.DagsterInstance.from_config(str(home))
    runs = {(r.job_name, r.tags["dagster/partition"]): r for r in instance.get_runs()}
    assert runs["daily_logs", "2026-01-01"].status == runs["daily_data", DAY].status == dg.DagsterRunStatus.SUCCESS
    killed = runs["daily_model", DAY]
    assert killed.status == dg.DagsterRunStatus.STARTED  # what nothing recovered before
    data = tmp_path / "data"
    assert [p.name.split("~")[0][:-9] for p in hidden_entries(data)] == [f".tmp-ds={DAY}"], hidden_entries(data)
    assert not (data / "lake" / "trained_model" / f"ds={DAY}").exists()  # never half-published

    if recovered_by == "sensor":
        resource = PipelineResource(config_path=str(cfg))
        result = crash_recovery(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
        assert killed.run_id in result.skip_message, result.skip_message
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert hidden_entries(data) == []

    # not blocked: the run command runs the same days again, and they succeed
    out = subprocess.run([sys.executable, "-m", "orchestration.run_flow", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (out.stdout.count("daily_logs ok"), out.stdout.count("daily_data ok"),
            out.stdout.count("daily_model ok")) == (4, 3, 1), out.stdout[-3000:]
    if recovered_by == "next_run_command":
        assert f"crash recovery: run {killed.run_id}" in out.stderr, out.stderr[-3000:]

    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "is gone" in _failure_message(instance, killed)
    statuses = sorted(r.status.value for r in instance.get_runs())
    assert statuses == ["FAILURE"] + ["SUCCESS"] * 15, statuses  # 4 log + 3 data runs, the killed model run; 4 + 3 + 1 again
    # the lake: nothing hidden left, every partition complete (its content hash is its version)
    assert hidden_entries(data) == []
    parts = [p for p in (data / "lake").glob("*/ds=*")]
    assert {p.parent.name for p in parts if p.name == f"ds={DAY}"} >= {"trained_model", "model_evaluation",
                                                                      "deployed_model", "interaction_logs"}
    for p in parts:
        assert (p / VERSION_FILE).read_text() == content_hash(p), p


# -- end to end: dagster dev and the machine under a launched run die ---------------------------

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on Error { message }
  }
}"""


def _start_dev(base: Path, env: dict, log_name: str):
    from tests.dagster_dev import start

    return start(base / "workspace.yaml", env, base / "data", base / log_name)


def _crash(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process under it at once: what a power cut does to them."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_launched_run_survives_a_crash_of_dagster_dev(tmp_path):
    """A run launched by the daemon; dagster dev, its code server and the run worker are all killed
    mid-write (a machine restart); on the next start the crash_recovery sensor fails the run, run
    retries re-execute it once, and the lake ends complete."""
    cfg, home, marker = write_config(tmp_path), tmp_path / "dagster_home", tmp_path / "crashed"
    sync_instance_yaml(home)  # the repo's instance settings: run monitoring, run retries, 4 runs
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: tests.reliability.crash_location\n"
        f"      location_name: moge\n      working_directory: {REPO}\n")
    env = {**os.environ, "MOGE_CONFIG": str(cfg), "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    day = "2026-01-01"

    dev = _start_dev(tmp_path, {**env, "MOGE_CRASH_AT": f"interaction_logs/{day}", "MOGE_CRASH_MARKER": str(marker)},
                     "dev-1.log")
    try:
        params = {"selector": {"repositoryLocationName": "moge", "repositoryName": "__repository__",
                               "jobName": "daily_logs"},
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]}}
        res = dev.gql(LAUNCH_RUN, {"params": params})["launchRun"]
        assert res["__typename"] == "LaunchRunSuccess", res
        run_id = res["run"]["runId"]
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert time.monotonic() < deadline, f"the run never reached the crash point:\n{dev.log_tail()}"
            time.sleep(0.2)
    finally:
        _crash(dev.proc)

    instance = dg.DagsterInstance.from_config(str(home))
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # nothing left to fail it
    assert hidden_entries(tmp_path / "data")  # the dead worker's temp directory

    t0 = time.monotonic()
    dev = _start_dev(tmp_path, env, "dev-2.log")
    try:
        deadline = time.monotonic() + 300
        while True:
            runs = instance.get_runs()
            retry = next((r for r in runs if r.parent_run_id == run_id), None)
            if retry and retry.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                break
            assert time.monotonic() < deadline, f"{[(r.run_id, r.status) for r in runs]}\n{dev.log_tail()}"
            time.sleep(0.5)
        print(f"\nkilled run failed and retried to {retry.status.value} {time.monotonic() - t0:.0f} s after restart")
    finally:
        _crash(dev.proc)

    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert "is gone" in _failure_message(instance, instance.get_run_by_id(run_id))
    assert retry.status == dg.DagsterRunStatus.SUCCESS and retry.tags["dagster/retry_number"] == "1"
    data = tmp_path / "data"
    assert hidden_entries(data) == []
    parts = list((data / "lake").glob(f"*/ds={day}"))
    assert {p.parent.name for p in parts} == {"interaction_logs"}
    for p in parts:
        assert (p / VERSION_FILE).read_text() == content_hash(p), p
