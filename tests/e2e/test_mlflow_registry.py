"""The shared model registry (ml_core/registry/mlflow.py) against a real ``mlflow server``.

One server per module (SQLite store, proxied artifacts; tests/mlflow_server.py). The same
interface test runs on the local bundle store and on MLflow; then the MLflow lease under two
deployers; then the deployment stage promoting and refusing through MLflow, and serving
(``Scorer``, ``moge score``, the HTTP app) resolving production from it with no lake and no
local registry.

An e2e test: it starts a server process (about 25-50 s on the shared 2-core machine), which
would double ``make test-fast``; the module takes about 2 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ml_core.config.registry import RegistryConfig
from ml_core.registry.interface import BundleRegistry, open_bundle_registry
from ml_core.storage import INTEGRITY_FILE, VERSION_FILE
from tests.mlflow_server import mlflow_server

mlflow = pytest.importorskip("mlflow")  # the dev extra installs it; a skip fails under CI


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as s:
        print(f"\nmlflow server healthy after {s.start_seconds:.1f} s")
        yield s


def mlflow_cfg(server, model: str, **kw) -> RegistryConfig:
    return RegistryConfig(backend="mlflow", tracking_uri=server.uri, model_name=model, **kw)


def files(d: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``d`` but the store's own records (``_VERSION``,
    ``_FILES.json``)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in (VERSION_FILE, INTEGRITY_FILE)}


def fake_bundle(d: Path, partition: str, seed: int) -> Path:
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"partition": partition}))
    (d / "model.json").write_text(json.dumps({"model": "mmoe"}))
    (d / "context" / "node_features").mkdir(parents=True)
    np.save(d / "context" / "node_features" / "x.npy", np.random.default_rng(seed).normal(size=50))
    return d


@pytest.mark.parametrize("backend", ["local", "mlflow"])
def test_the_interface_behaves_the_same_on_both_backends(request, tmp_path, backend):
    cfg = mlflow_cfg(request.getfixturevalue("server"), "iface") if backend == "mlflow" else RegistryConfig()
    reg = open_bundle_registry(cfg, tmp_path / "root")
    assert isinstance(reg, BundleRegistry)
    assert reg.production() is None and reg.decisions() == [] and reg.versions() == []
    v1, v2 = "2026-01-03-aaaaaaaaaa", "2026-01-04-bbbbbbbbbb"
    b1 = fake_bundle(tmp_path / "b1", "2026-01-03", 1)
    reg.publish(b1, v1)
    assert reg.versions() == [v1] and reg.has_version(v1) and not reg.has_version(v2)
    with pytest.raises(FileNotFoundError, match=v2):
        reg.set_production(v2, {"partition": "2026-01-04"})
    with reg.lock():
        reg.set_production(v1, {"partition": "2026-01-03", "metrics": {"click": {"gauc": 0.7}}})
        reg.record_decision({"partition": "2026-01-03", "version": v1, "promoted": True, "reasons": [],
                             "candidate": {"click": {"gauc": 0.7, "n": 12}}, "production_before": None})
    refusal = {"partition": "2026-01-04", "version": v2, "promoted": False, "reasons": ["click: GAUC 0.4 < floor 0.5"],
               "candidate": {"click": {"gauc": 0.4, "n": 10}}, "production_before": v1}
    reg.record_decision(refusal)
    prod = reg.production()
    assert (prod["version"], prod["partition"], prod["metrics"]) == (v1, "2026-01-03", {"click": {"gauc": 0.7}})
    got = reg.decisions()
    assert [d["promoted"] for d in got] == [True, False] and all(d["at"] for d in got)
    assert {k: v for k, v in got[1].items() if k != "at"} == refusal
    assert files(reg.version_dir(v1)) == files(b1)
    if backend == "mlflow":  # another machine: a new client and an empty cache download the bundle
        other = open_bundle_registry(dataclasses.replace(cfg, cache_dir=str(tmp_path / "other-cache")), tmp_path / "x")
        d = other.version_dir(v1)
        assert d.is_relative_to(tmp_path / "other-cache") and files(d) == files(b1)
        assert (d / "_VERSION").read_text() == (reg.version_dir(v1) / "_VERSION").read_text()
        assert other.production()["version"] == v1


@pytest.mark.parametrize("backend", ["local", "mlflow"])
def test_signed_bundles_on_both_backends(request, tmp_path, backend, monkeypatch):
    """With $MOGE_BUNDLE_KEY set, publishing signs (MLflow: the upload carries the records and
    the signature), and a load checks it: on another machine's download too, and with another
    key it is refused."""
    from ml_core.registry.signing import KEY_ENV, SIGNATURE_FILE, SignatureError

    monkeypatch.setenv(KEY_ENV, "k" * 40)
    cfg = mlflow_cfg(request.getfixturevalue("server"), "signed") if backend == "mlflow" else RegistryConfig()
    reg = open_bundle_registry(cfg, tmp_path / "root")
    v = "2026-01-03-cccccccccc"
    reg.publish(fake_bundle(tmp_path / "b", "2026-01-03", 3), v)
    assert (reg.checked_version_dir(v) / SIGNATURE_FILE).is_file()
    if backend == "mlflow":  # another machine: an empty cache downloads the bundle with its signature
        other = open_bundle_registry(dataclasses.replace(cfg, cache_dir=str(tmp_path / "other-cache")), tmp_path / "x")
        assert (other.checked_version_dir(v) / SIGNATURE_FILE).is_file()
    monkeypatch.setenv(KEY_ENV, "o" * 40)
    with pytest.raises(SignatureError, match="does not match"):
        reg.checked_version_dir(v)


def test_mlflow_lock_admits_one_deployer_at_a_time(server):
    a = open_bundle_registry(mlflow_cfg(server, "lock-a", poll_s=0.2), "unused")
    b = open_bundle_registry(mlflow_cfg(server, "lock-a", poll_s=0.2, lock_wait_s=0.5), "unused")
    held, spans = threading.Event(), {}

    def hold():
        with a.lock():
            spans["a"] = (time.time(), None)
            held.set()
            time.sleep(2.0)
            spans["a"] = (spans["a"][0], time.time())

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(60)
    with pytest.raises(TimeoutError, match="held by"):
        with b.lock():
            pass
    waiting = open_bundle_registry(mlflow_cfg(server, "lock-a", poll_s=0.2, lock_wait_s=60), "unused")
    with waiting.lock():
        entered = time.time()
    t.join()
    assert entered >= spans["a"][1], "the second deployer entered while the first held the lock"
    with b.lock():  # released: free again
        pass


def test_mlflow_expired_lease_is_broken_and_its_holder_fenced_off(server, tmp_path):
    old = open_bundle_registry(mlflow_cfg(server, "lease", lease_s=1.0), tmp_path)
    new = open_bundle_registry(mlflow_cfg(server, "lease", poll_s=0.2, lock_wait_s=30), tmp_path)
    v = "2026-01-03-cccccccccc"
    old.publish(fake_bundle(tmp_path / "b", "2026-01-03", 3), v)
    with old.lock():
        time.sleep(1.5)  # the lease expires: old counts as crashed
        with new.lock():
            with pytest.raises(RuntimeError, match="lost the deployment lock"):
                old.set_production(v, {"partition": "2026-01-03"})
            assert new.production() is None  # the fenced deployer did not move the alias
            new.set_production(v, {"partition": "2026-01-03"})
    assert new.production()["version"] == v
    assert new._lease_tags() is None  # released by its holder; old's exit did not touch it


# -- the deployment stage and serving through MLflow ----------------------------------------------
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
D = DAYS[-1]
OVERRIDES = ["samples.negatives_per_positive=1", "train.max_steps_per_epoch=8", "train.threads=1", 'train.model="mmoe"']


@pytest.mark.slow
def test_deployment_promotes_and_refuses_through_mlflow_and_serving_follows(server, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from mlflow import MlflowClient

    from ml_core import stages as P
    from ml_core.cli import main
    from ml_core.serving.scorer import Scorer
    from ml_core.storage import Lake
    from tests.conftest import build_data_days, make_config
    from tests.helpers import best_floor, doctor_evaluation

    root = tmp_path / "flow"
    reg_overrides = ['registry.backend="mlflow"', f'registry.tracking_uri="{server.uri}"', 'registry.model_name="flow"']
    cfg = make_config(root, *OVERRIDES, *reg_overrides)
    lake = Lake(root)
    build_data_days(cfg, lake, DAYS)
    P.run_trained_model(cfg, lake, D, P.train_window_days(cfg, D))
    ev = P.run_model_evaluation(cfg, lake, D)
    # these 8-step models need not beat the sanity and CF scorers: their GAUCs are set above them
    beat = {t: min(0.99, best_floor(ev, t) + 0.05) for t in ev.candidate}
    doctor_evaluation(lake, D, beat)
    client, store = MlflowClient(server.uri), open_bundle_registry(cfg.registry, root)

    promoted = P.run_deployed_model(cfg, lake, D)
    assert promoted.promoted, promoted.reasons
    assert store.production()["version"] == promoted.version and not (root / "registry").exists()
    local_bundle = shutil.copytree(lake.partition_dir("deployed_model", D) / "bundle", tmp_path / "promoted")
    mv = client.get_model_version_by_alias("flow", "champion")
    assert mv.tags["moge.bundle_version"] == promoted.version and mv.tags["moge.partition"] == D
    refused = P.run_deployed_model(dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, min_gauc=1.0)), lake, D)
    assert not refused.promoted and any("< floor 1.0" in r for r in refused.reasons)
    assert client.get_model_version_by_alias("flow", "champion").version == mv.version  # the alias stayed
    assert len(client.search_model_versions("name = 'flow'")) == 1  # a refusal registers no version
    runs = client.search_runs([client.get_experiment_by_name("flow-deployments").experiment_id],
                              "tags.`moge.kind` = 'decision'", order_by=["attributes.start_time ASC"])
    assert [r.data.tags["moge.promoted"] for r in runs] == ["true", "false"]
    assert [r.data.metrics["promoted"] for r in runs] == [1.0, 0.0]
    task = next(iter(beat))
    assert runs[1].data.metrics[f"candidate.{task}.gauc"] == pytest.approx(beat[task])
    assert "< floor 1.0" in runs[1].data.tags["moge.reasons"]
    assert [d["promoted"] for d in store.decisions()] == [True, False]

    # serving on a machine with no lake and no registry directory: production comes from MLflow
    serve_root = tmp_path / "serving"
    sc = Scorer.from_registry(serve_root, cfg.registry)
    # the bundle as the gate promoted it (the refusal replaced the partition); its files are
    # checked as part of that lake partition, the bundle directory has no _FILES.json of its own
    local = Scorer.from_bundle(local_bundle, allow_unsealed=True)
    assert sc.version == promoted.version and sc.bundle.is_relative_to(serve_root / "registry_cache")
    s = Lake(root).read_table("training_samples", D).unique(["user_id", "item_id"]).head(300)
    users, items = s["user_id"].to_numpy(), s["item_id"].to_numpy()
    np.testing.assert_array_equal(sc.score(users, items), local.score(users, items))
    toml = tmp_path / "serve.toml"
    toml.write_text(f'[storage]\nroot = "{serve_root}"\n[registry]\nbackend = "mlflow"\n'
                    f'tracking_uri = "{server.uri}"\nmodel_name = "flow"\n')
    monkeypatch.setenv("MOGE_CONFIG", str(toml))
    s.select("user_id", "item_id").write_parquet(tmp_path / "pairs.parquet")
    assert main(["score", "--input", str(tmp_path / "pairs.parquet"), "--output", str(tmp_path / "out.parquet")]) == 0
    import polars as pl

    out = pl.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out[f"score_{task}"].to_numpy(), local.score(users, items)[:, local.tasks.index(task)])
    shutil.rmtree(serve_root / "registry_cache")  # the app downloads it again
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    monkeypatch.setenv("MOGE_ADMIN_TOKEN", "e2e-token")  # /reload needs it
    # `moge serve` builds its app from [registry] (uvicorn.run captured); TestClient's Host is "testserver"
    assert main(["serve", "--allowed-hosts", "*"]) == 0
    with TestClient(served["app"], headers={"Authorization": "Bearer e2e-token"}) as c:
        assert c.get("/health").json()["version"] == promoted.version
        assert c.post("/reload").json() == {"version": promoted.version, "previous": promoted.version, "changed": False}
    # training warm-starts from the MLflow production model
    from ml_core.stages.training import warm_start_source

    warm = warm_start_source(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warm_start="production")),
                             lake, "2026-01-04")
    assert warm.source == promoted.version and Path(warm.directory).is_relative_to(root / "registry_cache")


def test_mlflow_backend_settings_are_checked_when_the_config_loads(monkeypatch):
    import importlib.util

    from ml_core.config import load_config
    from ml_core.preflight import check_runnable
    from ml_core.typed import ConfigError

    with pytest.raises(ConfigError, match="needs tracking_uri"):
        load_config(None, ['registry.backend="mlflow"'])
    cfg = load_config(None, ['registry.backend="mlflow"', 'registry.tracking_uri="http://127.0.0.1:1"'])
    check_runnable(cfg)  # installed: runnable
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the MLflow client"):
        check_runnable(cfg)
