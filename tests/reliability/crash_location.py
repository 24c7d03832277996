"""The code location of the daemon crash test: ``orchestration.definitions`` as it is, with the
crash point of :mod:`tests.reliability.crashpoint` installed when ``MOGE_CRASH_AT`` is set (the
code server and every run worker it starts load this module)."""

import os

if os.environ.get("MOGE_CRASH_AT"):
    from tests.reliability.crashpoint import install_from_env

    install_from_env()

from orchestration.definitions import defs  # noqa: F401 - imported after the crash point is installed
