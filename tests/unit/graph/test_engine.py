"""The graph stage on Dask (graph.engine = "dask", local cluster of 2 worker processes) gives the
same graphs as the single-machine kernel, bit for bit: random graphs, the incremental refresh
(both of its paths) and the real Taobao excerpt."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from ml_core.config import GraphConfig, load_config
from ml_core.graph import similarity as S
from ml_core.graph.csr import CSR
from ml_core.graph.engine import DaskEngine, LocalEngine, open_engine
from ml_core.graph.incremental import build_window, refresh_window
from ml_core.graph.similarity_state import build_similarity_state
from tests.conftest import TAOBAO_HEAD
from tests.unit.graph.test_incremental import _events, _lake_day_graphs, _window

LOCAL = GraphConfig(topk=4)
DASK = replace(LOCAL, engine="dask", engine_workers=2)


@pytest.fixture(scope="module")
def dask_engine():
    eng = DaskEngine(workers=2, blocks=5)
    yield eng
    eng.close()


def _same(a: CSR, b: CSR) -> bool:
    return (a.n_cols == b.n_cols and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.weights, b.weights))


def _same_state(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("node_ids", "indptr", "indices", "sims", "complete"))


def _same_window(g, h) -> None:
    assert _same(g.bip.ui, h.bip.ui)
    for side in ("user", "item"):
        assert _same(getattr(g, f"{side}_sim").adj, getattr(h, f"{side}_sim").adj), side
        assert _same_state(getattr(g, f"{side}_state"), getattr(h, f"{side}_state")), side


def _random_matrix(rng, n_max=120, m_max=60):
    n, m = int(rng.integers(1, n_max)), int(rng.integers(1, m_max))
    nnz = int(rng.integers(0, n * m // 3 + 1))
    return CSR.from_coo(rng.integers(0, n, nnz), rng.integers(0, m, nnz), rng.choice([1.0, 2.0, 4.0, 0.3], nnz), n, m)


@pytest.mark.parametrize("measure", ["cosine", "jaccard"])
def test_sharded_topk_equals_local_bitwise(dask_engine, measure):
    rng = np.random.default_rng(5 if measure == "cosine" else 6)
    for _ in range(6):
        a = _random_matrix(rng)
        for cap in (0, 3):
            k = int(rng.integers(1, 8))
            assert _same(S.topk_similarity(a, k, measure, cap, engine=dask_engine), S.topk_similarity(a, k, measure, cap))
            local = build_similarity_state(a, np.arange(a.n_rows), "user", k, measure, cap, buffer=2 * k)
            dist = build_similarity_state(a, np.arange(a.n_rows), "user", k, measure, cap, buffer=2 * k, engine=dask_engine)
            assert _same_state(local, dist)


def test_rows_are_walked_by_the_workers_in_blocks(dask_engine):
    a = _random_matrix(np.random.default_rng(7), 400, 80)
    S.topk_similarity(a, 5, engine=dask_engine)
    run = dask_engine.last_run
    assert run["blocks"] == 5 and run["rows"] == a.n_rows
    assert os.getpid() not in run["pids"] and len(run["pids"]) == 2, run
    # no rows at all: the empty shapes of the local call
    prep = S.PreparedMatrix(a, "cosine", 0)
    out = dask_engine.run(prep, np.zeros(0, np.int64), 5)
    assert [x.shape for x in out] == [x.shape for x in prep.run(np.zeros(0, np.int64), 5)]


@pytest.mark.parametrize("max_walk_share", [1.0, 0.0], ids=["incremental-path", "full-path"])
def test_refresh_with_the_engine_equals_local(dask_engine, max_walk_share):
    """Both paths of the daily refresh are sharded too (the changed rows' walk with emission, or
    every row) and give the local chain's graphs and states."""
    ev = _events(n_users=150, n_items=90, n_days=8, per_day=250, seed=3)
    W = 5
    g_local = build_window(_window(ev, 0, W), LOCAL, [str(d) for d in range(W)])
    g_dask = build_window(_window(ev, 0, W), DASK, [str(d) for d in range(W)], engine=dask_engine)
    _same_window(g_dask, g_local)
    for d in range(1, 4):
        days = [str(x) for x in range(d, d + W)]
        enter, leave = _window(ev, d + W - 1, d + W), _window(ev, d - 1, d)
        g_local = refresh_window(g_local, enter, leave, LOCAL, days, max_walk_share=max_walk_share)
        g_dask = refresh_window(g_dask, enter, leave, DASK, days, max_walk_share=max_walk_share, engine=dask_engine)
        _same_window(g_dask, g_local)
        mode = "incremental" if max_walk_share == 1.0 else "full (auto)"
        assert g_dask.stats["user_sim"]["mode"] == mode
        full = build_window(_window(ev, d, d + W), LOCAL, days)  # (an incremental state may hold fewer entries)
        assert _same(g_dask.user_sim.adj, full.user_sim.adj) and _same(g_dask.item_sim.adj, full.item_sim.adj)


def _taobao_days():
    from ml_core.config import source_config
    from ml_core.data.readers import read_file_source

    if not TAOBAO_HEAD.exists():
        pytest.skip(f"Taobao sample not found at {TAOBAO_HEAD}")  # fails under CI (tests/conftest.py)
    cfg = source_config(kind="taobao", path=str(TAOBAO_HEAD), start_date="2017-11-25", end_date="2017-12-03",
                        timezone="Asia/Shanghai")
    days = [f"2017-11-{d}" for d in range(25, 31)] + ["2017-12-01", "2017-12-02"]
    return days, {d: read_file_source(cfg, d).events for d in days}


def test_taobao_excerpt_on_dask_equals_local(dask_engine):
    """The real excerpt (815 users, 9 days): a 7-day window built on the cluster, then refreshed by
    one day on it, equals the single-machine build and refresh bit for bit."""
    days, ev = _taobao_days()
    cfg = GraphConfig(topk=10)
    first, second = days[:7], days[1:]
    local = build_window(pl.concat([ev[d] for d in first]), cfg, first)
    assert local.bip.n_users > 500 and local.bip.ui.nnz > 20_000  # the excerpt, not an empty read
    dist = build_window(pl.concat([ev[d] for d in first]), replace(cfg, engine="dask"), first, engine=dask_engine)
    _same_window(dist, local)
    local = refresh_window(local, ev[days[7]], ev[days[0]], cfg, second, max_walk_share=1.0)
    dist = refresh_window(dist, ev[days[7]], ev[days[0]], cfg, second, max_walk_share=1.0, engine=dask_engine)
    _same_window(dist, local)


def test_engine_from_config():
    cfg = load_config(None, ["graph.engine=dask", "graph.engine_workers=3", 'graph.engine_address="tcp://h:8786"'])
    assert (cfg.graph.engine, cfg.graph.engine_workers, cfg.graph.engine_address) == ("dask", 3, "tcp://h:8786")
    # where the graph is computed is not part of what it is: the data versions do not move
    assert cfg.fingerprint("graph") == load_config(None, []).fingerprint("graph")
    for bad in (["graph.engine=ray"], ["graph.engine_workers=0"], ["graph.engine_blocks=-1"]):
        with pytest.raises(ValueError, match="engine"):
            load_config(None, bad)
    assert isinstance(open_engine(LOCAL), LocalEngine)


def test_pipeline_stage_on_dask_equals_local(tmp_path, dask_engine):
    """run_window_graphs with graph.engine = "dask" (a full build, then the daily refresh: one local
    cluster per stage run, opened from the config and closed after it) stores the local graphs."""
    import psutil

    from ml_core.config import PipelineConfig

    ev = _events(300, 150, 5, 300, seed=7)
    graph = GraphConfig(topk=3, window_days=3)
    local, local_stats = _lake_day_graphs(tmp_path / "local", ev, PipelineConfig(graph=graph))
    children = {p.pid for p in psutil.Process().children(recursive=True)}  # the fixture's cluster
    dist, dist_stats = _lake_day_graphs(tmp_path / "dask", ev, PipelineConfig(graph=replace(graph, engine="dask")))
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children, "the stage's cluster is closed"
    assert dist_stats["engine"] == "dask" and local_stats["engine"] == "local"
    assert dist_stats["mode"] == local_stats["mode"] == "incremental"
    assert _same(dist.bip.ui, local.bip.ui)
    assert _same(dist.user_sim.adj, local.user_sim.adj) and _same(dist.item_sim.adj, local.item_sim.adj)


def test_cluster_address_mode():
    """engine_address: connect to a running scheduler (here an in-process one), walk there, leave it
    running on close; workers with several task threads are refused (the kernel threads itself)."""
    from distributed import LocalCluster

    a = _random_matrix(np.random.default_rng(8), 200, 50)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        eng = open_engine(replace(DASK, engine_address=cluster.scheduler_address))
        assert eng.cluster is None and eng.threads == 0 and eng.blocks == 4
        assert _same(S.topk_similarity(a, 6, engine=eng), S.topk_similarity(a, 6))
        eng.close()
        assert len(cluster.scheduler_info["workers"]) == 1, "closing the engine leaves the cluster running"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster:
        with pytest.raises(RuntimeError, match="--nthreads 1"):
            DaskEngine(cluster.scheduler_address)


def test_the_local_cluster_listens_on_loopback_only(dask_engine):
    """The local cluster's scheduler and dashboard bind 127.0.0.1 (the dashboard bound every
    interface before)."""
    from urllib.parse import urlsplit

    assert dask_engine.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert urlsplit(dask_engine.cluster.dashboard_link).hostname == "127.0.0.1"


def test_tls_settings(tmp_path):
    from distributed.security import Security

    from ml_core.graph.engine import engine_security

    assert engine_security(DASK) is None
    with pytest.raises(ValueError, match="missing"):
        engine_security(replace(DASK, engine_tls_ca_file="ca.pem"))
    sec = engine_security(replace(DASK, engine_tls_ca_file="ca.pem", engine_tls_cert="c.pem", engine_tls_key="k.pem"))
    assert isinstance(sec, Security) and sec.require_encryption and sec.tls_client_cert == "c.pem"
    with pytest.raises(ValueError, match="tls://"):
        DaskEngine("tcp://10.0.0.1:8786", security=sec)
