"""A local MLflow tracking server for the tests of the shared registry (ml_core/registry/mlflow.py).

``mlflow server`` with a SQLite store and proxied artifacts (clients up- and download bundles
over HTTP, as machines sharing a server do), on a free port, started as a subprocess in its own
process group, waited for on ``/health`` and killed (the whole group: uvicorn and its worker)
at the end. One worker and no job runner: the tests need the REST API only, and on a shared
2-core machine the default four workers took 84 s to come up instead of about 25 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: How long the server may take to answer /health (measured: about 25 s on 2 busy cores).
START_TIMEOUT_S = 180


@dataclass
class MlflowServer:
    uri: str
    #: seconds from the subprocess start to the first healthy answer
    start_seconds: float
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(workdir: Path):
    """Yield a running :class:`MlflowServer` whose store and artifacts live under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--artifacts-destination", str(workdir / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.perf_counter() - t0 > START_TIMEOUT_S:
                raise TimeoutError(f"mlflow server not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield MlflowServer(uri, time.perf_counter() - t0, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started: the CLI, uvicorn, its worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
