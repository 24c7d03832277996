"""The run command with a crash point, for the crash tests: a process to SIGKILL at a known moment.

    MOGE_CRASH_AT=trained_model/2026-01-02 MOGE_CRASH_MARKER=/tmp/m \\
        python -m tests.reliability.crashpoint --start 2026-01-01 --days 2

runs ``orchestration.run_flow`` with its arguments, except that the lake write of that asset and
day stops once the partition is complete in its temp directory, just before the rename that
publishes it: it writes the marker file (the temp directory's path) and waits there to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import ml_core.storage as storage


def install(asset: str, day: str, marker: Path) -> None:
    fsync = storage._fsync_dir  # called on the complete temp directory right before the renames

    def stop_here(path: Path) -> None:
        fsync(path)
        if path.parent.name == asset and path.name.startswith(f".tmp-ds={day}-"):
            marker.write_text(str(path))
            time.sleep(3600)

    storage._fsync_dir = stop_here


if __name__ == "__main__":
    asset, day = os.environ["MOGE_CRASH_AT"].split("/")
    install(asset, day, Path(os.environ["MOGE_CRASH_MARKER"]))
    from orchestration.run_flow import main

    sys.exit(main(sys.argv[1:]))
