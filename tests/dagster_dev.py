"""``dagster dev`` as a user runs it, driven from Python: start it on a given instance and config,
wait until the code location has loaded, talk GraphQL to it as the UI does, stop it and
everything it started. Shared by the e2e test, the crash-recovery test and
``benchmarks/backfill.py``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

START_TIMEOUT = 180  # webserver up and the code location loaded
LOCATION = "moge"
REPO_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
#: The automation sensor (orchestration/automation.py), as GraphQL selects it.
SENSOR = {**REPO_SELECTOR, "sensorName": "daily_automation"}
#: A sensor's state and its ticks; turning it on and off (the UI's toggle).
SENSOR_QUERY = """
query($sel: SensorSelector!) {
  sensorOrError(sensorSelector: $sel) {
    __typename
    ... on Sensor { name sensorType minIntervalSeconds sensorState { id selectorId status
      ticks(limit: 200) { tickId status timestamp endTimestamp runIds skipReason error { message }
        requestedAssetMaterializationCount requestedMaterializationsForAssets { assetKey { path } partitionKeys } } } }
  }
}"""
START_SENSOR = """
mutation($sel: SensorSelector!) {
  startSensor(sensorSelector: $sel) { __typename ... on Sensor { sensorState { status } } ... on PythonError { message } }
}"""
STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message } }
}"""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dagster_bin(name: str = "dagster") -> str | None:
    """The ``dagster`` (or ``dg``) CLI next to this interpreter (else on $PATH), or None."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else shutil.which(name)


def kill_tree(proc: subprocess.Popen, grace: float = 15) -> None:
    """Stop ``dagster dev`` and everything it started (webserver, daemon, code servers, run
    workers): SIGTERM to its process group, then SIGKILL to the group and any descendant that
    left it."""
    try:
        import psutil

        descendants = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        descendants = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in descendants:
        try:
            p.kill()
        except Exception:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class DagsterDev:
    """A running ``dagster dev``: its URL, environment, instance, storage root, log and process."""

    url: str
    env: dict
    home: Path
    root: Path  # storage.root: the lake and the bundle store
    log: Path
    proc: subprocess.Popen

    def gql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            out = json.loads(r.read())
        assert not out.get("errors"), f"GraphQL errors: {out['errors']}"
        return out["data"]

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def lake_days(self, asset: str) -> list[str]:
        return sorted(p.name.removeprefix("ds=") for p in (self.root / "lake" / asset).glob("ds=*"))


def start(workspace: Path | None, env: dict, root: Path, log: Path) -> DagsterDev:
    """``dagster dev -w workspace`` on loopback with ``env`` (its DAGSTER_HOME, MOGE_CONFIG), in
    its own process group, output to ``log``; returns once it is up (:func:`wait_until_up`),
    stopping it again when it is not. ``workspace`` None: ``dg dev`` in the repository, as
    ``make dev`` runs it (the project's ``[tool.dg]`` table names the code location)."""
    exe = dagster_bin("dagster" if workspace is not None else "dg")
    if exe is None:
        raise FileNotFoundError("the dagster/dg CLI is not installed next to this interpreter nor on $PATH")
    port = free_port()
    target = ["-w", str(workspace)] if workspace is not None else []
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "dev", *target, "--port", str(port), "--host", "127.0.0.1"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    dev = DagsterDev(f"http://127.0.0.1:{port}", env, Path(env["DAGSTER_HOME"]), root, log, proc)
    try:
        wait_until_up(dev)
    except BaseException:
        kill_tree(proc)
        raise
    return dev


def wait_until_up(dev: DagsterDev, timeout: float = START_TIMEOUT) -> None:
    """Wait until the webserver answers and the code location has loaded; RuntimeError (with the
    log's tail) when dagster dev exits, the location fails to load or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = "not started"
    while time.monotonic() < deadline:
        if dev.proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.proc.returncode}:\n{dev.log_tail()}")
        try:
            with urllib.request.urlopen(f"{dev.url}/server_info", timeout=5) as r:
                r.read()
            data = dev.gql("""{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                locationOrLoadError { __typename ... on PythonError { message stack } } } } } }""")
            entries = {e["name"]: e for e in data["workspaceOrError"]["locationEntries"]}
            entry = entries.get(LOCATION)
            if entry and entry["loadStatus"] == "LOADED":
                err = entry["locationOrLoadError"]
                if err and err["__typename"] == "PythonError":
                    raise RuntimeError(f"code location {LOCATION!r} failed to load: {err['message']}\n"
                                       f"{''.join(err['stack'][-5:])}")
                return
            last = f"location entries: {list(entries)}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            last = repr(e)
        time.sleep(1)
    raise RuntimeError(f"dagster dev not ready after {timeout:.0f}s ({last}):\n{dev.log_tail()}")
