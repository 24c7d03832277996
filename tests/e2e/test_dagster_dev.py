"""The Dagster deployment as a user runs it: ``dg dev`` (``make dev``) in its own process
(temp DAGSTER_HOME with the project's orchestration/dagster.yaml, temp $MOGE_CONFIG on a temp
lake), driven through the UI (headless Chromium) and the webserver's GraphQL API, as the UI
does, and inspected through GraphQL, the lake and the bundle store. Two deployments, each with
its own small config (the windows are fixed when the code location loads), started together so
that the automation's catch-up (mostly waiting for the daemons' 30 s ticks) runs during the
backfill:

* **Backfill** (source days today-5 .. yesterday, UTC): the asset graph, groups, lineage, jobs
  and the (stopped) sensor; then "Materialize all" over the 5 days, clicked on the lineage page
  (scripts/screenshot_ui.py ``materialize_all``): an asset backfill that runs many days per run
  (the backfill policies: a handful of ranged runs), the model steps one at a time (pool "model")
  and the decisions in date order, with nothing materialized beforehand: the first day has logs only, so every partition the
  range's graphs, samples and models read is in the backfill.
* **Automation** (source from 20 days ago, open-ended, ``automation.catch_up_days = 3``): on an
  empty lake, ``daily_automation`` is turned on (``startSensor``, the UI's toggle); the daemon
  observes the source, then catches up the horizon up to yesterday's decision, and nothing older;
  a tick after that requests nothing; the sensor is turned off again (``stopSensor``).

The days are computed from today's date (UTC, the synthetic source's zone); the backfill's config
ends yesterday (``source.end_date``) so its partitions do not move if the test crosses midnight.
$MOGE_E2E_SCREENSHOTS=<dir> writes the docs/ui pages there (lineage, partitions, the backfill, the
"Materialize all" dialog, the automation sensor).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ml_core.registry.bundles import BundleStore
from tests.conftest import REPO
from tests.dagster_dev import (
    SENSOR,
    SENSOR_QUERY,
    START_SENSOR,
    STOP_SENSOR,
    DagsterDev,
    dagster_bin,
    kill_tree,
    start,
)

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
FLOW = list(GROUPS)
DATA_ASSETS = FLOW[:6]
MODEL_ASSETS = FLOW[6:]
# (upstream, downstream): the flow's lineage as the README describes it.
EDGES = {
    ("source_logs", "interaction_logs"),
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
    ("deployed_model", "deployed_model"),  # day D is decided after day D-1
}
# Deps that read a window of earlier days rather than the same day.
WINDOW_EDGES = {("interaction_logs", "bipartite_graph"), ("interaction_logs", "node_features"),
                ("training_samples", "trained_model"), ("deployed_model", "deployed_model")}

W, T = 3, 2  # graph.window_days, train.train_days of both configs
CATCH_UP = 3  # automation.catch_up_days of the automation's config
# A few optimiser steps per model: the flow's code paths, not its quality.
TRAIN = "[train]\ntrain_days = 2\nepochs = 1\nmax_steps_per_epoch = 20\nbatch_size = 512\ndim = 16\n"

BACKFILL_TIMEOUT = 15 * 60  # each of the two backfills
CATCH_UP_TIMEOUT = 20 * 60  # from the toggle (it runs while the backfill runs)
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def days(first: date, n: int) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range(n)]


def utc_today() -> date:
    return datetime.now(UTC).date()


# -- dg dev ------------------------------------------------------------------------------------


@contextmanager
def dagster_dev(base: Path, source: str, extra: str = "") -> Iterator[DagsterDev]:
    """``dg dev`` (as ``make dev`` runs it) on a fresh instance (the project's
    orchestration/dagster.yaml, as ``make dev`` copies it) and a config with ``[source]`` lines
    ``source``, the tests' windows (W = 3, T = 2) and a few training steps."""
    home, root, tmp = base / "dagster_home", base / "data", base / "tmp"
    for d in (home, root, tmp):
        d.mkdir()
    shutil.copy(REPO / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    cfg = base / "pipeline.toml"
    cfg.write_text(f'[source]\nkind = "synthetic"\n{source}[graph]\nwindow_days = {W}\n{TRAIN}{extra}'
                   f'[storage]\nroot = "{root}"\n')
    env = {**os.environ, "DAGSTER_HOME": str(home), "MOGE_CONFIG": str(cfg), "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONUNBUFFERED": "1"}
    if dagster_bin() is None:
        pytest.skip("the dagster CLI is not installed next to this interpreter")
    t0 = time.monotonic()
    dev = start(None, env, root, base / "dagster_dev.log")  # dg dev, as make dev runs it
    try:
        print(f"\ndg dev ready in {time.monotonic() - t0:.1f}s at {dev.url} (log: {dev.log})")
        yield dev
    finally:
        kill_tree(dev.proc)


# -- GraphQL ------------------------------------------------------------------------------------

ASSET_GRAPH_QUERY = """{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    isObservable
    isMaterializable
    partitionDefinition { type description }
    jobNames
    pools
    automationCondition { label }
    dependencies { asset { assetKey { path } } partitionMapping { className } }
  }
}"""
REPOSITORY_QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
    name location { name }
    schedules { name }
    sensors { name sensorType minIntervalSeconds defaultStatus sensorState { status } }
    pipelines { name isJob isAssetJob } } } } }"""
PARTITION_KEYS = """query($job: String!) { pipelineOrError(params: {pipelineName: $job,
    repositoryName: "__repository__", repositoryLocationName: "moge"}) { __typename ... on Pipeline {
    partitionKeysOrError { ... on PartitionKeys { partitionKeys } } } } }"""
JOB_ASSETS = """query($job: String!) { assetNodes(pipeline: {pipelineName: $job, repositoryName: "__repository__",
    repositoryLocationName: "moge"}) { assetKey { path } } }"""
# What LaunchAssetChoosePartitionsDialog sends for "Materialize all" (target "pureWithAnchorAsset":
# the selection's root, interaction_logs, has one partitions definition): the assets and the
# anchor's chosen partition keys; the server maps them to the other assets' partitions.
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status isAssetBackfill numPartitions tags { key value } error { message }
      assetBackfillData { assetBackfillStatuses { ... on AssetPartitionsStatusCounts {
        assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed } } }
    }
    ... on PythonError { message }
  }
}"""
BACKFILLS = """{ partitionBackfillsOrError(limit: 100) { ... on PartitionBackfills { results {
    id status isAssetBackfill tags { key value } } } } }"""
RUNS = """
query($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status startTime endTime tags { key value } assetSelection { path }
      stepStats { stepKey status startTime endTime } } }
  }
}"""
STEP_FAILURES = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename
      ... on ExecutionStepFailureEvent { stepKey error { message cause { message } } }
      ... on ExecutionStepUpForRetryEvent { stepKey error { message cause { message } } } } }
  }
}"""
LATEST_BY_PARTITION = """
query($keys: [AssetKeyInput!], $partitions: [String!]!) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    latestMaterializationByPartition(partitions: $partitions) { partition runId }
  }
}"""
MATERIALIZATIONS = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetMaterializations { partition runId timestamp
      metadataEntries { label ... on JsonMetadataEntry { jsonString } ... on TextMetadataEntry { text } } } } }
}"""


def _tags(obj: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in obj["tags"]}


def _runs(dev: DagsterDev, tags: dict[str, str] | None = None) -> list[dict]:
    flt = {"tags": [{"key": k, "value": v} for k, v in tags.items()]} if tags else {}
    runs = dev.gql(RUNS, {"filter": flt})["runsOrError"]["results"]
    for r in runs:
        r["partition"] = _tags(r).get("dagster/partition")
        r["assets"] = sorted(a["path"][-1] for a in r["assetSelection"] or [])
    return runs


def _failures(dev: DagsterDev, runs: list[dict]) -> str:
    out = []
    for r in runs:
        if r["status"] in ("FAILURE", "CANCELED"):
            events = dev.gql(STEP_FAILURES, {"runId": r["runId"]})["logsForRun"].get("events", [])
            msgs = [f"{e['stepKey']}: {e['error']['message'].strip()[:600]}"
                    + (f" (cause: {e['error']['cause']['message'].strip()[:600]})" if e["error"]["cause"] else "")
                    for e in events if e.get("error")]
            out.append(f"{r['partition']} {r['assets']} run {r['runId'][:8]} {r['status']}: {msgs}")
    return "\n".join(out)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals in progress at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _materialized(dev: DagsterDev, asset: str) -> dict[str, list[dict]]:
    """Every materialization of ``asset`` by partition (newest first)."""
    mats = dev.gql(MATERIALIZATIONS, {"key": {"path": [asset]}})["assetOrError"]["assetMaterializations"]
    out: dict[str, list[dict]] = {}
    for m in mats:
        m["meta"] = {e["label"]: e.get("jsonString") or e.get("text") for e in m["metadataEntries"]}
        out.setdefault(m["partition"], []).append(m)
    return out


def _screenshot_module():
    """scripts/screenshot_ui.py (scripts/ is not a package)."""
    name = "moge_screenshot_ui"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "screenshot_ui.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _screenshots(dev: DagsterDev, names: list[str], default: list[str], tmp_path: Path,
                 more_texts: dict[str, list[str]] | None = None) -> None:
    """Shots ``names`` of scripts/screenshot_ui.py into $MOGE_E2E_SCREENSHOTS (compressed, for
    docs/ui), or only ``default`` of them into a temp dir; each must be a real page, showing its
    texts (and ``more_texts`` of it)."""
    mod = _screenshot_module()
    if not mod.find_chromium():
        pytest.skip("no Chromium on this machine: `make test` installs it as root (scripts/install.sh --browser, "
                    "apt-get install chromium); without root, install it yourself")
    keep = os.environ.get("MOGE_E2E_SCREENSHOTS")
    out_dir = Path(keep or tmp_path)
    want = names if keep else default
    shots = [s for s in mod.default_shots(dev.url) if s.name in want]
    assert {s.name for s in shots} == set(want), [s.name for s in shots]
    for s in shots:
        s.wait_texts += (more_texts or {}).get(s.name, [])
    written = mod.capture(dev.url, out_dir, shots)  # waits until each page shows its texts
    assert set(written) == set(want)
    for name, path in written.items():
        png = path.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(png) > 30_000, f"{name}: {len(png)} bytes, probably a blank page"
        if keep:
            mod.shrink_png(path)


def _ticks(dev: DagsterDev) -> list[dict]:
    return sorted(dev.gql(SENSOR_QUERY, {"sel": SENSOR})["sensorOrError"]["sensorState"]["ticks"],
                  key=lambda t: t["timestamp"])


def _requested(tick: dict) -> dict[str, list[str]]:
    """The partitions a tick requested, by asset. (Dagster lists a single run's asset checks among
    their asset's partition keys, by check name: left out.)"""
    return {r["assetKey"]["path"][-1]: sorted(k for k in r["partitionKeys"] if re.fullmatch(r"\d{4}-\d{2}-\d{2}", k))
            for r in tick["requestedMaterializationsForAssets"]}


def _ticks_summary(ticks: list[dict], since: float) -> str:
    lines = []
    for t in ticks:
        short = {a: (f"{p[0]}..{p[-1]} ({len(p)})" if len(p) > 1 else p[0]) for a, p in _requested(t).items() if p}
        lines.append(f"  tick +{t['timestamp'] - since:4.0f}s {t['status']:8s} {len(t['runIds'])} run(s)/backfill(s): "
                     f"{short or t['skipReason'] or ''}{' ERROR ' + t['error']['message'][:300] if t['error'] else ''}")
    return "\n".join(lines)


def _days_of(asset: str) -> list[str]:
    """The backfill's days that have a partition of ``asset``."""
    return BACKFILL_MODEL_DAYS if asset in MODEL_ASSETS else BACKFILL_DAYS if asset == "interaction_logs" \
        else BACKFILL_DATA_DAYS


def _job_of(asset: str) -> str:
    return "daily_model" if asset in MODEL_ASSETS else "daily_logs" if asset == "interaction_logs" else "daily_data"


# -- the two deployments -----------------------------------------------------------------------------

#: The backfill's days: today-6 .. yesterday (UTC); derived data from the second, models T days later.
BACKFILL_DAYS = days(utc_today() - timedelta(days=6), 6)
BACKFILL_DATA_DAYS = BACKFILL_DAYS[1:]
BACKFILL_MODEL_DAYS = BACKFILL_DATA_DAYS[T:]
#: The automation's source starts 20 days ago, open-ended.
AUTOMATION_START = utc_today() - timedelta(days=20)


@dataclass
class Deployments:
    backfill: DagsterDev
    automation: DagsterDev
    sensor_before: dict  # daily_automation as the automation deployment started (before the toggle)
    sensor_on_at: float  # time.monotonic() when it was turned on
    sensor_on_day: date  # the UTC day it was turned on (a run across midnight adds the new day)


@pytest.fixture(scope="module")
def deployments(tmp_path_factory) -> Iterator[Deployments]:
    """Both deployments, started together, and the automation turned on at once: its catch-up
    (most of it waiting for the daemons' 30 s ticks) runs while the backfill runs."""
    with ExitStack() as stack:
        bf = stack.enter_context(dagster_dev(tmp_path_factory.mktemp("dagster-backfill"),
                                             f'start_date = "{BACKFILL_DAYS[0]}"\nend_date = "{BACKFILL_DAYS[-1]}"\n'))
        au = stack.enter_context(dagster_dev(tmp_path_factory.mktemp("dagster-automation"),
                                             f'start_date = "{AUTOMATION_START}"\n',
                                             f"[automation]\ncatch_up_days = {CATCH_UP}\n"))
        before = au.gql(SENSOR_QUERY, {"sel": SENSOR})["sensorOrError"]
        assert before["__typename"] == "Sensor", before
        # the UI's toggle on the sensor's page
        res = au.gql(START_SENSOR, {"sel": SENSOR})["startSensor"]
        assert res["__typename"] == "Sensor" and res["sensorState"]["status"] == "RUNNING", res
        yield Deployments(bf, au, before, time.monotonic(), utc_today())


# -- 1. the asset graph, and "Materialize all" over a date range --------------------------------------


def test_asset_graph_jobs_and_sensor(deployments):
    dev = deployments.backfill
    nodes = {n["assetKey"]["path"][-1]: n for n in dev.gql(ASSET_GRAPH_QUERY)["assetNodes"]}
    assert set(nodes) == {*GROUPS, "source_logs", "model_comparison", "hyperparameter_search"}, sorted(nodes)
    assert {a: nodes[a]["groupName"] for a in GROUPS} == GROUPS
    for a in GROUPS:
        n = nodes[a]
        first = _days_of(a)[0]
        assert n["isPartitioned"] and n["partitionDefinition"]["type"] == "TIME_WINDOW", a
        assert n["partitionDefinition"]["description"].startswith(f"Daily, starting {first}"), (a, n["partitionDefinition"])
        assert n["automationCondition"]["label"].startswith("catch_up("), (a, n["automationCondition"])
        jobs = [j for j in n["jobNames"] if not j.startswith("__")]  # less the hidden asset job
        assert jobs == [_job_of(a)], (a, n["jobNames"])
        assert n["pools"] == (["model"] if a in MODEL_ASSETS else []), (a, n["pools"])
    src = nodes["source_logs"]
    assert src["isObservable"] and not src["isMaterializable"] and src["groupName"] == "ingest", src
    assert src["automationCondition"]["label"] == "observe", src

    edges = {(d["asset"]["assetKey"]["path"][-1], a): d["partitionMapping"]["className"] if d["partitionMapping"] else None
             for a, n in nodes.items() for d in n["dependencies"]}
    assert EDGES <= set(edges), f"missing lineage edges: {sorted(EDGES - set(edges))}"
    # the on-demand comparison reads the flow's data stages; it is in its own group and job, not automated
    cmp = nodes["model_comparison"]
    assert cmp["groupName"] == "comparison" and "model_comparison_job" in cmp["jobNames"], cmp
    assert not {"daily_data", "daily_model"} & set(cmp["jobNames"]) and cmp["automationCondition"] is None, cmp
    assert {u for u, d in edges if d == "model_comparison"} == {
        "training_samples", "node_features", "bipartite_graph", "user_similarity_graph", "item_similarity_graph"}
    search = nodes["hyperparameter_search"]  # the on-demand search: the same group and inputs, its own job
    assert search["groupName"] == "comparison" and "tuning_job" in search["jobNames"], search
    assert {u for u, d in edges if d == "hyperparameter_search"} == {u for u, d in edges if d == "model_comparison"}
    edges = {e: m for e, m in edges.items() if e[1] not in ("model_comparison", "hyperparameter_search")}
    assert {u for u, _ in edges} | {d for _, d in edges} <= {*GROUPS, "source_logs"}, f"edges to unknown assets: {edges}"
    for e in WINDOW_EDGES:
        assert edges[e] == "TimeWindowPartitionMapping", (e, edges[e])
    assert {a for a in nodes if not nodes[a]["dependencies"]} == {"source_logs"}

    [repo] = dev.gql(REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
    assert (repo["location"]["name"], repo["name"]) == ("moge", "__repository__")
    assert repo["schedules"] == []  # the automation sensor replaced the schedule
    sensor = {s["name"]: s for s in repo["sensors"]}["daily_automation"]
    assert sensor["sensorType"] == "AUTO_MATERIALIZE" and sensor["minIntervalSeconds"] == 30, sensor
    assert sensor["defaultStatus"] == "STOPPED" and sensor["sensorState"]["status"] == "STOPPED", sensor
    assert deployments.sensor_before["sensorState"]["status"] == "STOPPED"  # the other deployment's, before the toggle
    jobs = {p["name"]: p for p in repo["pipelines"]}
    assert {"daily_logs", "daily_data", "daily_model", "model_comparison_job"} <= set(jobs) and "daily_flow" not in jobs, \
        sorted(jobs)
    for job, keys, assets in (("daily_logs", BACKFILL_DAYS, DATA_ASSETS[:1]), ("daily_data", BACKFILL_DATA_DAYS, DATA_ASSETS[1:]),
                              ("daily_model", BACKFILL_MODEL_DAYS, MODEL_ASSETS)):
        assert jobs[job]["isJob"] and jobs[job]["isAssetJob"], jobs[job]
        got = dev.gql(PARTITION_KEYS, {"job": job})["pipelineOrError"]["partitionKeysOrError"]["partitionKeys"]
        assert got == keys, (job, got)
        job_assets = dev.gql(JOB_ASSETS, {"job": job})["assetNodes"]
        assert {n["assetKey"]["path"][-1] for n in job_assets} == set(assets), job


def _launch(dev: DagsterDev, assets: list[str], partitions: list[str], title: str) -> str:
    """launchPartitionBackfill as the UI's partitions dialog sends it (LaunchAssetChoosePartitionsDialog)."""
    params = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": partitions, "fromFailure": False,
              "tags": [{"key": "dagster/from_ui", "value": "true"}], "title": title}
    res = dev.gql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    assert res["__typename"] == "LaunchBackfillSuccess", res
    return res["backfillId"]


def _wait(dev: DagsterDev, bid: str, what: str) -> dict:
    """Wait for backfill ``bid`` to finish; returns its status, runs (and the most in progress at
    one poll) and how long it took from now."""
    t0 = time.monotonic()
    deadline = t0 + BACKFILL_TIMEOUT
    most = 0
    while True:
        status = dev.gql(BACKFILL_STATUS, {"id": bid})["partitionBackfillOrError"]
        runs = _runs(dev, {"dagster/backfill": bid})
        most = max(most, sum(r["status"] in ("STARTING", "STARTED") for r in runs))
        if status["status"] not in ("REQUESTED", "CANCELING", "FAILING") or time.monotonic() > deadline:
            break
        time.sleep(2)
    took = time.monotonic() - t0
    print(f"\nbackfill {bid} ({what}): {status['status']} in {took:.0f}s, {len(runs)} runs, at most {most} in progress")
    for r in sorted(runs, key=lambda r: r["startTime"] or 0):
        print(f"  {r['partition']} {r['status']:8s} {(r['endTime'] or 0) - (r['startTime'] or 0):5.1f}s {r['assets']}")
    assert status["status"] == "COMPLETED_SUCCESS", (
        f"backfill {status['status']} after {took:.0f}s: {status['error']}\n{_failures(dev, runs)}\n"
        f"{json.dumps(status['assetBackfillData'], indent=1)}\n{dev.log_tail()}")
    return {"id": bid, "status": status, "runs": runs, "most": most, "seconds": took}


@pytest.fixture(scope="module")
def backfill(deployments, tmp_path_factory):
    """"Materialize all" over the 6 days of a fresh lake, clicked in headless Chromium on the
    lineage page (scripts/screenshot_ui.py materialize_all): the graph filtered to the flow
    (``not group:"comparison"``), "Materialize all (9)…", the range typed into the anchor asset
    interaction_logs' partition input, "Launch backfill". The UI sends the assets and the anchor's
    partition keys (target "pureWithAnchorAsset" of LaunchAssetChoosePartitionsDialog.tsx);
    Dagster targets every partition downstream of those keys through the partition mappings.
    Without Chromium the same mutation is sent over GraphQL. Nothing is materialized before it."""
    dev = deployments.backfill
    mod = _screenshot_module()
    if mod.find_chromium():
        shots = Path(os.environ.get("MOGE_E2E_SCREENSHOTS") or tmp_path_factory.mktemp("clicks"))
        bid = mod.materialize_all(dev.url, BACKFILL_DAYS[0], BACKFILL_DAYS[-1], shots)
        if os.environ.get("MOGE_E2E_SCREENSHOTS"):
            mod.shrink_png(shots / "materialize_all.png")
        how = "clicked in Chromium"
    else:
        bid = _launch(dev, FLOW, BACKFILL_DAYS, "e2e: materialize all")
        how = "no Chromium: the UI's mutation over GraphQL"
    return _wait(dev, bid, f"materialize all, {len(BACKFILL_DAYS)} days, {how}")


def test_materialize_all_launched_the_flow_over_the_range(deployments, backfill):
    got = deployments.backfill.gql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) {
        ... on PartitionBackfill { isAssetBackfill assetSelection { path } tags { key value }
        assetBackfillData { rootTargetedPartitions { partitionKeys ranges { start end } } } } } }""",
                                   {"id": backfill["id"]})["partitionBackfillOrError"]
    assert got["isAssetBackfill"] and sorted(a["path"][-1] for a in got["assetSelection"]) == sorted(FLOW), got
    roots = got["assetBackfillData"]["rootTargetedPartitions"]
    assert roots["ranges"] == [{"start": BACKFILL_DAYS[0], "end": BACKFILL_DAYS[-1]}] or \
        roots["partitionKeys"] == BACKFILL_DAYS, roots
    assert _tags(got).get("dagster/from_ui") == "true", got


def test_materialize_all_backfills_every_day(deployments, backfill):
    dev = deployments.backfill
    counts = {c["assetKey"]["path"][-1]: c for c in backfill["status"]["assetBackfillData"]["assetBackfillStatuses"]}
    assert set(counts) == set(FLOW)
    for a, c in counts.items():
        n = len(_days_of(a))
        assert (c["numPartitionsTargeted"], c["numPartitionsMaterialized"], c["numPartitionsFailed"]) == (n, n, 0), c
    assert backfill["status"]["status"] == "COMPLETED_SUCCESS", backfill["status"]
    runs = backfill["runs"]
    assert all(r["status"] == "SUCCESS" for r in runs), _failures(dev, runs)
    assert {r["runId"] for r in _runs(dev)} == {r["runId"] for r in runs}  # nothing else ran
    # every partition was materialized once, by one of the backfills' runs, and is in the lake
    run_ids = {r["runId"] for r in runs}
    nodes = dev.gql(LATEST_BY_PARTITION, {"keys": [{"path": [a]} for a in FLOW], "partitions": BACKFILL_DAYS})
    for n in nodes["assetNodes"]:
        a = n["assetKey"]["path"][-1]
        want = _days_of(a)
        got = {m["partition"]: m["runId"] for m in n["latestMaterializationByPartition"] if m}
        assert sorted(got) == want and set(got.values()) <= run_ids, (a, got)
        assert dev.lake_days(a) == want, a
        assert all(len(ms) == 1 for ms in _materialized(dev, a).values()), a

    # The windows reached back across the days: the graph of the last day is built from the W
    # days before it, its model trained on the T days before it.
    last = BACKFILL_DAYS[-1]
    [graph] = _materialized(dev, "bipartite_graph")[last]
    assert json.loads(graph["meta"]["window_days"]) == BACKFILL_DAYS[-1 - W:-1]
    [model] = _materialized(dev, "trained_model")[last]
    assert json.loads(model["meta"]["train_days"]) == BACKFILL_DAYS[-1 - T:-1]

    # one decision per model day, taken in date order (deployed_model[D] after [D-1])
    decisions = BundleStore(dev.root).decisions()
    assert [d["partition"] for d in decisions] == BACKFILL_MODEL_DAYS, decisions
    decided = {d: float(ms[0]["timestamp"]) for d, ms in _materialized(dev, "deployed_model").items()}
    assert sorted(decided, key=decided.get) == BACKFILL_MODEL_DAYS, decided


def test_many_days_per_run_and_model_steps_one_at_a_time(backfill):
    """The backfill policies (assets/ranges.py): a data asset's days run
    ``automation.data_days_per_run`` (10) a run, the model chain's range in one run per step
    group, so 6 days are a handful of ranged runs (one per day and stage group before: 35)."""
    runs = backfill["runs"]
    ranged = [r for r in runs if not r["partition"]]
    assert ranged and len(runs) <= 6, [(r["partition"], r["assets"]) for r in runs]
    logs = [r for r in runs if "interaction_logs" in r["assets"]]
    assert len(logs) == 1 and _tags(logs[0])["dagster/asset_partition_range_start"] == BACKFILL_DAYS[0]
    # The pool "model" (limit 1): no two model steps overlap, whichever runs they are in.
    model_steps = [(s["startTime"], s["endTime"]) for r in runs for s in r["stepStats"]
                   if s["stepKey"] in MODEL_ASSETS and s["startTime"] and s["endTime"]]
    assert len(model_steps) == len(MODEL_ASSETS)  # each model asset: one step over its days
    assert _max_overlap(model_steps) == 1, sorted(model_steps)


def test_materialize_all_alone_targets_the_first_days_graphs(deployments, backfill):
    """The range's first day with graphs (the source's second day) is in the backfill's target:
    the samples and models that read it did not fail (they did when derived data started on the
    source's first day, whose graphs no log day of the range leads to)."""
    dev = deployments.backfill
    got = dev.gql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
        partitionsTargetedForAssetKey(assetKey: {path: ["bipartite_graph"]}) { partitionKeys ranges { start end } } } } }""",
                  {"id": backfill["id"]})["partitionBackfillOrError"]["partitionsTargetedForAssetKey"]
    keys = got["partitionKeys"] or [r["start"] for r in got["ranges"] or []]
    assert BACKFILL_DATA_DAYS[0] in keys or any(r["start"] <= BACKFILL_DATA_DAYS[0] for r in got["ranges"] or []), got


def test_ui_screenshots(deployments, backfill, tmp_path):
    """The UI renders the lineage (a real browser, the page's own JS and GraphQL calls); with
    MOGE_E2E_SCREENSHOTS=<dir>, also trained_model's partitions and the backfill's page."""
    _screenshots(deployments.backfill, ["lineage", "partitions", "backfill"], ["lineage"], tmp_path)


# -- 2. turning the automation on over an empty lake -------------------------------------------------


def horizon(today: date | None = None) -> dict[str, list[str]]:
    """What the automation must bring into being on ``today`` (default: now): the newest CATCH_UP
    decisions (up to yesterday) and the samples, graphs, features and logs they read."""
    last = (today or utc_today()) - timedelta(days=1)
    model = days(last - timedelta(days=CATCH_UP - 1), CATCH_UP)
    data = days(last - timedelta(days=CATCH_UP + T - 1), CATCH_UP + T)
    logs = days(last - timedelta(days=CATCH_UP + T + W - 1), CATCH_UP + T + W)
    return {a: model if a in MODEL_ASSETS else logs if a == "interaction_logs" else data for a in FLOW}


@pytest.fixture(scope="module")
def catch_up(deployments, tmp_path_factory):
    """Wait for yesterday's decision and for the flow to settle, then for one more tick; take the
    automation page's screenshot while the sensor is on; turn it off (the UI's toggle)."""
    dev, t0 = deployments.automation, deployments.sensor_on_at
    deadline = t0 + CATCH_UP_TIMEOUT
    decided_after = None
    while time.monotonic() < deadline:
        want = horizon()
        runs = _runs(dev)
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"{_failures(dev, failed)}\n{_ticks_summary(_ticks(dev), 0)}\n{dev.log_tail()}"
        if decided_after is None and want["deployed_model"][-1] in dev.lake_days("deployed_model"):
            decided_after = time.monotonic() - t0
        backfills = dev.gql(BACKFILLS)["partitionBackfillsOrError"]["results"]
        busy = [r for r in runs if r["status"] not in TERMINAL] + [b for b in backfills if b["status"] == "REQUESTED"]
        # done: the whole horizon is in the lake and nothing runs or waits
        if all(set(want[a]) <= set(dev.lake_days(a)) for a in FLOW) and not busy:
            break
        time.sleep(3)
    settled_after, settled = time.monotonic() - t0, time.time()
    ticks = _ticks(dev)
    since = ticks[0]["timestamp"] if ticks else 0
    assert decided_after is not None, (f"no decision for yesterday {CATCH_UP_TIMEOUT}s after the sensor was turned on:\n"
                                       f"{_ticks_summary(ticks, since)}\n{dev.log_tail()}")
    # one more tick after everything settled: it must request nothing (no endless re-requests)
    while time.monotonic() < deadline and not any(t["timestamp"] > settled and t["status"] != "STARTED" for t in ticks):
        time.sleep(3)
        ticks = _ticks(dev)
    print(f"\ncatch-up: yesterday's decision {decided_after:.0f}s after the sensor was turned on, everything settled "
          f"after {settled_after:.0f}s; ticks:\n{_ticks_summary(ticks, since)}")
    try:
        _screenshots(dev, ["automation"], ["automation"], tmp_path_factory.mktemp("shots"),
                     {"automation": ["materializations requested"]})
    finally:
        state = dev.gql(SENSOR_QUERY, {"sel": SENSOR})["sensorOrError"]["sensorState"]
        stopped = dev.gql(STOP_SENSOR, {"id": state["id"]})["stopSensor"]
    # the UTC days the catch-up ran on: when it crossed midnight, the automation rightly caught up the new day too
    spanned = sorted({deployments.sensor_on_day, utc_today()})
    want = {a: sorted({d for day in spanned for d in horizon(day)[a]}) for a in FLOW}
    return {"ticks": ticks, "stopped": stopped, "settled": settled, "runs": _runs(dev), "want": want,
            "yesterdays": [(d - timedelta(days=1)).isoformat() for d in spanned],
            "backfills": dev.gql(BACKFILLS)["partitionBackfillsOrError"]["results"]}


def test_the_automation_catches_up_to_yesterday_and_nothing_older(deployments, catch_up):
    dev = deployments.automation
    runs = catch_up["runs"]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), _failures(dev, runs)
    want = catch_up["want"]
    for a in FLOW:
        assert dev.lake_days(a) == want[a], (a, dev.lake_days(a), want[a])
        assert sorted(_materialized(dev, a)) == want[a], a
        assert all(len(ms) == 1 for ms in _materialized(dev, a).values()), a  # each once
    # decisions in date order, ending with yesterday's
    assert [d["partition"] for d in BundleStore(dev.root).decisions()] == want["deployed_model"]
    # in a bounded number of runs (the backfill policies): the logs and the derived data in chunks
    # of automation.data_days_per_run (10) days, the model chain in two (trained_model with
    # model_evaluation, then the self-dependent deployed_model), not one per day and asset group
    work = [r for r in runs if set(r["assets"]) - {"source_logs"}]
    per_run = 10
    bound = -(-len(want["interaction_logs"]) // per_run) + -(-len(want["training_samples"]) // per_run) + 2
    assert len(work) <= bound + 1, [(r["partition"], _tags(r).get("dagster/asset_partition_range_start"), r["assets"])
                                    for r in work]


def test_the_ticks_observed_then_requested_the_horizon_then_nothing(catch_up):
    ticks = catch_up["ticks"]
    assert not [t for t in ticks if t["status"] == "FAILURE"], [t["error"] for t in ticks if t["error"]]
    requested = [t for t in ticks if t["requestedAssetMaterializationCount"]]
    # the first tick observes the source (one run: the newest partition reports every recent day)
    assert _requested(requested[0]) in [{"source_logs": [y]} for y in catch_up["yesterdays"]], requested[0]
    got: dict[str, set[str]] = {}
    for t in requested[1:]:
        for a, keys in _requested(t).items():
            if a == "source_logs":
                continue  # observed again on automation.observe_cron
            assert not got.get(a, set()) & set(keys), (a, keys)  # nothing requested twice
            got.setdefault(a, set()).update(keys)
    want = catch_up["want"]
    assert {a: sorted(got.get(a, ())) for a in FLOW} == want
    # several days' logs in one tick: they ran in parallel, not one day after another
    assert max(len(_requested(t).get("interaction_logs", [])) for t in requested) > 1
    # the ticks after everything settled requested nothing (but, on automation.observe_cron, an observation)
    last = [t for t in ticks if t["timestamp"] > catch_up["settled"]]
    assert last and not any(set(_requested(t)) - {"source_logs"} for t in last), last
    # what several partitions a tick requested ran as one asset backfill per tick, all successful
    backfills = catch_up["backfills"]
    assert backfills and all(b["status"] == "COMPLETED_SUCCESS" for b in backfills), backfills
    assert all(_tags(b)["dagster/sensor_name"] == "daily_automation" for b in backfills), backfills


def test_the_sensor_is_turned_off_again(deployments, catch_up):
    assert catch_up["stopped"]["__typename"] == "StopSensorMutationResult", catch_up["stopped"]
    state = deployments.automation.gql(SENSOR_QUERY, {"sel": SENSOR})["sensorOrError"]["sensorState"]
    assert state["status"] == "STOPPED"
