"""Serving of the deployed bundle: Scorer, FastAPI app, ``moge score``.

One small lake (3 synthetic days through the data stages), then train + evaluate + deploy of each
model with ml_core.stages. The scorers load from a copy of the registry with no lake beside it,
so every score they give comes from the bundle alone.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from ml_core import stages as P
from ml_core.contracts.day import DayContext
from ml_core.graph.csr import SimilarityGraph
from ml_core.history import KNN_COLUMNS
from ml_core.inference import inference_needs_graph, predict
from ml_core.registry.bundles import NODE_REPS_FILE, BundleStore, load_model, read_manifest
from ml_core.serving.scorer import (
    Scorer,
    canonical_pairs,
    pair_samples,
    request_context,
)
from ml_core.serving.state import ServeOptions
from ml_core.storage import Lake, seal
from tests.conftest import make_config
from tests.unit.serving.deployed import MODELS, OVERRIDES, UNKNOWN, D, Deployment, deploy

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def lake_pairs(dep: Deployment, n: int = 1500) -> pl.DataFrame:
    """A canonical (distinct, sorted) subset of day D's samples, with cold users and items."""
    s = Lake(dep.root).read_table("training_samples", D).unique(["user_id", "item_id"])
    s = s.sample(n=min(n, s.height), seed=3).sort(["user_id", "item_id"])
    return s


# -- Scorer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_scorer_equals_lake_predict(deployments, model):
    dep = deployments(model)
    assert not (dep.serve_root / "lake").exists()
    sc = Scorer.from_registry(dep.serve_root)
    assert sc.version == dep.version == BundleStore(dep.serve_root).production()["version"]
    assert sc.needs_graph == (model != "mmoe")

    # the lake-based path of evaluation: the day's stored inputs, DayContext.build, predict
    lake = Lake(dep.root)
    net, spec, _, _ = load_model(lake.partition_dir("trained_model", D))
    inputs = P.load_day_inputs(lake, D)  # as the evaluation reads it (the kNN pair columns too)
    pairs = lake_pairs(dep)
    inputs.samples = pairs
    ctx = DayContext.build(inputs, spec, with_graph=inference_needs_graph(net))
    assert (ctx.sample_user >= ctx.n_graph_users).any() or (ctx.sample_item >= ctx.n_graph_items).any()

    # the pair input is on by default, read from the bundle's copy of the day's history, and
    # some of these pairs have one
    assert spec.pair is not None and sc.spec.pair == spec.pair and set(KNN_COLUMNS) <= set(spec.pair.columns)
    assert (inputs.pair_inputs(spec.pair.columns) > 0).any(axis=0).all()  # every column has some non-zero pair
    assert (ctx.user_seq is not None and bool(ctx.user_seq.mask.any())) == (model == "moge")
    u, i = pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy()
    # the server's kNN columns are lookups in the sums it stored at load: the evaluation's bits
    assert sc.pair_sums > 0 and sc.info()["pair_sums_stored"] == sc.pair_sums
    np.testing.assert_array_equal(sc.inputs.pair_inputs_of(u, i, spec.pair.columns), inputs.pair_inputs(spec.pair.columns))
    r = sc.score_pairs(u, i)
    expected = predict(net, ctx, dep.cfg.train.fanouts, batch_size=sc.batch_size, seed=r.seed)
    assert r.scores.shape == (len(pairs), len(sc.tasks))
    np.testing.assert_allclose(r.scores, expected, rtol=0, atol=1e-6)
    if model == "lightgode":  # its ODE ran over the bundle's graph snapshot (graph[D]), as over the lake's
        assert sc.base.channels and sc.model._day_emb is not None
        np.testing.assert_allclose(sc.model._day_emb.numpy(), net._day_emb.numpy(), rtol=0, atol=1e-6)
    # deterministic, also in another order and with duplicates
    perm = np.random.default_rng(0).permutation(len(u))
    again = sc.score(np.concatenate([u[perm], u[:5]]), np.concatenate([i[perm], i[:5]]))
    np.testing.assert_array_equal(again[: len(u)], r.scores[perm])
    np.testing.assert_array_equal(again[len(u) :], r.scores[:5])


def test_request_context_equals_day_context_build(scorer):
    """The incremental per-request context is DayContext.build of the same pairs (graph channels too)."""
    ctx_dir = scorer.bundle / "context"
    inputs = dataclasses.replace(scorer.inputs,
                                 user_sim=SimilarityGraph.load(ctx_dir / "user_similarity_graph"),
                                 item_sim=SimilarityGraph.load(ctx_dir / "item_similarity_graph"))
    base = DayContext.build(inputs, scorer.spec, with_graph=True)
    g = scorer.graph
    users = np.array([g.user_ids[0], UNKNOWN + 2, g.user_ids[-1], UNKNOWN + 1, g.user_ids[0]])
    items = np.array([g.item_ids[3], g.item_ids[1], UNKNOWN + 7, UNKNOWN + 7, g.item_ids[-1]])
    for u, i in ((users, items), (users[[0, 2]], items[[0, 4]])):  # with and without unknown nodes
        got = request_context(base, inputs, scorer.spec, u, i)
        want = DayContext.build(dataclasses.replace(inputs, samples=pair_samples(u, i, scorer.tasks)),
                                scorer.spec, with_graph=True)
        for f in dataclasses.fields(DayContext):
            a, b = getattr(got, f.name), getattr(want, f.name)
            if f.name in ("users", "items"):
                assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("ids", "cats", "nums")), f.name
            elif f.name == "channels":
                assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a), f.name
            elif isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and np.array_equal(a, b), f.name
            else:
                assert a == b, f.name


def test_canonical_pairs():
    pairs, inv = canonical_pairs([3, 1, 3, 1], [5, 9, 5, 2])
    assert pairs.tolist() == [[1, 2], [1, 9], [3, 5]]
    assert inv.tolist() == [2, 1, 2, 0]
    with pytest.raises(ValueError, match="pairs need one of each"):
        canonical_pairs([1, 2], [1])


def test_unknown_ids_are_scored_and_reported(scorer):
    g = scorer.graph
    known_u, known_i = int(scorer.spec.user.ids[0]), int(scorer.spec.item.ids[0])
    r = scorer.score_pairs([known_u, UNKNOWN, UNKNOWN + 1, known_u], [known_i, known_i, known_i, UNKNOWN])
    assert r.unknown_users == [UNKNOWN, UNKNOWN + 1] and r.unknown_items == [UNKNOWN]
    assert np.isfinite(r.scores).all() and ((r.scores > 0) & (r.scores < 1)).all()
    # two unknown users without features get the same representation (unknown-id row, no features)
    np.testing.assert_array_equal(r.scores[1], r.scores[2])
    assert scorer.score_pairs([known_u], [int(g.item_ids[0])]).unknown_users == []
    recs = scorer.recommend(UNKNOWN, k=5)  # a cold user still gets recommendations
    assert len(recs) == 5


def test_recommend(scorer):
    g = scorer.graph
    deg = np.diff(np.asarray(g.ui.indptr))
    user = int(g.user_ids[int(np.argmax(deg))])
    seen = set(scorer.seen_items(user).tolist())
    assert len(seen) == deg.max() > 0

    recs = scorer.recommend(user, k=25)
    assert len(recs) == 25 and not seen & {i for i, _ in recs}
    assert all(set(s) == set(scorer.tasks) for _, s in recs)
    last = scorer.tasks[-1]
    vals = [s[last] for _, s in recs]
    assert vals == sorted(vals, reverse=True)
    assert scorer.recommend(user, k=25) == recs  # deterministic
    # the top k are the best of all unseen items by the task
    cand = scorer.candidates(user)
    assert len(cand) == g.n_items - len(seen)
    full = scorer.score(np.full(len(cand), user), cand)[:, -1]
    assert vals[0] == pytest.approx(full.max(), abs=1e-6) and vals[-1] >= np.sort(full)[-25] - 1e-6

    by_click = scorer.recommend(user, k=10, task=scorer.tasks[0])
    c = [s[scorer.tasks[0]] for _, s in by_click]
    assert c == sorted(c, reverse=True)
    # candidates restrict the ranking; exclude_seen=False may return seen items
    some = [int(x) for x in list(seen)[:3]] + [int(x) for x in cand[:4]]
    got = scorer.recommend(user, k=10, candidates=some, exclude_seen=False)
    assert {i for i, _ in got} == set(some)
    got = scorer.recommend(user, k=10, candidates=some)
    assert {i for i, _ in got} == {int(x) for x in cand[:4]}
    assert scorer.recommend(user, k=3, candidates=sorted(seen)) == []
    with pytest.raises(ValueError, match="unknown task"):
        scorer.recommend(user, task="nope")
    with pytest.raises(ValueError, match="k must be"):
        scorer.recommend(user, k=0)


def test_from_bundle_and_errors(scorer, tmp_path):
    b = Scorer.from_bundle(scorer.bundle)
    assert b.version == scorer.version
    with pytest.raises(FileNotFoundError, match="no production model"):
        Scorer.from_registry(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(scorer.bundle, partial, ignore=shutil.ignore_patterns("context"))
    with pytest.raises(FileNotFoundError, match="not a deployed bundle"):
        Scorer.from_bundle(partial)


def test_bundle_carries_node_reps_and_the_scorer_scores_from_them(deployments, tmp_path):
    dep = deployments("moge")
    sc = Scorer.from_registry(dep.serve_root)
    entry = read_manifest(sc.bundle)["node_reps"]
    assert entry["file"] == NODE_REPS_FILE and entry["neighbours"] == "full"
    assert (entry["users"], entry["items"]) == (sc.graph.n_users, sc.graph.n_items)
    assert entry["bytes"] == (sc.bundle / NODE_REPS_FILE).stat().st_size
    assert set(entry["representations"]) == {"p_u", "h_u", "s_u", "q_i", "h_i", "s_i"}
    reps = sc.representations()
    dim = entry["representations"]["h_u"][0][1]
    assert reps["users"].shape == (sc.graph.n_users, 3 * dim) and reps["items"].shape == (sc.graph.n_items, 3 * dim)
    assert np.array_equal(reps["item_ids"], sc.item_ids)
    u, i = sc.graph.user_ids[:40], sc.graph.item_ids[:40]
    want = sc.score(u, i)
    # without the stored representations the bundle is encoded at load: the same scores
    bare = tmp_path / "bare"
    shutil.copytree(sc.bundle, bare, ignore=shutil.ignore_patterns(NODE_REPS_FILE))
    seal(bare)  # a bundle published without them (its file record says so)
    np.testing.assert_allclose(Scorer.from_bundle(bare).score(u, i), want, rtol=0, atol=1e-6)
    # the stored ones are what it reads: changed representations change the scores
    edited = tmp_path / "edited"
    shutil.copytree(sc.bundle, edited)
    with np.load(edited / NODE_REPS_FILE) as z:
        arrays = dict(z)
    arrays["user_reps.h_u"] = arrays["user_reps.h_u"] * 0
    np.savez(edited / NODE_REPS_FILE, **arrays)
    seal(edited)  # recorded as such: readers check the files against their record
    assert not np.allclose(Scorer.from_bundle(edited).score(u, i), want)


def test_the_bundle_stores_the_evaluations_encoding_of_its_snapshot(deployments, tmp_path):
    """Deployment writes the representations the candidate's evaluation encoded (model_evaluation's
    node_reps.npz) instead of encoding the snapshot again: they equal a fresh encoding of the bundle."""
    from ml_core.serving.scorer import write_node_reps
    from ml_core.stages.evaluation import SNAPSHOT_FILE
    from ml_core.storage import INTEGRITY_FILE

    dep = deployments("moge")
    sc = Scorer.from_registry(dep.serve_root)
    evaluated = Lake(dep.root).checked_dir("model_evaluation", D) / SNAPSHOT_FILE
    assert evaluated.read_bytes() == (sc.bundle / NODE_REPS_FILE).read_bytes()
    fresh = tmp_path / "fresh"
    shutil.copytree(sc.bundle, fresh, ignore=shutil.ignore_patterns(NODE_REPS_FILE, INTEGRITY_FILE))
    write_node_reps(fresh)  # encoded from the bundle's own snapshot (an unpublished copy: no file record)
    with np.load(sc.bundle / NODE_REPS_FILE) as stored, np.load(fresh / NODE_REPS_FILE) as encoded:
        assert sorted(stored.files) == sorted(encoded.files)
        for name in stored.files:
            if stored[name].dtype.kind == "f":
                np.testing.assert_allclose(stored[name], encoded[name], rtol=0, atol=1e-6, err_msg=name)
            else:  # ids, codes, the neighbourhood label
                assert np.array_equal(stored[name], encoded[name]), name


# -- HTTP -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(mmoe):
    from fastapi.testclient import TestClient

    from ml_core.serving.app import create_app

    with TestClient(create_app(mmoe.serve_root)) as c:
        yield c


def test_health_and_model(client, mmoe, scorer):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["version"] == mmoe.version
    m = client.get("/model").json()
    assert m["version"] == mmoe.version and m["tasks"] == scorer.tasks and m["model"] == "mmoe"
    assert m["train_days"] == P.train_window_days(mmoe.cfg, D) and set(m["metrics"]) == set(scorer.tasks)
    assert m["partition"] == D and m["source"] == "registry" and m["snapshot"]["items"] == scorer.graph.n_items


def test_score_endpoint(client, scorer):
    g = scorer.graph
    users = [int(g.user_ids[0]), int(g.user_ids[1]), UNKNOWN]
    items = [int(g.item_ids[0]), UNKNOWN + 3, int(g.item_ids[2])]
    r = client.post("/score", json={"pairs": [list(p) for p in zip(users, items)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == scorer.version and body["tasks"] == scorer.tasks
    assert body["unknown_users"] == [UNKNOWN] and body["unknown_items"] == [UNKNOWN + 3]
    np.testing.assert_allclose(np.array(body["scores"]), scorer.score(users, items), atol=1e-7)
    r2 = client.post("/score", json={"user_ids": users, "item_ids": items})
    assert r2.status_code == 200 and r2.json()["scores"] == body["scores"]


@pytest.mark.parametrize("payload, message", [
    ({"pairs": []}, "no pairs to score"),
    ({"user_ids": [], "item_ids": []}, "no pairs to score"),
    ({"user_ids": [1, 2], "item_ids": [1]}, "'user_ids' has 2 entries but 'item_ids' has 1"),
    ({"pairs": [[1, 2]], "user_ids": [1], "item_ids": [2]}, "not both"),
    ({}, "give 'pairs'"),
    ({"user_ids": [1]}, "give 'pairs'"),
    ({"pairs": [[1, 2, 3]]}, ""),
    ({"pairs": [["a", 2]]}, ""),
    ({"pairs": [[1.5, 2]]}, ""),
    ({"pairs": [[2**64, 2]]}, ""),
    ({"pairs": [[1, 2]], "extra": 1}, ""),
])
def test_score_validation(client, payload, message):
    r = client.post("/score", json=payload)
    assert r.status_code == 422, r.text
    assert message in r.text


def test_recommend_endpoint(client, scorer):
    user = int(scorer.graph.user_ids[0])
    r = client.post("/recommend", json={"user_id": user, "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == scorer.tasks[-1] and body["version"] == scorer.version and not body["unknown_user"]
    assert [x["rank"] for x in body["items"]] == list(range(1, 8))
    assert [(x["item_id"], x["scores"]) for x in body["items"]] == [(i, s) for i, s in scorer.recommend(user, 7)]
    assert body["n_candidates"] == scorer.graph.n_items - len(scorer.seen_items(user))
    r = client.post("/recommend", json={"user_id": UNKNOWN, "k": 3, "task": scorer.tasks[0],
                                        "candidates": [int(x) for x in scorer.graph.item_ids[:5]]})
    assert r.status_code == 200 and r.json()["unknown_user"] and len(r.json()["items"]) == 3
    for payload, message in [({"user_id": user, "k": 0}, "greater than or equal to 1"),
                             ({"user_id": user, "k": 100000}, "less than or equal to"),
                             ({"user_id": user, "task": "nope"}, "unknown task 'nope'"),
                             ({"user_id": user, "candidates": []}, "at least 1"),
                             ({"k": 3}, "user_id"),
                             ({"user_id": "x"}, "user_id")]:
        r = client.post("/recommend", json=payload)
        assert r.status_code == 422 and message in r.text, (payload, r.text)


def test_reload_after_second_deployment(mmoe, tmp_path):
    """A new deployment moves the pointer; /reload swaps versions, in-flight requests keep the old one."""
    from fastapi.testclient import TestClient

    from ml_core.serving.app import create_app

    root = tmp_path / "root"
    shutil.copytree(mmoe.root, root)  # lake + registry: the flow can deploy again
    app = create_app(root, options=ServeOptions(admin_token=TOKEN))
    with TestClient(app, headers=ADMIN) as c:
        assert c.post("/reload").json() == {"version": mmoe.version, "previous": mmoe.version, "changed": False}
        in_flight = app.state.holder.current.scorer  # what a request that started now holds
        cfg = make_config(root, *OVERRIDES, 'train.model="mmoe"', "train.seed=1")
        second = deploy(cfg, root)["version"]
        assert second != mmoe.version
        assert c.get("/health").json()["version"] == mmoe.version  # no swap before /reload
        r = c.post("/reload")
        assert r.status_code == 200 and r.json() == {"version": second, "previous": mmoe.version, "changed": True}
        assert c.get("/health").json()["version"] == second and c.get("/model").json()["version"] == second
        assert in_flight.version == mmoe.version and in_flight.score([1], [1]).shape == (1, 2)
        body = c.post("/score", json={"pairs": [[1, 1]]}).json()
        assert body["version"] == second
    # a fixed bundle has nothing to reload
    with TestClient(create_app(BundleStore(root).version_dir(second), options=ServeOptions(admin_token=TOKEN)),
                    headers=ADMIN) as c:
        assert c.get("/model").json()["source"] == "bundle"
        assert c.post("/reload").status_code == 409


# -- CLI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_cli_batch_score(mmoe, scorer, tmp_path, fmt, capsys):
    from ml_core.cli import main

    g = scorer.graph
    rng = np.random.default_rng(5)
    n = 1234
    pairs = pl.DataFrame({"user_id": rng.choice(g.user_ids, n), "item_id": rng.choice(g.item_ids, n),
                          "request": np.arange(n)})
    pairs[7, "user_id"] = UNKNOWN
    src = tmp_path / f"pairs.{fmt}"
    pairs.write_parquet(src) if fmt == "parquet" else pairs.write_csv(src)
    out = tmp_path / "out" / "scores.parquet"
    assert main(["score", "--input", str(src), "--output", str(out), "--root", str(mmoe.serve_root),
                 "--chunk-rows", "500"]) == 0
    assert '"rows": 1234' in capsys.readouterr().out
    got = pl.read_parquet(out)
    assert got.columns == ["user_id", "item_id", "request", *(f"score_{t}" for t in scorer.tasks)]
    assert got["request"].to_list() == list(range(n)) and got["user_id"].to_list() == pairs["user_id"].to_list()
    # chunked scoring of MMoE = scoring everything at once
    want = scorer.score(pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy())
    np.testing.assert_allclose(got.select(f"score_{t}" for t in scorer.tasks).to_numpy(), want, atol=1e-6)
    # CSV output and --bundle work too
    out_csv = tmp_path / "scores.csv"
    assert main(["score", "--input", str(src), "--output", str(out_csv), "--bundle", str(scorer.bundle)]) == 0
    assert pl.read_csv(out_csv).height == n


def test_cli_errors(mmoe, tmp_path, capsys):
    from ml_core.cli import main

    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"uid": [1], "item_id": [2]}).write_parquet(bad)
    assert main(["score", "--input", str(bad), "--output", str(tmp_path / "o.parquet"),
                 "--root", str(mmoe.serve_root)]) == 1
    assert "missing column(s) ['user_id']" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()
    assert main(["score", "--input", str(bad), "--output", str(tmp_path / "o.parquet"),
                 "--root", str(tmp_path)]) == 1
    assert "no production model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--input", "x.parquet"])  # --output is required


def test_the_torch_threads_asked_for_stay_after_the_load(mmoe):
    """The snapshot indexes' parallel numba kernel starts OpenMP, which set torch's threads to
    every core: a server started with --threads 1 scored with 2 on the 2-core machine."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Scorer.from_registry(mmoe.serve_root, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
