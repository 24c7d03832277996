"""Screenshots of a running Dagster UI with headless Chromium (used by the e2e test and to refresh
docs/ui/*.png).

    python scripts/screenshot_ui.py --base http://127.0.0.1:3000 --out docs/ui
    python scripts/screenshot_ui.py --find      # which Chromium would be used (exit 1: none)
    python scripts/screenshot_ui.py --materialize-all 2026-01-01 2026-01-08   # click it, as a user does

Drives Chromium over the DevTools protocol (``websockets`` comes with dagster-webserver's
uvicorn[standard]) so a page is captured once its content is rendered (the texts we expect are on
the page), not after a fixed delay; without ``websockets`` it falls back to
``chromium --screenshot --virtual-time-budget``. Loopback only: the browser runs with every
background-networking feature off (the sandbox has no network and would hang otherwise).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Shot:
    """One page: where to go, the texts that prove it rendered, an optional keyboard shortcut
    (Dagster's asset graph expands every group on Alt+E) and the texts that prove it took effect."""

    name: str
    path: str
    wait_texts: list[str] = field(default_factory=list)
    alt_key: str | None = None
    then_texts: list[str] = field(default_factory=list)


# The pages of docs/ui: the asset lineage of the daily flow (its five groups, expanded; the on-demand
# comparison filtered out),
# trained_model's partitions (filtered to the materialized ones, the newest selected, its metadata
# shown), the newest backfill (what each asset's partitions became) and the automation sensor.
# ``{model_day}`` and ``{backfill}`` are filled in from the running instance (:func:`default_shots`).
DEFAULT_SHOTS = [
    Shot("lineage", "/asset-groups~not%20group%3A%22comparison%22/", ["Global asset lineage", "ingest", "model"],
         alt_key="e",
         then_texts=["source_logs", "interaction_logs", "bipartite_graph", "node_features", "training_samples",
                     "trained_model", "model_evaluation", "deployed_model"]),
    Shot("partitions", "/assets/trained_model?view=partitions&partition={model_day}&status=MATERIALIZED",
         ["Partitions", "{model_day}", "Materialized", "train_days"]),
    Shot("backfill", "/runs/b/{backfill}", ["{backfill}", "Partition selection", "deployed_model", "interaction_logs"]),
    # its requesting ticks ("Requested" filter)
    Shot("automation", "/locations/moge/sensors/daily_automation?status=success", ["daily_automation", "Frequency"]),
]


def _gql(base: str, query: str) -> dict:
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["data"]


def default_shots(base: str) -> list[Shot]:
    """:data:`DEFAULT_SHOTS` for the instance at ``base``: ``{model_day}`` is trained_model's newest
    materialized partition, ``{backfill}`` the newest backfill; a shot whose value the instance
    does not have (nothing materialized, no backfill yet) is left out, with a note on stderr."""
    base = base.rstrip("/")
    mats = _gql(base, '{ assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset { '
                      "assetMaterializations { partition } } } }")["assetOrError"]
    backfills = _gql(base, "{ partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id } } } }")
    values = {"model_day": max((m["partition"] for m in (mats or {}).get("assetMaterializations", [])
                                if m["partition"]), default=None),
              "backfill": next((b["id"] for b in backfills["partitionBackfillsOrError"].get("results", [])), None)}
    out = []
    for shot in DEFAULT_SHOTS:
        needs = [k for k in values if "{" + k + "}" in shot.path]
        missing = [k for k in needs if values[k] is None]
        if missing:
            print(f"{shot.name}: left out (the instance has no {', '.join(missing)})", file=sys.stderr)
            continue
        out.append(Shot(shot.name, shot.path.format(**values), [t.format(**values) for t in shot.wait_texts],
                        shot.alt_key, list(shot.then_texts)))
    return out


def dismiss_community_modal(base: str) -> None:
    """The UI opens a 'Join the Dagster community' dialog on loopback origins until the instance
    records it as seen: record it (a GraphQL mutation) so it does not cover the screenshots."""
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": "mutation { setNuxSeen }"}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


class _Cdp:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})


def _start_browser(chromium: str, profile: str, width: int, height: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
                             "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    port_file = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before opening its DevTools port")
        time.sleep(0.2)
    _stop(proc)
    raise TimeoutError("chromium did not open its DevTools port within 60s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _page_text(cdp: _Cdp) -> str:
    r = cdp.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)
    return r.get("result", {}).get("value") or ""


def _wait_for(cdp: _Cdp, shot: Shot, texts: list[str], timeout: float, out_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        text = _page_text(cdp)
        missing = [t for t in texts if t not in text]
        if not missing:
            return
        if time.monotonic() > deadline:
            debug = out_dir / f"{shot.name}.timeout.png"
            debug.write_bytes(base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"]))
            raise TimeoutError(f"{shot.name}: {shot.path} did not show {missing} within {timeout}s (page as it was: {debug})")
        time.sleep(0.5)


def _press_until(cdp: _Cdp, shot: Shot, timeout: float, out_dir: Path) -> None:
    """Press Alt+<key> until ``then_texts`` show (the shortcut is ignored until the page's
    handlers are mounted; a press is repeated only after 10s without effect, as it toggles)."""
    key = shot.alt_key.lower()
    ev = dict(modifiers=1, key=key, code=f"Key{key.upper()}", windowsVirtualKeyCode=ord(key.upper()))
    deadline = time.monotonic() + timeout
    while True:
        cdp.call("Input.dispatchKeyEvent", type="keyDown", **ev)
        cdp.call("Input.dispatchKeyEvent", type="keyUp", **ev)
        try:
            _wait_for(cdp, shot, shot.then_texts, min(10, max(deadline - time.monotonic(), 1)), out_dir)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


@contextmanager
def _browser_page(chromium: str, width: int, height: int) -> Iterator[_Cdp]:
    """A headless Chromium page, driven over the DevTools protocol."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc, port = _start_browser(chromium, profile, width, height)
        try:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
            page = next(t for t in targets if t.get("type") == "page")
            from websockets.sync.client import connect

            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
                cdp = _Cdp(ws)
                cdp.call("Page.enable")
                cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                         mobile=False)
                yield cdp
        finally:
            _stop(proc)


def _capture_cdp(chromium: str, base: str, shots: list[Shot], out_dir: Path, width: int, height: int,
                 timeout: float) -> dict[str, Path]:
    written = {}
    with _browser_page(chromium, width, height) as cdp:
        for shot in shots:
            cdp.call("Page.navigate", url=base + shot.path)
            _wait_for(cdp, shot, shot.wait_texts, timeout, out_dir)
            if shot.alt_key:
                _press_until(cdp, shot, timeout, out_dir)
            time.sleep(3)  # let layout and the zoom-to-fit animation settle
            path = out_dir / f"{shot.name}.png"
            path.write_bytes(base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"]))
            written[shot.name] = path
    return written


#: The lineage page filtered to the daily flow (the on-demand comparison left out).
FLOW_SELECTION = 'not group:"comparison"'


def _evaluate(cdp: _Cdp, expression: str):
    return cdp.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")


def _click(cdp: _Cdp, label: str, shot: Shot, timeout: float, out_dir: Path, within: str = "document") -> str:
    """Click the first enabled button whose text starts with ``label`` (inside ``within``, a JS
    expression), once it exists; returns its text."""
    js = (f"(() => {{ const b = [...{within}.querySelectorAll('button')].find(b => !b.disabled && "
          f"b.innerText.trim().startsWith({json.dumps(label)})); if (!b) return null; b.click(); "
          f"return b.innerText.trim(); }})()")
    deadline = time.monotonic() + timeout
    while (text := _evaluate(cdp, js)) is None:
        if time.monotonic() > deadline:
            debug = out_dir / f"{shot.name}.timeout.png"
            debug.write_bytes(base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"]))
            raise TimeoutError(f"{shot.name}: no enabled button {label!r} within {timeout}s (page as it was: {debug})")
        time.sleep(0.5)
    return text


def materialize_all(base: str, first: str, last: str, out_dir: str | Path, selection: str = FLOW_SELECTION, *,
                    width: int = 1600, height: int = 1000, timeout: float = 90, chromium: str | None = None) -> str:
    """Launch "Materialize all" over the days ``first`` .. ``last`` the way a user does it on the
    lineage page: the graph filtered to ``selection``, "Materialize all (N)…", the range typed
    into the anchor asset's partition input ("[first...last]"), "Launch backfill". Writes the
    dialog as it was launched to ``out_dir``/materialize_all.png; returns the backfill's id (from
    the link of the "Created backfill" toast)."""
    chromium, out_dir, base = _session(base, out_dir, chromium)
    shot = Shot("materialize_all", f"/asset-groups~{urllib.parse.quote(selection, safe='')}/", ["Materialize all ("])
    dialog = "document.querySelector('[role=dialog]')"
    with _browser_page(chromium, width, height) as cdp:
        cdp.call("Page.navigate", url=base + shot.path)
        _wait_for(cdp, shot, shot.wait_texts, timeout, out_dir)
        _click(cdp, "Materialize all (", shot, timeout, out_dir)
        # the dialog, once it shows the anchor asset's partitions (their health loaded)
        _wait_for(cdp, shot, ["Launch runs to materialize", "Partition selection", "Launch backfill", "Showing "],
                  timeout, out_dir)
        # older days than the dialog's default window (Dagster shows the last 90 days: "Showing the
        # last 90 days ... Show all partitions"): widen it, as a user must for older history
        widened = _evaluate(cdp, f"(() => {{ const e = [...{dialog}.querySelectorAll('a,button,span')]"
                                 ".find(e => e.innerText && e.innerText.trim() === 'Show all partitions'); "
                                 "if (!e) return false; e.click(); return true; })()")
        if widened:
            time.sleep(2)
        # the anchor asset's partition input: type the range, Enter commits it. The input is reset
        # while the dialog still loads, so type again until the range holds and the launch is enabled.
        typed = f"[{first}...{last}]"
        check = (f"(() => {{ const i = [...{dialog}.querySelectorAll('input')].find(i => i.type === 'text'); "
                 f"const b = [...{dialog}.querySelectorAll('button')].find(b => b.innerText.trim() === 'Launch backfill'); "
                 f"return !!i && i.value === {json.dumps(typed)} && !!b && !b.disabled; }})()")
        deadline = time.monotonic() + timeout
        while True:
            _evaluate(cdp, f"(() => {{ const i = [...{dialog}.querySelectorAll('input')].find(i => i.type === 'text'); "
                           "i.focus(); i.select(); return true; })()")
            cdp.call("Input.insertText", text=typed)
            for kind in ("keyDown", "keyUp"):
                cdp.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
            time.sleep(2)
            if _evaluate(cdp, check):
                break
            if time.monotonic() > deadline:
                _wait_for(cdp, shot, [f"{typed} was not accepted"], 0, out_dir)  # raises, with the page's screenshot
        (out_dir / "materialize_all.png").write_bytes(
            base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"]))
        _click(cdp, "Launch backfill", shot, timeout, out_dir, within=dialog)
        _wait_for(cdp, shot, ["Created backfill"], timeout, out_dir)
        href = None
        deadline = time.monotonic() + timeout
        while not href and time.monotonic() < deadline:
            href = _evaluate(cdp, "(() => { const a = [...document.querySelectorAll('a')]"
                                  ".find(a => a.href.includes('/runs/b/')); return a ? a.href : null; })()")
            time.sleep(0.5)
    if not href:
        raise TimeoutError(f"no link to the launched backfill within {timeout}s")
    return href.rstrip("/").split("/runs/b/")[1].split("?")[0]


def _capture_cli(chromium: str, base: str, shots: list[Shot], out_dir: Path, width: int, height: int,
                 timeout: float) -> dict[str, Path]:
    written = {}
    for shot in shots:
        path = out_dir / f"{shot.name}.png"
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}",
                            f"--window-size={width},{height}", "--virtual-time-budget=15000", base + shot.path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout + 60, check=True)
        written[shot.name] = path
    return written


def shrink_png(path: Path, colors: int = 64) -> None:
    """Re-encode a UI screenshot with a small palette (flat UI colours survive; ~3x smaller)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def _session(base: str, out_dir: str | Path, chromium: str | None) -> tuple[str, Path, str]:
    """(chromium binary, created output folder, base URL without a trailing /), the UI's
    first-visit modal dismissed."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError("no chromium binary found")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = base.rstrip("/")
    dismiss_community_modal(base)
    return chromium, out_dir, base


def capture(base: str, out_dir: str | Path, shots: list[Shot] | None = None, *, width: int = 1600,
            height: int = 1000, timeout: float = 90, chromium: str | None = None,
            small: bool = False) -> dict[str, Path]:
    """Screenshot ``shots`` (default: :func:`default_shots`) of the UI at ``base`` into
    ``out_dir``/<name>.png (palette-compressed when ``small``); returns the written paths."""
    chromium, out_dir, base = _session(base, out_dir, chromium)
    shots = shots if shots is not None else default_shots(base)
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        written = _capture_cli(chromium, base, shots, out_dir, width, height, timeout)
    else:
        written = _capture_cdp(chromium, base, shots, out_dir, width, height, timeout)
    if small:
        for path in written.values():
            shrink_png(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:3000", help="UI address (loopback)")
    ap.add_argument("--out", default="docs/ui", help="output directory")
    ap.add_argument("--only", nargs="*", help="names of the shots to take (lineage, partitions, backfill, automation)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--find", action="store_true", help="print the Chromium found (exit 1 when none) and stop")
    ap.add_argument("--materialize-all", nargs=2, metavar=("FIRST", "LAST"),
                    help="launch 'Materialize all' over these days on the lineage page (the daily flow), print "
                    "the backfill's id, then take the screenshots")
    args = ap.parse_args(argv)
    if args.find:
        found = find_chromium()
        print(found or "no chromium found")
        return 0 if found else 1
    if args.materialize_all:
        backfill = materialize_all(args.base, *args.materialize_all, args.out)
        print(f"launched backfill {backfill}: {args.base.rstrip('/')}/runs/b/{backfill}")
    shots = [s for s in default_shots(args.base) if not args.only or s.name in args.only]
    for name, path in capture(args.base, args.out, shots, width=args.width, height=args.height, small=True).items():
        print(f"{name}: {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
