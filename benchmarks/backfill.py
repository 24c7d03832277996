"""Backfill benchmark: a 30-day asset backfill launched as a user launches it, against the same
days run one after another by the run command, and the run command's range mode.

    python benchmarks/backfill.py                          # 30 days of the synthetic `small` preset
    python benchmarks/backfill.py --days 10 --max-steps 20 # a quicker look
    python benchmarks/backfill.py --sides all              # the CLI range command too
    python benchmarks/backfill.py --sides range --days 365 --data-only   # a year of data assets

Both sides get the same temp pipeline config (``[source] kind = "synthetic"``, preset ``small``,
``start_date`` .. ``end_date`` = the benchmarked days, the demo's windows and model with a small
training budget, ``--max-steps`` optimiser steps per model day) on their own lake and their own
``$DAGSTER_HOME`` (the project's ``orchestration/dagster.yaml`` installed into it, as ``make dev``
and ``make run`` do). They run one after the other, in the same invocation:

1. ``backfill`` (the candidate): ``dagster dev -w workspace.yaml`` is started (its start-up is timed
   apart, not counted: a user's UI is already up), then ``launchPartitionBackfill`` is sent to its
   GraphQL API as the UI's launch dialog sends it: every asset of the daily flow, "all partitions"
   (the config's ``end_date`` bounds them to the benchmarked days; each asset's own partitions
   definition says which of them it has). Timed from the launch until the backfill is done.
2. ``serial`` (the named baseline): ``python -m orchestration.run_flow --start S --days N``, which
   runs each day's ``daily_data`` and ``daily_model`` jobs in process, one day after another.
   Timed from the command's start to its exit (its imports included).
3. ``range`` (``--sides all`` or ``range``): the CLI range command, ``python -m
   orchestration.run_flow --start S --days N --range``: each job over the range in process
   (``automation.data_days_per_run`` / ``model_days_per_run`` days a run), no daemon. Timed as
   ``serial``.

``--sides catchup`` is the automation's catch-up after a week away (issue 23): the lake holds the
flow up to ``--away-days`` days before yesterday, the source (open-ended, from ``--days`` days
ago) reaches yesterday; the automation is turned on in ``dagster dev`` and timed until yesterday's
decision (target 3 minutes), with the runs it made::

    python benchmarks/backfill.py --sides catchup --days 20 --max-steps 200   # the demo's budget
    python benchmarks/backfill.py --sides catchup --days 20 --max-steps 200 --catchup-by range  # its floor

``--data-only`` benchmarks the data assets alone (logs, graphs, features, samples: the issue's
365-day history backfill): the backfill selects them only, the run commands get ``--data-only``.

Checked after every side: every run succeeded; each side materialized exactly the partitions the
definitions give each asset (in the instance and in the lake), the same on every side; every
model day has its deployment decision, and whether the sides took the same decisions
(promoted or not, and the promoted version's content hash) is reported. Reported: wall time of
each side and the ratios serial / backfill and serial / range (the target is >= 1.0, issue 23;
issue 12's was 1.5 with one run per day), runs, the time between consecutive model days'
decisions, the most runs in
progress at once, how long runs waited between creation and start, the share of the machine's
CPU that was busy during each side (every process on the machine, other users' too: a loaded
machine makes both sides slower) and the load average. Saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repo's packages
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
TARGET = 1.0  # serial / candidate wall time a candidate (backfill, range) should reach (issue 23)
CATCH_UP_TARGET_S = 180.0  # turning the automation on -> yesterday's decision (issue 23)
#: The sides a --sides value runs, in order; the first is the baseline when there are several.
SIDES = {"both": ["backfill", "serial"], "all": ["backfill", "serial", "range"], "backfill": ["backfill"],
         "serial": ["serial"], "range": ["range"], "catchup": ["catchup"]}
#: The model chain: left out with --data-only.
MODEL_ASSETS = ("trained_model", "model_evaluation", "deployed_model")
#: The candidates compared with the baseline (``serial``).
CANDIDATES = ("backfill", "range")
LAUNCH = """
mutation($p: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $p) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } ... on Error { message }
  }
}"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { status numPartitions error { message } } ... on PythonError { message } } }"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", default="2026-01-01", help="first source day (default: 2026-01-01)")
    ap.add_argument("--days", type=int, default=30, help="days of source data, all backfilled (default: 30)")
    ap.add_argument("--window-days", type=int, default=7, help="graph.window_days (default: 7, the demo's)")
    ap.add_argument("--train-days", type=int, default=3, help="train.train_days (default: 3, the demo's)")
    ap.add_argument("--max-steps", type=int, default=50,
                    help="train.max_steps_per_epoch, one epoch a day (default: 50; the demo's is 200)")
    ap.add_argument("--sides", choices=tuple(SIDES), default="both",
                    help="both = backfill and serial; all = also the run command's --range; or one side only "
                    "(no ratio then; default: both)")
    ap.add_argument("--away-days", type=int, default=7,
                    help="catchup: days since the lake's last day (the week away; automation.catch_up_days)")
    ap.add_argument("--catchup-by", choices=("automation", "range"), default="automation",
                    help="catchup: the automation in dagster dev (default), or the CLI range command over the same "
                    "days with no daemon (the floor the same work sets: what no orchestration can beat)")
    ap.add_argument("--data-only", action="store_true",
                    help="the data assets alone (logs .. samples): no model day is trained, evaluated or decided")
    ap.add_argument("--concurrently", action="store_true",
                    help="run both sides at the same time, so both see the same machine load (default: one after "
                    "the other; each side then has the machine to itself, other users aside)")
    ap.add_argument("--timeout-s", type=float, default=4 * 3600,
                    help="stop waiting for the backfill after this long and report it unfinished (default: 4 h)")
    ap.add_argument("--work-dir", help="where the two instances and lakes go (default: a new temp dir, kept)")
    ap.add_argument("--out", help="results JSON (default: benchmarks/results/backfill_synthetic_small_<N>d_<date>.json)")
    ap.add_argument("--label", default="", help="appended to the default output name (e.g. 'before')")
    args = ap.parse_args(argv)
    if args.days <= args.train_days + 1:  # derived data start on the 2nd day, models T days later
        ap.error(f"--days {args.days} leaves no model day: it must exceed --train-days {args.train_days} + 1")
    if args.max_steps < 1:
        ap.error(f"--max-steps must be >= 1, got {args.max_steps}")
    date.fromisoformat(args.start)  # a bad date fails here, naming it
    return args


def last_day(args: argparse.Namespace) -> str:
    return (date.fromisoformat(args.start) + timedelta(days=args.days - 1)).isoformat()


def catch_up_start(args: argparse.Namespace) -> str:
    """catchup: the source's first day, ``--days`` before today (UTC, the synthetic source's zone)."""
    return (datetime.now(UTC).date() - timedelta(days=args.days)).isoformat()


def config_text(args: argparse.Namespace, root: Path) -> str:
    """The pipeline TOML of one side: the synthetic `small` source over the benchmarked days, the
    demo's model and windows (data/pipeline.toml) with ``--max-steps``, the lake at ``root``.
    catchup: the source from ``--days`` before today, open-ended (it grows every day, as a live
    log does), and ``automation.catch_up_days = --away-days``."""
    if args.sides == "catchup":
        source = f'start_date = "{catch_up_start(args)}"\n\n[automation]\ncatch_up_days = {args.away_days}\n\n'
    else:
        source = f'start_date = "{args.start}"\nend_date = "{last_day(args)}"\n\n'
    return (f'[source]\nkind = "synthetic"\npreset = "small"\nseed = 7\n{source}'
            f"[graph]\nwindow_days = {args.window_days}\n\n"
            f'[train]\nmodel = "moge"\ntrain_days = {args.train_days}\nepochs = 1\n'
            f'max_steps_per_epoch = {args.max_steps}\nbatch_size = 256\nvalidation = "none"\n\n'
            f'[storage]\nroot = "{root}"\n')


@dataclass
class Side:
    """One side's directories and environment: its own instance, config, lake and temp dir."""

    name: str
    base: Path

    @property
    def home(self) -> Path:
        return self.base / "dagster_home"

    @property
    def root(self) -> Path:
        return self.base / "data"

    @property
    def config(self) -> Path:
        return self.base / "pipeline.toml"

    def prepare(self, args: argparse.Namespace) -> dict:
        """Create the directories, write the config, install the instance settings; the env."""
        from orchestration.instance_setup import sync_instance_yaml

        for d in (self.home, self.root, self.base / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config_text(args, self.root))
        sync_instance_yaml(self.home)
        return {**os.environ, "DAGSTER_HOME": str(self.home), "MOGE_CONFIG": str(self.config),
                "TMPDIR": str(self.base / "tmp"), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def expected_partitions(config: Path) -> dict[str, list[str]]:
    """Each flow asset's partition keys, from the Definitions loaded with ``config`` (in a
    subprocess: the partitions are fixed when the code location is imported)."""
    code = ("import json, dagster as dg\nfrom orchestration.definitions import FLOW_ASSETS\n"
            "out = {k.to_user_string(): list(a.specs_by_key[k].partitions_def.get_partition_keys())\n"
            "       for a in FLOW_ASSETS if isinstance(a, dg.AssetsDefinition) and a.is_materializable for k in a.keys}\n"
            "print(json.dumps(out))")
    env = {**os.environ, "MOGE_CONFIG": str(config)}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"loading the Definitions with {config} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


class CpuMeter:
    """The share of the whole machine's CPU time that was busy between start() and stop()
    (/proc/stat, every process: other users' load included), and the 1-min load average."""

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def start(self) -> CpuMeter:
        self.t0 = self._read()
        self.load0 = os.getloadavg()[0]
        return self

    def stop(self) -> dict:
        busy, total = (b - a for a, b in zip(self.t0, self._read()))
        return {"machine_busy_share": round(busy / max(total, 1), 3), "cpus": os.cpu_count(),
                "loadavg_1min_start": round(self.load0, 2), "loadavg_1min_end": round(os.getloadavg()[0], 2)}


def process_cpu(root: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``root``'s process tree, by kind of process (dagster dev's
    webserver, daemon, code server, ...): each live process's own time plus what its ended
    children used (a run worker's time is its launcher's once it has exited)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        words = [a.decode(errors="replace") for a in args if a]
        kind = " ".join([Path(words[0]).name] + [w for w in words[1:] if "/" not in w][:3]) if words else "?"
        out[kind] = round(out.get(kind, 0.0) + sum(int(x) for x in f[11:15]) / tick, 1)
        todo += [int(c) for c in children]
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 1) for k, v in sorted(after.items(), key=lambda kv: -kv[1])}


def run_records(home: Path) -> list[dict]:
    """Every run of the instance at ``home``: status, partition, assets, created/started/ended."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        out = []
        for r in instance.get_run_records():
            out.append({"run_id": r.dagster_run.run_id, "status": r.dagster_run.status.value,
                        "partition": r.dagster_run.tags.get("dagster/partition"),
                        "partition_range": [r.dagster_run.tags.get("dagster/asset_partition_range_start"),
                                            r.dagster_run.tags.get("dagster/asset_partition_range_end")],
                        "job": r.dagster_run.job_name,
                        "assets": sorted(k.to_user_string() for k in r.dagster_run.asset_selection or ()),
                        "created": r.create_timestamp.timestamp(), "started": r.start_time, "ended": r.end_time,
                        "steps": {s.step_key: [s.start_time, s.end_time]
                                  for s in instance.get_run_step_stats(r.dagster_run.run_id)}})
        return sorted(out, key=lambda r: r["created"])


def materialized(home: Path, assets: list[str]) -> dict[str, list[str]]:
    """Each asset's materialized partitions, as the instance at ``home`` records them."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return {a: sorted(instance.get_materialized_partitions(dg.AssetKey.from_user_string(a))) for a in assets}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals in progress at one instant (an end before a start at the same time)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def run_summary(runs: list[dict]) -> dict:
    done = [r for r in runs if r["started"] and r["ended"]]
    waits = [r["started"] - r["created"] for r in done]
    return {"runs": len(runs), "succeeded": sum(r["status"] == "SUCCESS" for r in runs),
            "most_in_progress": max_overlap([(r["started"], r["ended"]) for r in done]) if done else 0,
            "run_seconds_sum": round(sum(r["ended"] - r["started"] for r in done), 1),
            "created_to_started_mean_s": round(sum(waits) / len(waits), 1) if waits else None,
            "created_to_started_max_s": round(max(waits), 1) if waits else None}


def model_chain(runs: list[dict], model_days: list[str]) -> dict:
    """Where the time between day D-1's decision and day D's training went, when they are in
    different runs: waiting for day D's run to be created (the backfill daemon's tick; for the
    run command, day D's data run), then for it to start (queue, launch, the run worker's
    imports), then for its training step. All of it is on the critical path: day D's model and
    decision wait for day D-1's."""
    steps = {}  # (step, day) -> (start, end, run)
    for r in runs:
        for key, (start, end) in r["steps"].items():
            steps[(key, r["partition"])] = (start, end, r)
    gaps: dict[str, list[float]] = {"tick_wait_s": [], "launch_s": [], "to_first_step_s": []}
    for prev, day in zip(model_days, model_days[1:]):
        decided, train = steps.get(("deployed_model", prev)), steps.get(("trained_model", day))
        if not decided or not train or train[2] is decided[2] or not train[2]["started"] \
                or train[2]["created"] < decided[0]:
            continue  # missing, in the same run, never started, or not waiting for D-1's decision
            # (an asset backfill trains days ahead of the decisions: its chain is trained_model's own)
        done, run = decided[1], train[2]
        gaps["tick_wait_s"].append(max(0.0, run["created"] - done))
        gaps["launch_s"].append(run["started"] - max(run["created"], done))
        gaps["to_first_step_s"].append(train[0] - run["started"])
    return {k: {"mean": round(sum(v) / len(v), 1), "sum": round(sum(v), 1)} for k, v in gaps.items() if v}


class Meter:
    """What a timed side used: the machine's busy share and load (:class:`CpuMeter`) and, with
    ``pid``, the CPU seconds of that process tree by kind (:func:`process_cpu`)."""

    def __init__(self, pid: int | None = None):
        self.pid, self.cpu = pid, CpuMeter().start()
        self.procs = process_cpu(pid) if pid else {}

    def stop(self) -> dict:
        out = self.cpu.stop()
        if self.pid:
            out["process_cpu_s"] = cpu_delta(self.procs, process_cpu(self.pid))
        return out


@contextlib.contextmanager
def dagster_dev(side: Side, env: dict):
    """``(dev, start-up seconds)``: dagster dev on the side's instance, stopped (its whole tree) after."""
    from tests.dagster_dev import kill_tree, start

    t0 = time.perf_counter()
    dev = start(REPO / "workspace.yaml", env, side.root, side.base / "dagster_dev.log")
    try:
        yield dev, time.perf_counter() - t0
    finally:
        kill_tree(dev.proc)


def run_flow(side: Side, env: dict, *args: str) -> int:
    """``python -m orchestration.run_flow ARGS`` on the side's instance, output to its run_flow.log."""
    with open(side.base / "run_flow.log", "wb") as out:
        return subprocess.call([sys.executable, "-m", "orchestration.run_flow", *args], cwd=REPO, env=env,
                               stdout=out, stderr=subprocess.STDOUT)


def run_backfill(side: Side, args: argparse.Namespace, assets: list[str]) -> dict:
    """dagster dev on the side's instance, the flow's asset backfill over all partitions, timed."""
    env = side.prepare(args)
    with dagster_dev(side, env) as (dev, up):
        meter = Meter(dev.proc.pid)
        t0 = time.perf_counter()
        params = {"assetSelection": [{"path": a.split("/")} for a in assets], "allPartitions": True,
                  "fromFailure": False, "tags": [{"key": "dagster/from_ui", "value": "true"}],
                  "title": f"benchmark: {args.days}-day backfill"}
        res = dev.gql(LAUNCH, {"p": params})["launchPartitionBackfill"]
        if res["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"launchPartitionBackfill: {res}")
        bid = res["backfillId"]
        while True:
            status = dev.gql(STATUS, {"id": bid})["partitionBackfillOrError"]
            if status.get("status") not in ("REQUESTED", "CANCELING", "FAILING"):
                break
            if time.perf_counter() - t0 > args.timeout_s:  # reported as unfinished: the ratio is an upper bound
                status = {**status, "status": f"UNFINISHED after --timeout-s {args.timeout_s} ({status['status']})"}
                break
            time.sleep(2)
        wall = time.perf_counter() - t0
        load = meter.stop()
    print(f"backfill: CPU seconds by process: {load['process_cpu_s']}", flush=True)
    print(f"backfill {bid}: {status['status']} in {wall:.1f}s (dagster dev up in {up:.1f}s, not counted)", flush=True)
    return {"wall_s": round(wall, 1), "status": status["status"], "error": status.get("error"), "backfill_id": bid,
            "dagster_dev_startup_s": round(up, 1), **load}


def run_command(side: Side, args: argparse.Namespace) -> dict:
    """The run command over the same days on the side's instance (``range``: with ``--range``),
    timed from start to exit."""
    env = side.prepare(args)
    extra = (["--range"] if side.name == "range" else []) + (["--data-only"] if args.data_only else [])
    meter = Meter()
    t0 = time.perf_counter()
    rc = run_flow(side, env, "--start", args.start, "--days", str(args.days), *extra)
    wall = time.perf_counter() - t0
    load = meter.stop()
    print(f"{side.name} run_flow {' '.join(extra)}: exit {rc} in {wall:.1f}s (log: {side.base / 'run_flow.log'})",
          flush=True)
    return {"wall_s": round(wall, 1), "exit_code": rc, **load}


def run_catch_up(side: Side, args: argparse.Namespace) -> dict:
    """A week away, as issue 23's catch-up scenario: the lake holds the flow up to ``--away-days``
    days before yesterday (made by the CLI range command, not timed: the state a user comes back
    to), then ``dagster dev`` is started (its start-up not counted) and the automation turned on
    (the UI's toggle, ``startSensor``). Timed from the toggle until yesterday's deployment
    decision is in the bundle store; the runs the automation made meanwhile are counted."""
    import dagster as dg

    from ml_core.registry.bundles import BundleStore
    from tests.dagster_dev import SENSOR, SENSOR_QUERY, START_SENSOR, STOP_SENSOR

    env = side.prepare(args)
    first = catch_up_start(args)
    before = args.days - args.away_days  # source days already in the lake: first .. yesterday - away
    t0 = time.perf_counter()
    rc = run_flow(side, env, "--start", first, "--days", str(before), "--range")
    if rc:
        raise RuntimeError(f"the lake before the week away: run_flow exited {rc} (log: {side.base / 'run_flow.log'})")
    print(f"catchup: lake up to {date.fromisoformat(first) + timedelta(days=before - 1)} in "
          f"{time.perf_counter() - t0:.1f}s (not counted)", flush=True)
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    store = BundleStore(side.root)
    if args.catchup_by == "range":
        return catch_up_by_range(side, env, args, first, before, yesterday, store)
    ended_badly = dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED])
    with dagster_dev(side, env) as (dev, up), dg.DagsterInstance.from_config(str(side.home)) as instance:
        meter = Meter(dev.proc.pid)
        on_at = time.time()
        t0 = time.perf_counter()
        res = dev.gql(START_SENSOR, {"sel": SENSOR})["startSensor"]
        if res["__typename"] != "Sensor":
            raise RuntimeError(f"startSensor: {res}")
        status = "decided"
        while yesterday not in [d["partition"] for d in store.decisions()]:
            failed = instance.get_run_records(ended_badly)
            if failed or time.perf_counter() - t0 > args.timeout_s:
                status = f"failed runs {[r.dagster_run.run_id[:8] for r in failed]}" if failed else "timed out"
                break
            time.sleep(1)
        wall = time.perf_counter() - t0
        load = meter.stop()
        print(f"catchup: CPU seconds by process: {load['process_cpu_s']}", flush=True)
        state = dev.gql(SENSOR_QUERY, {"sel": SENSOR})["sensorOrError"]["sensorState"]
        dev.gql(STOP_SENSOR, {"id": state["id"]})
    runs = [r for r in run_records(side.home) if r["created"] >= on_at]
    decided = [d["partition"] for d in store.decisions()]
    caught_up = [d for d in decided if d > (date.fromisoformat(yesterday) - timedelta(days=args.away_days)).isoformat()]
    print(f"catchup: {status}: yesterday's ({yesterday}) decision {wall:.1f}s after the automation was turned on "
          f"(target <= {CATCH_UP_TARGET_S:.0f}s), {len(runs)} runs; decisions of the week away: {caught_up}", flush=True)
    return {"wall_s": round(wall, 1), "status": status, "yesterday": yesterday, "target_s": CATCH_UP_TARGET_S,
            "meets_target": status == "decided" and wall <= CATCH_UP_TARGET_S, "runs_after_toggle": len(runs),
            "run_summary": run_summary(runs), "runs": runs, "decisions_caught_up": caught_up,
            "every_away_day_decided": len(caught_up) == args.away_days, "model_chain_gaps": {},
            "model_day_spacing_s": model_day_spacing(side.home), "dagster_dev_startup_s": round(up, 1), **load}


def catch_up_by_range(side: Side, env: dict, args: argparse.Namespace, first: str, before: int, yesterday: str,
                      store) -> dict:
    """The week away caught up by ``run_flow --range`` over its days (logs .. decisions, in process,
    no daemon, its imports counted): the same work as the automation's catch-up without any tick
    or run launch, so a floor for it."""
    away = (date.fromisoformat(first) + timedelta(days=before)).isoformat()
    on_at = time.time()
    t0 = time.perf_counter()
    rc = run_flow(side, env, "--start", away, "--days", str(args.away_days), "--range")
    wall = time.perf_counter() - t0
    decided = [d["partition"] for d in store.decisions()]
    status = "decided" if not rc and yesterday in decided else f"run_flow exited {rc}, yesterday decided: {yesterday in decided}"
    runs = [r for r in run_records(side.home) if r["created"] >= on_at]
    caught_up = [d for d in decided if d >= away]
    print(f"catchup by the range command: {status}: yesterday's ({yesterday}) decision in {wall:.1f}s "
          f"(target <= {CATCH_UP_TARGET_S:.0f}s), {len(runs)} runs; decisions of the week away: {caught_up}", flush=True)
    return {"wall_s": round(wall, 1), "status": status, "by": "range", "yesterday": yesterday,
            "target_s": CATCH_UP_TARGET_S, "meets_target": status == "decided" and wall <= CATCH_UP_TARGET_S,
            "runs_after_toggle": len(runs), "run_summary": run_summary(runs), "runs": runs,
            "decisions_caught_up": caught_up, "every_away_day_decided": len(caught_up) == args.away_days,
            "model_chain_gaps": {}, "model_day_spacing_s": model_day_spacing(side.home)}


def model_day_spacing(home: Path) -> dict:
    """Seconds between consecutive model days, per model asset (its materializations, in day
    order): how long each day of the chain took, waits between runs included (a ranged run's
    days follow each other in one step)."""
    import dagster as dg

    out = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in MODEL_ASSETS:
            at: dict[str, float] = {}
            for r in instance.fetch_materializations(dg.AssetKey(asset), limit=10000).records:
                at[r.partition_key] = max(at.get(r.partition_key, 0.0), r.timestamp)
            times = [at[d] for d in sorted(at)]
            gaps = [b - a for a, b in zip(times, times[1:])]
            if gaps:
                out[asset] = {"mean": round(sum(gaps) / len(gaps), 1), "max": round(max(gaps), 1)}
    return out


def check_side(side: Side, expected: dict[str, list[str]]) -> dict:
    """What a side left: its runs, materialized partitions (instance and lake) against the
    definitions', and its deployment decisions."""
    from ml_core.registry.bundles import BundleStore

    runs = run_records(side.home)
    got = materialized(side.home, list(expected))
    lake = {a: sorted(p.name.removeprefix("ds=") for p in (side.root / "lake" / a).glob("ds=*")) for a in expected}
    decisions = BundleStore(side.root).decisions()
    model_days = expected.get("deployed_model", [])
    return {"run_summary": run_summary(runs), "model_chain_gaps": model_chain(runs, model_days),
            "model_day_spacing_s": model_day_spacing(side.home), "runs": runs,
            "partitions_as_defined": got == expected, "lake_as_defined": lake == expected,
            "missing": {a: sorted(set(k) - set(got[a])) for a, k in expected.items() if set(k) - set(got[a])},
            "decision_days": [d["partition"] for d in decisions],
            "every_decision_present": [d["partition"] for d in decisions] == model_days,
            "decisions": {d["partition"]: {"promoted": d["promoted"], "version": d["version"]} for d in decisions},
            "materialized": got}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(args.work_dir or tempfile.mkdtemp(prefix="moge-backfill-bench-"))
    wanted = SIDES[args.sides]
    sides = {name: Side(name, base / name) for name in wanted}
    sides[wanted[0]].prepare(args)
    if args.sides == "catchup":
        out = {"benchmark": "catchup", "args": vars(args), "work_dir": str(base), "cpus": os.cpu_count(), "sides": {}}
        out["sides"]["catchup"] = r = run_catch_up(sides["catchup"], args)
        path = Path(args.out) if args.out else RESULTS / f"catchup_synthetic_small_{args.away_days}d_away_{time.strftime('%Y%m%d')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=str))
        print(f"results: {path}")
        return 0 if r["status"] == "decided" and r["every_away_day_decided"] else 1

    expected = expected_partitions(sides[wanted[0]].config)
    if args.data_only:
        expected = {a: k for a, k in expected.items() if a not in MODEL_ASSETS}
    print(f"{args.days} days {args.start}..{last_day(args)}, partitions per asset: "
          f"{ {a: len(k) for a, k in expected.items()} }; work dir {base}", flush=True)
    out: dict = {"benchmark": "backfill", "args": vars(args), "work_dir": str(base), "cpus": os.cpu_count(),
                 "expected_partitions": expected, "sides": {}}
    def measure(name: str) -> None:
        side = sides[name]
        timing = run_backfill(side, args, list(expected)) if name == "backfill" else run_command(side, args)
        out["sides"][name] = {**timing, **check_side(side, expected)}

    if args.concurrently:  # both at once (threads: each side's work is in its own processes)
        with ThreadPoolExecutor(len(wanted)) as pool:
            for f in [pool.submit(measure, name) for name in wanted]:
                f.result()
    else:
        for name in wanted:
            measure(name)
    report(out)
    path = Path(args.out) if args.out else RESULTS / (f"backfill_synthetic_small_{args.days}d"
                                                      f"{'_data' if args.data_only else ''}"
                                                      f"{'_' + args.label if args.label else ''}_{time.strftime('%Y%m%d')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"results: {path}")
    ok = all(s["partitions_as_defined"] and (s["every_decision_present"] or args.data_only) for s in out["sides"].values())
    return 0 if ok else 1


def report(out: dict) -> None:
    """Print the table, the checks and the ratio; add the comparison to ``out``."""
    s = out["sides"]
    print("\n| side | wall s | runs | succeeded | most at once | created->started mean/max s | machine busy | load |")
    for name, r in s.items():
        rs = r["run_summary"]
        print(f"| {name} | {r['wall_s']} | {rs['runs']} | {rs['succeeded']} | {rs['most_in_progress']} | "
              f"{rs['created_to_started_mean_s']} / {rs['created_to_started_max_s']} | "
              f"{r['machine_busy_share']:.0%} of {r['cpus']} | {r['loadavg_1min_start']}->{r['loadavg_1min_end']} |")
    for name, r in s.items():
        print(f"{name}: partitions as defined {r['partitions_as_defined']} (lake {r['lake_as_defined']}), "
              f"every decision present {r['every_decision_present']} ({len(r['decision_days'])} days)"
              + (f", missing {r['missing']}" if r["missing"] else ""))
    for name, r in s.items():
        if r["model_chain_gaps"]:
            print(f"{name}: between one model day's decision and the next day's training: "
                  + ", ".join(f"{k} mean {v['mean']} (sum {v['sum']})" for k, v in r["model_chain_gaps"].items()))
    for name, r in s.items():
        for asset, gap in r["model_day_spacing_s"].items():
            print(f"{name}: between consecutive model days of {asset}: mean {gap['mean']} s, max {gap['max']} s")
    if "serial" not in s:
        return
    ser = s["serial"]
    out["comparison"] = {}
    for name in (c for c in CANDIDATES if c in s):
        c = s[name]
        ratio = ser["wall_s"] / c["wall_s"]
        finished = c.get("status", "COMPLETED_SUCCESS") == "COMPLETED_SUCCESS" and c.get("exit_code", 0) == 0
        same_decisions = c["decisions"] == ser["decisions"]
        out["comparison"][name] = {
            "baseline": "serial (python -m orchestration.run_flow)", "ratio_serial_over_candidate": round(ratio, 3),
            "finished": finished, "ratio_is": "measured" if finished else "an upper bound (the candidate had not finished)",
            "target": TARGET, "meets_target": finished and ratio >= TARGET, "runs": c["run_summary"]["runs"],
            "baseline_runs": ser["run_summary"]["runs"], "same_partitions": c["materialized"] == ser["materialized"],
            "same_decisions": same_decisions,
            "decision_differences": {d: (c["decisions"].get(d), ser["decisions"].get(d))
                                     for d in sorted(set(c["decisions"]) | set(ser["decisions"]))
                                     if c["decisions"].get(d) != ser["decisions"].get(d)}}
        print(f"\n{name} vs serial (baseline): {'' if finished else 'at most '}{ratio:.2f}x ({ser['wall_s']}s / "
              f"{c['wall_s']}s; target >= {TARGET}x: {'met' if finished and ratio >= TARGET else 'NOT met'}); runs "
              f"{c['run_summary']['runs']} vs {ser['run_summary']['runs']}; same partitions "
              f"{out['comparison'][name]['same_partitions']}, same decisions {same_decisions}")


if __name__ == "__main__":
    sys.exit(main())
