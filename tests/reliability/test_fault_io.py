"""Fault injection 2 and 4: a full disk during a partition write, and two writers of one partition.

* ENOSPC: the Parquet write of training_samples[D] fails with "No space left on device" after
  part of the file is on disk. The run fails with an error naming the partition; the previous
  version stays, the temp directory is gone; once there is space again a re-run succeeds.
* Two writers: two threads (deterministic interleaving at the publishing renames) and two
  processes (the same day's data stages at once) write the same partitions; the result is one
  complete version per partition, both writers succeed, nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import ml_core.storage as storage
from ml_core.storage import Lake, verify_dir
from tests.conftest import REPO
from tests.reliability import faults


@pytest.mark.slow  # the shared flow takes minutes to build
def test_disk_full_during_a_partition_write(flow, tmp_path, capsys, monkeypatch, record_property):
    base, day = flow
    root = faults.copy_flow(base, tmp_path) / "data"
    before = faults.stored(root)
    published = (root / "lake" / "training_samples" / f"ds={day}" / "_VERSION").read_text()
    write_parquet, injected = pl.DataFrame.write_parquet, []

    def disk_full(df, file, *args, **kwargs):
        p = Path(file)
        if p.parent.parent.name == "training_samples" and p.parent.name.startswith(f".tmp-ds={day}-"):
            p.write_bytes(b"PAR1" + bytes(4096))  # what reached the disk before it filled up
            injected.append(time.time())
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))
        return write_parquet(df, file, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", disk_full)
    rc, out, err = faults.run_flow_here(tmp_path, day, 1, capsys)
    assert rc == 1 and injected
    assert "No space left on device" in err and f"training_samples/ds={day}" in err and "nothing was published" in err, err
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    [failed] = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]
    assert (failed.job_name, failed.tags["dagster/partition"]) == ("daily_data", day)
    step_failed = min(e.timestamp for e in instance.all_logs(failed.run_id) if e.dagster_event and
                      e.dagster_event.event_type in (dg.DagsterEventType.STEP_FAILURE,
                                                     dg.DagsterEventType.STEP_UP_FOR_RETRY))
    # the previous version is still published, complete; no temp directory is left
    assert (root / "lake" / "training_samples" / f"ds={day}" / "_VERSION").read_text() == published
    assert faults.hidden_entries(root) == [] and faults.corrupt_entries(root) == []
    assert faults.data_lost(before, root) == [] and faults.wrong_models_served(root) == []

    monkeypatch.undo()  # space again
    rc, out, err = faults.run_flow_here(tmp_path, day, 1, capsys)
    assert rc == 0, out[-3000:] + err[-3000:]
    failed_ids, recovered = faults.run_outcomes(instance, "daily_data", day)
    lost, wrong = faults.data_lost(before, root), faults.wrong_models_served(root)
    assert failed_ids == [failed.run_id] and len(recovered) == 1
    assert lost == [] and wrong == [] and faults.hidden_entries(root) == []
    faults.report(record_property, "ENOSPC in a training_samples write", failed=1, recovered=len(recovered), lost=lost,
           wrong=wrong, detection_s=step_failed - injected[0], detected_by="the failing write (step failure)")


def test_two_writers_interleaved_at_the_renames(tmp_path, monkeypatch):
    """Writer A is paused right after setting the previous version aside; writer B publishes
    meanwhile. Both succeed and the partition ends as one of the two complete versions."""
    lake = Lake(tmp_path)
    lake.write_table("t", "2026-01-01", pl.DataFrame({"a": [0]}))
    replace, a_set_aside, b_done = os.replace, threading.Event(), threading.Event()

    def slow_replace(src, dst, *args, **kwargs):
        out = replace(src, dst, *args, **kwargs)
        if threading.current_thread().name == "A" and Path(dst).name.startswith(".old-"):
            a_set_aside.set()
            b_done.wait(1.0)  # without the publishing lock B would publish here, and A's rename fail
        return out

    monkeypatch.setattr(storage.os, "replace", slow_replace)
    errors = []

    def write(value: int, started: threading.Event | None):
        try:
            if started is not None:
                started.wait(10)
            lake.write_table("t", "2026-01-01", pl.DataFrame({"a": [value] * (value + 1)}))
        except Exception as e:  # collected: each writer must succeed
            errors.append(e)
        finally:
            if started is not None:
                b_done.set()

    a = threading.Thread(target=write, args=(1, None), name="A")
    b = threading.Thread(target=write, args=(2, a_set_aside), name="B")
    a.start(), b.start()
    a.join(30), b.join(30)
    assert errors == []
    d = verify_dir(lake.partition_dir("t", "2026-01-01"), "t", "")
    assert lake.read_table("t", "2026-01-01")["a"].to_list() in ([1, 1], [2, 2, 2])
    assert [p.name for p in d.parent.iterdir()] == ["ds=2026-01-01"]


@pytest.mark.slow  # the shared flow takes minutes to build
def test_two_processes_run_the_same_day(flow, tmp_path, record_property):
    """The data stages of day D (logs, graphs, features, samples: 6 partitions) run by two
    processes at once, three times over: both succeed every time and each partition is one
    complete version, the one a single run writes."""
    base, day = flow
    root = faults.copy_flow(base, tmp_path) / "data"
    everything = faults.stored(root)
    before = {n: (p / "_VERSION").read_text() for n, p in everything.items() if n.endswith(f"ds={day}")}
    script = ("import sys; from ml_core.config import load_config; from ml_core.storage import Lake; "
              "from ml_core.stages.data_day import run_data_day; cfg = load_config(sys.argv[1]); "
              "run_data_day(cfg, Lake(cfg.storage.root), sys.argv[2])")
    env, failed = faults.flow_env(tmp_path), 0
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "pipeline.toml"), day], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
        outs = [p.communicate(timeout=300)[0].decode() for p in procs]
        failed += sum(p.returncode != 0 for p in procs)
        assert [p.returncode for p in procs] == [0, 0], outs
    assert faults.hidden_entries(root) == [] and faults.corrupt_entries(root) == []
    after = {n: (p / "_VERSION").read_text() for n, p in faults.stored(root).items() if n.endswith(f"ds={day}")}
    data = {n for n in before if n.split("/")[0] in ("interaction_logs", "bipartite_graph", "user_similarity_graph",
                                                     "item_similarity_graph", "node_features", "training_samples")}
    assert len(data) == 6 and {n: after[n] for n in data} == {n: before[n] for n in data}
    lost, wrong = faults.data_lost(everything, root), faults.wrong_models_served(root)
    faults.report(record_property, "two processes write day D's 6 data partitions at once (x3)", failed=failed,
           recovered=0, lost=lost, wrong=wrong, detection_s=None, detected_by="nothing to detect: both succeed")
