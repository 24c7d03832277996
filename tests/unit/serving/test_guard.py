"""The request limits and the admin check (ml_core/serving/guard.py), the ``moge serve`` flags
that configure them, and the checks of a bundle's name and files before it is loaded. The same
limits against a real server: tests/reliability/test_hostile_requests.py."""

from __future__ import annotations

import shutil
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from ml_core.cli import admin_token, build_parser, serve_limits
from ml_core.integrity import CorruptPartitionError
from ml_core.registry.bundles import BundleStore, check_bundle_identity, check_version_name
from ml_core.serving.guard import LOOPBACK_HOSTS, Limits, Rejected, RequestGuard, check_admin
from ml_core.serving.metrics import Metrics
from ml_core.serving.scorer import Scorer
from ml_core.storage import INTEGRITY_FILE, VERSION_FILE


def guarded(limits: Limits) -> tuple[TestClient, Metrics]:
    app, metrics = FastAPI(), Metrics()

    @app.post("/score")
    def slow(seconds: float = 0.0) -> dict:
        time.sleep(seconds)
        return {"ok": True}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    app.add_middleware(RequestGuard, limits=limits, metrics=metrics, work_paths={"/score"})
    return TestClient(app), metrics


def test_body_limit_and_request_timeout():
    client, metrics = guarded(Limits(max_body_bytes=100, request_timeout_s=0.2))
    assert client.post("/echo", content=b"x" * 100).json() == {"bytes": 100}
    r = client.post("/echo", content=b"x" * 101)
    assert r.status_code == 413 and "100 bytes" in r.json()["detail"]
    r = client.post("/echo", content=iter([b"x" * 60, b"x" * 60]))  # streamed, no Content-Length
    assert r.status_code == 413
    assert client.post("/score?seconds=0").status_code == 200
    r = client.post("/score?seconds=0.6")
    assert r.status_code == 504 and "0.2 s" in r.json()["detail"]
    text = metrics.render()
    assert 'moge_rejections_total{reason="body_too_large"} 2' in text and 'moge_rejections_total{reason="timeout"} 1' in text


def test_host_header():
    client, _ = guarded(Limits(allowed_hosts=("127.0.0.1", "localhost")))
    assert client.post("/echo", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.post("/echo", headers={"Host": "LOCALHOST"}).status_code == 200
    assert client.post("/echo", headers={"Host": "evil.example"}).status_code == 400


def test_concurrency_from_memory(monkeypatch):
    import ml_core.serving.guard as guard

    assert Limits(max_concurrent=3).concurrency() == 3
    assert guard.available_memory_bytes() > 0  # /proc/meminfo's MemAvailable
    monkeypatch.setattr(guard.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 100 << 30)
    assert Limits().concurrency() == 4  # two per core
    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 1 << 30)
    assert Limits().concurrency() == 1  # never 0
    with pytest.raises(ValueError, match="positive limits"):
        Limits(max_body_bytes=0)


@pytest.mark.parametrize("headers, status, reason", [
    ({"authorization": "Bearer s3cret"}, None, None),
    ({"authorization": "bearer s3cret"}, None, None),
    ({}, 401, "unauthorized"),
    ({"authorization": "Bearer wrong"}, 401, "unauthorized"),
    ({"authorization": "Basic s3cret"}, 401, "unauthorized"),
    ({"authorization": "Bearer s3cret", "origin": "http://evil.example"}, 403, "cross_origin"),
    ({"authorization": "Bearer s3cret", "sec-fetch-site": "cross-site"}, 403, "cross_origin"),
    ({"authorization": "Bearer s3cret", "sec-fetch-site": "same-origin"}, None, None),
])
def test_check_admin(headers, status, reason):
    if status is None:
        check_admin(headers, "s3cret")
        return
    with pytest.raises(Rejected) as e:
        check_admin(headers, "s3cret")
    assert (e.value.status, e.value.reason) == (status, reason)


def test_no_token_means_no_reload():
    with pytest.raises(Rejected) as e:
        check_admin({"authorization": "Bearer "}, "")
    assert e.value.status == 403 and e.value.reason == "admin_disabled"


def test_serve_flags(tmp_path, monkeypatch):
    parse = build_parser().parse_args
    monkeypatch.setenv("MOGE_ADMIN_TOKEN", " from-env ")
    assert admin_token(None) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert admin_token(str(tmp_path / "token")) == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        admin_token(str(tmp_path / "empty"))
    assert serve_limits(parse(["serve"])).allowed_hosts == LOOPBACK_HOSTS
    assert serve_limits(parse(["serve", "--host", "0.0.0.0"])).allowed_hosts == ()
    assert serve_limits(parse(["serve", "--host", "0.0.0.0", "--allowed-hosts", "api.example,10.0.0.5"])).allowed_hosts \
        == ("api.example", "10.0.0.5")
    assert serve_limits(parse(["serve", "--allowed-hosts", "*"])).allowed_hosts == ()
    lim = serve_limits(parse(["serve", "--max-body-bytes", "1000", "--max-concurrent", "3", "--request-timeout", "2"]))
    assert (lim.max_body_bytes, lim.max_concurrent, lim.request_timeout_s) == (1000, 3, 2.0)


# -- a bundle's name and files -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["2026-01-03-0123456789", "v3", "2026-01-03-abc-b"])
def test_version_names_accepted(name):
    assert check_version_name(name) == name


@pytest.mark.parametrize("name", ["../../../../tmp/x/bundle", "a/b", "..", "a..b", "", ".hidden", "x" * 200, None, 3])
def test_version_names_refused(name, tmp_path):
    with pytest.raises(ValueError, match="not a bundle version name"):
        check_version_name(name)
    with pytest.raises(ValueError):
        BundleStore(tmp_path).version_dir(name)


def test_a_version_linked_outside_the_store_is_refused(tmp_path):
    store = BundleStore(tmp_path / "root")
    (tmp_path / "elsewhere").mkdir()
    (store.root / "versions").mkdir(parents=True)
    (store.root / "versions" / "2026-01-03-0123456789").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside"):
        store.version_dir("2026-01-03-0123456789")


def test_renamed_unsealed_and_edited_bundles_are_refused(mmoe, tmp_path):
    store = BundleStore(mmoe.serve_root)
    src = store.version_dir(mmoe.version)
    assert check_bundle_identity(src, mmoe.version) == src
    copy = tmp_path / "store"
    shutil.copytree(mmoe.serve_root / "registry", copy / "registry")
    other = "2026-01-03-ffffffffff"
    shutil.copytree(src, copy / "registry" / "versions" / other)
    with pytest.raises(CorruptPartitionError, match=f"copy of bundle {mmoe.version}"):
        BundleStore(copy).checked_version_dir(other)
    # a bundle directory without _FILES.json: refused unless asked for
    unsealed = tmp_path / "unsealed"
    shutil.copytree(src, unsealed, ignore=shutil.ignore_patterns(INTEGRITY_FILE))
    with pytest.raises(CorruptPartitionError, match="no _FILES.json"):
        Scorer.from_bundle(unsealed)
    assert Scorer.from_bundle(unsealed, allow_unsealed=True).version == mmoe.version
    # the older _VERSION-only record does not cover manifest.json: a bundle is not checked by it
    edited = tmp_path / "edited"
    shutil.copytree(src, edited, ignore=shutil.ignore_patterns(INTEGRITY_FILE))
    assert (edited / VERSION_FILE).is_file()
    (edited / "manifest.json").write_text((edited / "manifest.json").read_text().replace('"metrics"', '"metrics" '))
    with pytest.raises(CorruptPartitionError):
        Scorer.from_bundle(edited)
    # a sealed bundle whose manifest was edited afterwards: its record says so
    sealed = tmp_path / "sealed"
    shutil.copytree(src, sealed)
    (sealed / "manifest.json").write_text((sealed / "manifest.json").read_text().replace('"metrics"', '"metrics" '))
    with pytest.raises(CorruptPartitionError, match="manifest.json"):
        Scorer.from_bundle(sealed)
