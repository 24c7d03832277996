"""The run command with a crash point, for the crash tests: a process to SIGKILL at a known moment.

    MOGE_CRASH_AT=trained_model/2026-01-03 MOGE_CRASH_MARKER=/tmp/m \\
        python -m tests.reliability.crashpoint --start 2026-01-01 --days 3

runs ``orchestration.run_flow`` with its arguments, except that the lake write of that asset and
day stops at the crash point: it writes the marker file (the temp directory's path) and waits
there to be killed. ``MOGE_CRASH_WHEN`` picks the moment:

* ``publish`` (default): the partition is complete in its temp directory, just before the rename
  that publishes it;
* ``mid_write``: the first file of the partition is being written: a Parquet file stops half
  written, any other file (NumPy, torch, JSON) stops right after it was created, empty.

``MOGE_CRASH_AT=registry/<point>`` stops inside a promotion of the bundle store instead
(:data:`PROMOTION_POINTS`), whatever the day.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import ml_core.storage as storage

#: Moments of a promotion (``ml_core.stages.deployment``: publish, set_production, record_decision).
PROMOTION_POINTS = ("mid_publish", "before_pointer", "mid_pointer", "before_decision")


def _stop(marker: Path, where: str) -> None:
    marker.write_text(where)
    time.sleep(3600)


def _in_temp_of(path: Path, parent: str, prefix: str) -> Path | None:
    """The temp directory (child of a directory named ``parent``, named ``prefix...``) holding ``path``."""
    for p in (path, *path.parents):
        if p.parent.name == parent and p.name.startswith(prefix):
            return p
    return None


def _stop_in_first_file(parent: str, prefix: str, marker: Path) -> None:
    """Stop while the first file under a matching temp directory is being written."""
    import polars as pl

    write_parquet = pl.DataFrame.write_parquet

    def torn_parquet(df, file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and (tmp := _in_temp_of(Path(file), parent, prefix)):
            buf = io.BytesIO()
            write_parquet(df, buf, *args, **kwargs)
            data = buf.getvalue()
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # os.open: not seen by on_open below
            os.write(fd, data[: len(data) // 2])
            os.close(fd)
            _stop(marker, str(tmp))
        return write_parquet(df, file, *args, **kwargs)

    pl.DataFrame.write_parquet = torn_parquet

    def on_open(event: str, args: tuple) -> None:
        if event != "open" or not isinstance(args[0], str | bytes | os.PathLike):
            return
        mode = args[1] if isinstance(args[1], str) else ""
        path = Path(os.fsdecode(args[0]))
        if any(c in mode for c in "wax") and (tmp := _in_temp_of(path, parent, prefix)) and path != marker:
            path.touch()  # the file exists, nothing of it is written
            _stop(marker, str(tmp))

    sys.addaudithook(on_open)


def install(asset: str, day: str, marker: Path, when: str = "publish") -> None:
    if asset == "registry":
        return _install_promotion(day, marker)
    prefix = f".tmp-ds={day}-"
    if when == "mid_write":
        return _stop_in_first_file(asset, prefix, marker)
    if when != "publish":
        raise ValueError(f"MOGE_CRASH_WHEN must be publish or mid_write, got {when!r}")
    fsync = storage.fsync_tree  # called on the complete temp directory right before the renames

    def stop_here(path: Path) -> None:
        fsync(path)
        if path.parent.name == asset and path.name.startswith(prefix):
            _stop(marker, str(path))

    storage.fsync_tree = stop_here


def _install_promotion(point: str, marker: Path) -> None:
    from ml_core.registry import bundles

    if point == "mid_publish":  # copying the bundle into versions/<version>
        return _stop_in_first_file("versions", ".tmp-", marker)
    if point == "mid_pointer":  # the new pointer is written beside production.json, not yet renamed over it
        replace = os.replace

        def stop_before_rename(src, dst, *args, **kwargs):
            if Path(dst).name == "production.json":
                _stop(marker, str(src))
            return replace(src, dst, *args, **kwargs)

        storage.os.replace = stop_before_rename
        return None
    method = {"before_pointer": "set_production", "before_decision": "record_decision"}.get(point)
    if method is None:
        raise ValueError(f"registry crash point must be one of {PROMOTION_POINTS}, got {point!r}")

    def stop(self, *args, **kwargs):
        _stop(marker, method)

    setattr(bundles.BundleStore, method, stop)
    return None


def install_from_env() -> None:
    asset, day = os.environ["MOGE_CRASH_AT"].split("/")
    install(asset, day, Path(os.environ["MOGE_CRASH_MARKER"]), os.environ.get("MOGE_CRASH_WHEN", "publish"))


if __name__ == "__main__":
    install_from_env()
    from orchestration.run_flow import main

    sys.exit(main(sys.argv[1:]))
