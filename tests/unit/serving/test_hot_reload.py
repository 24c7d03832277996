"""Hot reload: a real server (uvicorn in a thread) watching the production pointer picks up two
promotions by itself while clients keep sending requests; no request fails, every response names
the version that served it, and versions only move forward. A version that fails to load leaves
the old one serving and is counted as a failed reload."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from ml_core.registry.bundles import BundleStore, read_manifest, write_manifest
from ml_core.serving.metrics import Metrics
from ml_core.serving.state import ModelHolder, ServeOptions
from ml_core.storage import INTEGRITY_FILE, VERSION_FILE

WATCH_S = 0.05


def publish_copy(store: BundleStore, version: str, new_version: str) -> None:
    """Publish the bundle of ``version`` again as ``new_version`` (a promotion needs a new version,
    not a new training run): its manifest names the new version, as an assembled bundle's would
    (a plain copy under another name is refused, tests/reliability/test_hostile_requests.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(store.version_dir(version), bundle, ignore=shutil.ignore_patterns(VERSION_FILE, INTEGRITY_FILE))
        write_manifest(bundle, {**read_manifest(bundle), "version": new_version})
        store.publish(bundle, new_version)


@pytest.fixture
def serve_root(mmoe, tmp_path):
    shutil.copytree(mmoe.serve_root / "registry", tmp_path / "registry")
    return tmp_path


@pytest.fixture
def server(serve_root):
    """``http://127.0.0.1:<port>`` of a uvicorn server on ``serve_root`` with the watcher on."""
    import uvicorn

    from ml_core.serving.app import create_app

    app = create_app(serve_root, options=ServeOptions(watch_s=WATCH_S, threads=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def wait_for_version(client: httpx.Client, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health").json()["version"] != version:
        assert time.monotonic() < deadline, f"the server did not switch to {version}"
        time.sleep(WATCH_S)


def test_promotions_swap_without_dropped_requests(mmoe, serve_root, server, scorer):
    store = BundleStore(serve_root)
    v1 = mmoe.version
    versions = [v1, v1 + "-b", v1 + "-c"]
    for v in versions[1:]:
        publish_copy(store, v1, v)
    user, items = int(scorer.graph.user_ids[0]), [int(i) for i in scorer.graph.item_ids[:20]]
    results: list[list[tuple[int, str]]] = [[] for _ in range(3)]
    stop = threading.Event()

    def client_loop(j: int) -> None:
        with httpx.Client(base_url=server, timeout=30) as c:
            while not stop.is_set():
                if j % 2:
                    r = c.post("/score", json={"user_ids": [user] * len(items), "item_ids": items})
                else:
                    r = c.post("/recommend", json={"user_id": user, "k": 3, "candidates": items})
                results[j].append((r.status_code, r.json().get("version", r.text)))

    threads = [threading.Thread(target=client_loop, args=(j,)) for j in range(len(results))]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=server, timeout=30) as c:
            for v in versions[1:]:
                time.sleep(0.3)  # requests on the old version first
                store.set_production(v, {"partition": "test"})
                wait_for_version(c, v)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    answered = [x for rs in results for x in rs]
    assert answered and all(status == 200 for status, _ in answered), [x for x in answered if x[0] != 200][:5]
    for rs in results:  # per client, versions in promotion order, ending on the last
        order = [versions.index(v) for _, v in rs]
        assert order == sorted(order) and order[-1] == 2, order
    assert {v for _, v in answered} == set(versions)  # each version served requests
    with httpx.Client(base_url=server) as c:
        text = c.get("/metrics").text
    assert f'moge_model_version_info{{version="{versions[2]}"}} 1' in text
    assert 'moge_reloads_total{result="ok"} 2' in text and 'moge_reloads_total{result="failed"} 0' in text
    n_score = sum(len(rs) for j, rs in enumerate(results) if j % 2)
    assert f'moge_requests_total{{endpoint="/score",status="200"}} {n_score}' in text


def test_a_failed_load_keeps_serving(mmoe, serve_root):
    store = BundleStore(serve_root)
    holder = ModelHolder(serve_root, ServeOptions(watch_s=WATCH_S), metrics := Metrics())
    assert holder.poll() is None  # the pointer has not moved
    broken = mmoe.version + "-broken"
    publish_copy(store, mmoe.version, broken)
    store.set_production(broken, {"partition": "test"})
    shutil.rmtree(store.version_dir(broken) / "context")  # damaged after its promotion (the gate refuses a damaged one)
    assert holder.poll() is None and holder.current.version == mmoe.version
    assert 'moge_reloads_total{result="failed"} 1' in metrics.render()
    assert holder.poll() is None and 'moge_reloads_total{result="failed"} 1' in metrics.render()  # not retried
    good = mmoe.version + "-good"
    publish_copy(store, mmoe.version, good)
    time.sleep(0.01)  # a distinct mtime on coarse clocks
    store.set_production(good, {"partition": "test"})
    assert holder.poll() == {"version": good, "previous": mmoe.version, "changed": True}
    assert holder.current.version == good and 'moge_reloads_total{result="ok"} 1' in metrics.render()


def test_the_served_model_is_exempt_from_full_collections_and_an_old_one_is_freed(mmoe, serve_root):
    """Loading (and each reload) ends with the live objects frozen out of the cyclic GC (a full
    collection walking them made /score's p99 13x its p50); a replaced model is still freed."""
    import gc
    import weakref

    store = BundleStore(serve_root)
    gc.unfreeze()
    holder = ModelHolder(serve_root, ServeOptions(watch_s=0), Metrics())
    frozen = gc.get_freeze_count()
    assert frozen > 10_000
    first = weakref.ref(holder.current.scorer.model)
    again = mmoe.version + "-again"
    publish_copy(store, mmoe.version, again)
    time.sleep(0.01)
    store.set_production(again, {"partition": "test"})
    assert holder.reload()["changed"] and holder.current.version == again
    assert first() is None  # the old model went with its last reference
    assert gc.get_freeze_count() > 10_000
    gc.unfreeze()


def test_reload_of_a_broken_version_is_not_retried_until_the_pointer_moves(mmoe, serve_root, monkeypatch):
    """POST /reload of a production version that fails to load: 503 each time, but it is loaded
    (and its files hashed) once, not on every call, until the pointer moves again."""
    from ml_core.serving.state import ReloadError

    store = BundleStore(serve_root)
    holder = ModelHolder(serve_root, ServeOptions(), Metrics())
    broken = mmoe.version + "-broken"
    publish_copy(store, mmoe.version, broken)
    store.set_production(broken, {"partition": "test"})
    shutil.rmtree(store.version_dir(broken) / "context")
    loads = []
    real_load = holder._load
    monkeypatch.setattr(holder, "_load", lambda: loads.append(1) or real_load())
    for _ in range(3):
        with pytest.raises(ReloadError) as e:
            holder.reload()
        assert e.value.status == 503 and holder.current.version == mmoe.version
    assert len(loads) == 1
    store.pointer_path.write_text('{"version": "2026-01')  # torn: 503, not a 500
    with pytest.raises(ReloadError, match="unreadable") as e:
        holder.reload()
    assert e.value.status == 503
