"""The code location of the daemon crash test: ``orchestration.definitions`` as it is, with the
crash point of :mod:`tests.reliability.crashpoint` installed when ``MOGE_CRASH_AT`` is set (the
code server and every run worker it starts load this module)."""

import os
from pathlib import Path

if os.environ.get("MOGE_CRASH_AT"):
    from tests.reliability.crashpoint import install

    _asset, _day = os.environ["MOGE_CRASH_AT"].split("/")
    install(_asset, _day, Path(os.environ["MOGE_CRASH_MARKER"]))

from orchestration.definitions import defs  # noqa: F401 - imported after the crash point is installed
