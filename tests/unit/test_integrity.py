"""The integrity check of stored partitions (ml_core/integrity.py) and the storage errors of a write."""

from __future__ import annotations

import errno
import json
import os
import time

import polars as pl
import pytest

import ml_core.integrity as integrity
from ml_core.storage import INTEGRITY_FILE, VERSION_FILE, CorruptPartitionError, Lake, atomic_dir, content_hash

DAY = "2026-01-01"


@pytest.fixture
def lake(tmp_path):
    lake = Lake(tmp_path)
    lake.write_table("t", DAY, pl.DataFrame({"a": list(range(100))}), side=pl.DataFrame({"b": [1]}))
    return lake


def _problem(lake) -> str:
    with pytest.raises(CorruptPartitionError) as e:
        lake.read_table("t", DAY)
    msg = str(e.value)
    assert f"t partition {DAY}" in msg and f"--partition {DAY}" in msg and "--select t " in msg, msg
    return msg


def test_each_file_is_recorded_with_the_data_version(lake):
    d = lake.partition_dir("t", DAY)
    recorded = json.loads((d / INTEGRITY_FILE).read_text())
    assert recorded["version"] == (d / VERSION_FILE).read_text() == content_hash(d)
    assert sorted(recorded["files"]) == ["part-0.parquet", "side.parquet"]
    assert recorded["files"]["part-0.parquet"][0] == (d / "part-0.parquet").stat().st_size
    assert lake.read_table("t", DAY)["a"].to_list() == list(range(100))


def test_truncated_changed_missing_and_added_files_are_named(lake):
    d = lake.partition_dir("t", DAY)
    good = (d / "side.parquet").read_bytes()
    (d / "side.parquet").write_bytes(good[:-10])
    assert "file side.parquet has" in _problem(lake) and "truncated" in _problem(lake)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    (d / "side.parquet").write_bytes(bytes(flipped))
    assert "side.parquet does not match its recorded sha256" in _problem(lake)
    (d / "side.parquet").unlink()
    assert "['side.parquet'] missing" in _problem(lake)
    (d / "side.parquet").write_bytes(good)
    assert lake.read_table("t", DAY).height == 100  # as written again: fine
    (d / "extra.parquet").write_bytes(good)
    assert "extra.parquet was not written with it" in _problem(lake)
    (d / "extra.parquet").unlink()
    (d / INTEGRITY_FILE).write_text("{")
    assert "_FILES.json is unreadable" in _problem(lake)
    with pytest.raises(CorruptPartitionError, match="t partition"):
        lake.scan_tables("t", [DAY])


def test_a_partition_from_before_the_file_list_is_checked_against_its_version(lake):
    d = lake.partition_dir("t", DAY)
    (d / INTEGRITY_FILE).unlink()
    assert lake.read_table("t", DAY).height == 100
    (d / "side.parquet").write_bytes(b"x")
    assert "content hash differs" in _problem(lake)
    (d / VERSION_FILE).unlink()
    assert "neither" in _problem(lake)


def test_unchanged_files_are_hashed_once_per_process(lake, monkeypatch):
    calls = []
    digests = integrity.digests
    monkeypatch.setattr(integrity, "digests", lambda *a, **k: calls.append(1) or digests(*a, **k))
    integrity._VERIFIED.clear()
    for _ in range(3):
        lake.read_table("t", DAY)
    assert len(calls) == 1
    lake.write_table("t", DAY, pl.DataFrame({"a": [1]}))  # a new version, sealed (hashed) by this process
    calls.clear()
    lake.read_table("t", DAY)
    assert calls == []
    integrity._VERIFIED.clear()  # as in another process: the new version is checked on its first read
    lake.read_table("t", DAY)
    assert len(calls) == 1


def test_a_full_disk_names_the_partition_and_keeps_the_previous_version(lake):
    target = lake.partition_dir("t", DAY)
    with pytest.raises(OSError, match=f"No space left on device while writing partition {target}.*nothing was published") as e:
        with atomic_dir(target) as tmp:
            (tmp / "part-0.parquet").write_bytes(b"PAR1")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "part-0.parquet"))
    assert e.value.errno == errno.ENOSPC
    assert lake.read_table("t", DAY).height == 100
    assert [p.name for p in target.parent.iterdir()] == [f"ds={DAY}"]


def test_a_failed_publishing_rename_puts_the_previous_version_back(lake, monkeypatch):
    import ml_core.storage as storage

    target = lake.partition_dir("t", DAY)
    replace = os.replace

    def fail_into_target(src, dst, *args, **kwargs):
        if str(dst) == str(target) and os.path.basename(src).startswith(".tmp-"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(storage.os, "replace", fail_into_target)
    with pytest.raises(OSError, match="nothing was published"):
        lake.write_table("t", DAY, pl.DataFrame({"a": [1]}))
    monkeypatch.undo()
    assert lake.read_table("t", DAY).height == 100
    assert [p.name for p in target.parent.iterdir()] == [f"ds={DAY}"]


def test_a_partition_this_process_published_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    """Publishing seals (hashes) the files and renames them into place: the next check in the
    process is free; a file rewritten since (new mtime) is hashed and caught."""
    from ml_core import integrity
    from ml_core.storage import atomic_dir

    target = tmp_path / "part"
    with atomic_dir(target) as tmp:
        (tmp / "a.bin").write_bytes(b"x" * 1000)
    hashed = []
    real = integrity.digests
    monkeypatch.setattr(integrity, "digests", lambda *a, **k: hashed.append(a[0]) or real(*a, **k))
    integrity.verify_dir(target, "part", "rebuild it")
    assert hashed == []
    time.sleep(0.01)
    (target / "a.bin").write_bytes(b"y" * 1000)  # same size, new content and mtime
    with pytest.raises(integrity.CorruptPartitionError, match="sha256"):
        integrity.verify_dir(target, "part", "rebuild it")
    assert hashed == [target]
