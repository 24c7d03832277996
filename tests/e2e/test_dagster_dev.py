"""The Dagster deployment as a user runs it: ``dagster dev -w workspace.yaml`` in its own process
(temp DAGSTER_HOME, temp $MOGE_CONFIG on a temp lake), inspected through the webserver's GraphQL
API, a 5-day job backfill of daily_flow, and a headless-Chromium screenshot of the UI.

Backfill ordering (dagster 1.13): a job backfill (``dagster job backfill``, the UI's job backfill,
launchPartitionBackfill with the job's partition set) submits one run per day at once, in date
order, and an instance with an empty dagster.yaml dequeues up to 10 runs at a time: all days run in
parallel and nothing makes day D wait for day D-1, although day D's graphs read the logs of
D-W .. D-1 and its model the samples of D-T .. D-1 (a day that gets ahead fails with
FileNotFoundError naming the missing partition). The instance here therefore dequeues one run at a
time (``run_queue.max_concurrent_runs: 1``); the queue is FIFO, so the days run in date order.
"""

from __future__ import annotations

import importlib.util
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

import pytest

from tests.conftest import REPO

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
GROUPS = {
    "interaction_logs": "ingest",
    "bipartite_graph": "graph",
    "user_similarity_graph": "graph",
    "item_similarity_graph": "graph",
    "node_features": "features",
    "training_samples": "samples",
    "trained_model": "model",
    "model_evaluation": "model",
    "deployed_model": "model",
}
DATA_ASSETS = ["interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph",
               "node_features", "training_samples"]
MODEL_ASSETS = ["trained_model", "model_evaluation", "deployed_model"]
# (upstream, downstream): the flow's lineage as the README describes it.
EDGES = {
    ("interaction_logs", "bipartite_graph"),
    ("bipartite_graph", "user_similarity_graph"),
    ("bipartite_graph", "item_similarity_graph"),
    ("interaction_logs", "node_features"),
    ("interaction_logs", "training_samples"),
    ("bipartite_graph", "training_samples"),
    *{(a, "trained_model") for a in ("training_samples", "node_features", "bipartite_graph",
                                     "user_similarity_graph", "item_similarity_graph")},
    ("trained_model", "model_evaluation"),
    ("training_samples", "model_evaluation"),
    ("model_evaluation", "deployed_model"),
    ("trained_model", "deployed_model"),
}
# Deps that read a window of earlier days rather than the same day.
WINDOW_EDGES = {("interaction_logs", "bipartite_graph"), ("interaction_logs", "node_features"),
                ("training_samples", "trained_model")}

# One run at a time, FIFO: the backfill's days run in date order (see the module docstring).
# Everything else is the default instance (sqlite storage under DAGSTER_HOME).
DAGSTER_YAML = """\
run_queue:
  max_concurrent_runs: 1
telemetry:
  enabled: false
"""

START_TIMEOUT = 180  # webserver up and the code location loaded
BACKFILL_TIMEOUT = 8 * 60
REPO_SELECTOR = {"repositoryLocationName": "moge", "repositoryName": "__repository__"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dagster_bin() -> str:
    exe = Path(sys.executable).parent / "dagster"
    found = str(exe) if exe.exists() else shutil.which("dagster")
    if not found:
        pytest.skip("the dagster CLI is not installed next to this interpreter")
    return found


def _kill_tree(proc: subprocess.Popen, grace: float = 15) -> None:
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
    url: str
    env: dict
    home: Path
    lake: Path
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

    def dagster(self, *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the dagster CLI against the same instance and workspace as the dev server."""
        return subprocess.run([_dagster_bin(), *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              input=input, timeout=timeout)


def _wait_until_up(dev: DagsterDev) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "not started"
    while time.monotonic() < deadline:
        if dev.proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {dev.proc.returncode}:\n{dev.log_tail()}")
        try:
            with urllib.request.urlopen(f"{dev.url}/server_info", timeout=5) as r:
                r.read()
            data = dev.gql("""{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
                locationOrLoadError { __typename ... on PythonError { message stack } } } } } }""")
            entries = {e["name"]: e for e in data["workspaceOrError"]["locationEntries"]}
            entry = entries.get("moge")
            if entry and entry["loadStatus"] == "LOADED":
                err = entry["locationOrLoadError"]
                if err and err["__typename"] == "PythonError":
                    pytest.fail(f"code location 'moge' failed to load: {err['message']}\n{''.join(err['stack'][-5:])}")
                return
            last = f"location entries: {list(entries)}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            last = repr(e)
        time.sleep(1)
    pytest.fail(f"dagster dev not ready after {START_TIMEOUT}s ({last}):\n{dev.log_tail()}")


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    base = tmp_path_factory.mktemp("dagster-dev")
    home, lake, tmp = base / "dagster_home", base / "data", base / "tmp"
    for d in (home, lake, tmp):
        d.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    cfg = base / "pipeline.toml"
    cfg.write_text(
        '[source]\nkind = "synthetic"\nstart_date = "2026-01-01"\n'
        "[graph]\nwindow_days = 3\n"
        "[train]\ntrain_days = 2\nepochs = 1\nmax_steps_per_epoch = 20\nbatch_size = 512\ndim = 16\n"
        f'[storage]\nroot = "{lake}"\n'
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "MOGE_CONFIG": str(cfg), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    log = base / "dagster_dev.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([_dagster_bin(), "dev", "-w", "workspace.yaml", "-p", str(port), "-h", "127.0.0.1"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    dev = DagsterDev(f"http://127.0.0.1:{port}", env, home, lake, log, proc)
    try:
        _wait_until_up(dev)
        print(f"\ndagster dev ready in {time.monotonic() - t0:.1f}s at {dev.url}")
        yield dev
    finally:
        _kill_tree(proc)


ASSET_GRAPH_QUERY = """{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    partitionDefinition { type description }
    jobNames
    dependencies { asset { assetKey { path } } partitionMapping { className } }
  }
}"""


def test_asset_graph_schedule_and_job(dagster_dev):
    nodes = {n["assetKey"]["path"][-1]: n for n in dagster_dev.gql(ASSET_GRAPH_QUERY)["assetNodes"]}
    assert set(GROUPS) <= set(nodes), f"missing assets: {set(GROUPS) - set(nodes)}"
    assert {a: nodes[a]["groupName"] for a in GROUPS} == GROUPS
    for a in GROUPS:
        n = nodes[a]
        assert n["isPartitioned"] and n["partitionDefinition"]["type"] == "TIME_WINDOW", a
        assert n["partitionDefinition"]["description"].startswith("Daily, starting 2026-01-01"), n["partitionDefinition"]
        assert "daily_flow" in n["jobNames"], (a, n["jobNames"])

    edges = {(d["asset"]["assetKey"]["path"][-1], a): d["partitionMapping"]["className"] if d["partitionMapping"] else None
             for a, n in nodes.items() for d in n["dependencies"]}
    assert EDGES <= set(edges), f"missing lineage edges: {sorted(EDGES - set(edges))}"
    # the on-demand comparison reads the flow's data stages; it is in its own group and job
    cmp = nodes["model_comparison"]
    assert cmp["groupName"] == "comparison" and "model_comparison_job" in cmp["jobNames"] and "daily_flow" not in cmp["jobNames"], cmp
    assert {u for u, d in edges if d == "model_comparison"} == {
        "training_samples", "node_features", "bipartite_graph", "user_similarity_graph", "item_similarity_graph"}
    search = nodes["hyperparameter_search"]  # the on-demand search: the same group and inputs, its own job
    assert search["groupName"] == "comparison" and "tuning_job" in search["jobNames"], search
    assert {u for u, d in edges if d == "hyperparameter_search"} == {u for u, d in edges if d == "model_comparison"}
    edges = {e: m for e, m in edges.items() if e[1] not in ("model_comparison", "hyperparameter_search")}
    assert {u for u, _ in edges} | {d for _, d in edges} <= set(GROUPS), f"edges to unknown assets: {edges}"
    for e in WINDOW_EDGES:
        assert edges[e] == "TimeWindowPartitionMapping", (e, edges[e])
    roots = {a for a in nodes if not nodes[a]["dependencies"]}
    assert roots == {"interaction_logs"}

    repo = dagster_dev.gql("""{ repositoriesOrError { ... on RepositoryConnection { nodes {
        name location { name }
        schedules { name cronSchedule pipelineName executionTimezone scheduleState { status } }
        partitionSets { name pipelineName }
        pipelines { name isJob isAssetJob description } } } } }""")["repositoriesOrError"]["nodes"]
    assert [(r["location"]["name"], r["name"]) for r in repo] == [("moge", "__repository__")]
    repo = repo[0]
    schedules = {s["name"]: s for s in repo["schedules"]}
    sched = schedules["daily_flow_schedule"]
    assert sched["cronSchedule"] == "30 2 * * *"
    assert sched["pipelineName"] == "daily_flow"
    assert sched["executionTimezone"] == "UTC"
    assert sched["scheduleState"]["status"] == "STOPPED"  # default_status: turned on by the operator

    jobs = {p["name"]: p for p in repo["pipelines"]}
    assert jobs["daily_flow"]["isJob"] and jobs["daily_flow"]["isAssetJob"]
    assert any(ps["pipelineName"] == "daily_flow" for ps in repo["partitionSets"]), repo["partitionSets"]
    keys = dagster_dev.gql("""{ pipelineOrError(params: {pipelineName: "daily_flow", repositoryName: "__repository__",
        repositoryLocationName: "moge"}) { __typename ... on Pipeline { partitionKeysOrError {
        ... on PartitionKeys { partitionKeys } } } } }""")["pipelineOrError"]["partitionKeysOrError"]["partitionKeys"]
    assert keys[:5] == DAYS  # daily keys from source.start_date
    job_assets = dagster_dev.gql("""{ assetNodes(pipeline: {pipelineName: "daily_flow", repositoryName: "__repository__",
        repositoryLocationName: "moge"}) { assetKey { path } } }""")["assetNodes"]
    assert {n["assetKey"]["path"][-1] for n in job_assets} == set(GROUPS)


# -- the 5-day backfill ---------------------------------------------------------------------------
# launchPartitionBackfill with the job's partition set is the same job backfill ``dagster job
# backfill -j daily_flow --from .. --to ..`` creates (one daily_flow run per day, submitted in date
# order), plus a run config: the CLI cannot set one, and with the job's default multiprocess
# executor every step is a fresh interpreter importing torch (measured on 2 shared cores: ~12.5 min
# for the 5 days vs ~3 min with the in-process executor). The CLI itself is exercised up to its
# confirmation prompt (it resolves the workspace, the job and the range; answering "n" launches
# nothing).
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}"""
BACKFILL_RUNS = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}"""
STEP_FAILURES = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } } } }
  }
}"""
LATEST_BY_PARTITION = """
query($keys: [AssetKeyInput!], $partitions: [String!]!) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    latestMaterializationByPartition(partitions: $partitions) { partition runId }
  }
}"""
MATERIALIZATION_METADATA = """
query($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(partitions: $partitions) { partition
      metadataEntries { label ... on JsonMetadataEntry { jsonString } ... on TextMetadataEntry { text } } } }
  }
}"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _failures(dev: DagsterDev, runs: list[dict]) -> str:
    out = []
    for r in runs:
        if r["status"] != "SUCCESS":
            events = dev.gql(STEP_FAILURES, {"runId": r["runId"]})["logsForRun"].get("events", [])
            msgs = [f"{e['stepKey']}: {e['error']['message'].strip()[:400]}" for e in events
                    if e["__typename"] == "ExecutionStepFailureEvent"]
            out.append(f"{r['partition']} run {r['runId'][:8]} {r['status']}: {msgs}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def backfill(dagster_dev):
    """The 5-day backfill, launched once and waited for; yields its runs in date order."""
    dev = dagster_dev
    # The CLI resolves the job and the 5-day range (prompt declined: nothing is launched).
    cli = dev.dagster("job", "backfill", "-w", "workspace.yaml", "-j", "daily_flow", "--from", DAYS[0], "--to", DAYS[-1],
                      input="n\n")
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-3000:]
    assert all(d in cli.stdout for d in DAYS) and "(5 partitions)" in cli.stdout and "Aborted!" in cli.stdout, cli.stdout

    t0 = time.monotonic()
    params = {"selector": {"partitionSetName": "daily_flow_partition_set", "repositorySelector": REPO_SELECTOR},
              "partitionNames": DAYS,  # daily_flow runs in process by definition: no run config needed
              "title": "e2e: 5 days"}
    res = dev.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert res["__typename"] == "LaunchBackfillSuccess", res
    tags = [{"key": "dagster/backfill", "value": res["backfillId"]}]
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = dev.gql(BACKFILL_RUNS, {"tags": tags})["runsOrError"]["results"]
        if len(runs) == len(DAYS) and all(r["status"] in TERMINAL for r in runs):
            break
        if any(r["status"] in ("FAILURE", "CANCELED") for r in runs):
            break  # FIFO: the later days would fail on the missing partition anyway
        time.sleep(3)
    for r in runs:
        r["partition"] = next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition")
    runs.sort(key=lambda r: r["partition"])
    print(f"\nbackfill {res['backfillId']}: {[(r['partition'], r['status']) for r in runs]} "
          f"in {time.monotonic() - t0:.0f}s")
    assert [r["partition"] for r in runs] == DAYS, f"runs after {BACKFILL_TIMEOUT}s: {runs}\n{dev.log_tail()}"
    assert all(r["status"] == "SUCCESS" for r in runs), _failures(dev, runs)
    return runs


def test_backfill_runs_the_days_in_order(backfill):
    # One run per day, each started after the previous day's run ended (FIFO queue of one).
    for prev, cur in zip(backfill, backfill[1:]):
        assert cur["startTime"] >= prev["endTime"], (prev, cur)


def test_backfill_materializes_every_day(dagster_dev, backfill):
    run_of = {r["partition"]: r["runId"] for r in backfill}
    keys = [{"path": [a]} for a in GROUPS]
    nodes = dagster_dev.gql(LATEST_BY_PARTITION, {"keys": keys, "partitions": DAYS})["assetNodes"]
    got = {n["assetKey"]["path"][-1]: {m["partition"]: m["runId"] for m in n["latestMaterializationByPartition"] if m}
           for n in nodes}
    for a in DATA_ASSETS:
        assert got[a] == {d: run_of[d] for d in DAYS}, a
    # Day 1 has no training history: trained_model is skipped there, and so are its dependents.
    for a in MODEL_ASSETS:
        assert got[a] == {d: run_of[d] for d in DAYS[1:]}, a

    # The windows reached back across the days: the graph of day 5 is built from days 2..4, the
    # model of day 5 trained on days 3..4.
    def meta(asset, day):
        mats = dagster_dev.gql(MATERIALIZATION_METADATA, {"key": {"path": [asset]}, "partitions": [day]})
        [m] = mats["assetOrError"]["assetMaterializations"]
        return {e["label"]: e.get("jsonString") or e.get("text") for e in m["metadataEntries"]}

    assert json.loads(meta("bipartite_graph", DAYS[4])["window_days"]) == DAYS[1:4]
    assert json.loads(meta("trained_model", DAYS[4])["train_days"]) == DAYS[2:4]

    lake = dagster_dev.lake / "lake"
    for a in DATA_ASSETS:
        assert sorted(p.name for p in (lake / a).glob("ds=*")) == [f"ds={d}" for d in DAYS], a
    for a in MODEL_ASSETS:
        assert sorted(p.name for p in (lake / a).glob("ds=*")) == [f"ds={d}" for d in DAYS[1:]], a


def _screenshot_module():
    """scripts/screenshot_ui.py (scripts/ is not a package)."""
    name = "moge_screenshot_ui"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "screenshot_ui.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_ui_screenshot(dagster_dev, backfill, tmp_path):
    """The UI renders the asset lineage (a real browser, the page's own JS and GraphQL calls).

    Set MOGE_E2E_SCREENSHOTS=<dir> to write all three docs/ui pages there instead."""
    shots_mod = _screenshot_module()
    if not shots_mod.find_chromium():
        pytest.skip("no Chromium on this machine: `make test` installs it as root (scripts/install.sh --browser, "
                    "apt-get install chromium); without root, install it yourself")
    out_dir = Path(os.environ.get("MOGE_E2E_SCREENSHOTS") or tmp_path)
    shots = shots_mod.DEFAULT_SHOTS
    if not os.environ.get("MOGE_E2E_SCREENSHOTS"):
        shots = [s for s in shots if s.name == "lineage"]
    # capture() waits until each page shows its texts (all nine asset names on the lineage graph).
    written = shots_mod.capture(dagster_dev.url, out_dir, shots)
    assert set(written) == {s.name for s in shots}
    for name, path in written.items():
        png = path.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(png) > 30_000, f"{name}: {len(png)} bytes, probably a blank page"
        if os.environ.get("MOGE_E2E_SCREENSHOTS"):
            shots_mod.shrink_png(path)
