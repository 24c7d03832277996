"""A stop asked for from outside the computation (a signal to the run command): the long loops
check for it and end with :class:`StopRequested` instead of running to their end.

The run command (``orchestration.run_flow``) turns its first SIGINT or SIGTERM into
:func:`request_stop`; the checkpoints, :func:`check_stop`, are between two training steps
(:func:`ml_core.train.trainer.train`), between two scoring batches (:mod:`ml_core.inference`)
and before a partition or bundle starts being written (:func:`ml_core.storage.atomic_dir`), so
the stage in progress fails at its next checkpoint, publishes nothing, and the run fails with
the reason. The state is the process's own (a signal is delivered to a process); nothing else
in the library keeps state at module level.
"""

from __future__ import annotations

_reason: str | None = None


class StopRequested(RuntimeError):
    """The computation was asked to stop (:func:`request_stop`); the message says why and where."""


def request_stop(reason: str) -> None:
    """Ask every checkpoint of this process to stop, for ``reason`` (e.g. "SIGTERM received")."""
    global _reason
    _reason = reason


def stop_reason() -> str | None:
    """Why a stop was asked for, or None."""
    return _reason


def clear_stop() -> None:
    """Forget a stop request (tests; a command that handled it and goes on)."""
    global _reason
    _reason = None


def check_stop(where: str) -> None:
    """Raise :class:`StopRequested` when a stop was asked for; ``where`` names the checkpoint."""
    if _reason is not None:
        raise StopRequested(f"stopped {where}: {_reason}")
