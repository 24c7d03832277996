"""Fault injection 3: a truncated or corrupted partition file, and a corrupted model bundle.

Every partition records the size and sha256 of each of its files (``_FILES.json``) and readers
check it (:func:`ml_core.storage.verify_dir`): a damaged file fails the reading run with an error
that names the asset, the day, the file and how to rebuild the partition, and is never used. A
damaged bundle in the store is never served, never made production, and can be published again
from the lake.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from ml_core.config import load_config
from ml_core.registry.bundles import BundleStore
from ml_core.serving.scorer import Scorer
from ml_core.stages.deployment import republish, run_deployed_model
from ml_core.stages.graphs import run_window_graphs
from ml_core.stages.inputs import load_day_inputs
from ml_core.stages.windows import graph_window_days, window
from ml_core.storage import CorruptPartitionError, Lake, verify_dir
from tests.reliability.faults import (
    always_promote,
    copy_flow,
    corrupt_entries,
    data_lost,
    next_day,
    report,
    run_flow_here,
    run_outcomes,
    stored,
    wrong_models_served,
)


def _flip_byte(path, at: float = 0.5) -> None:
    """Bit rot: one byte of ``path`` changed in place (same size)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow  # the shared flow takes minutes to build
def test_truncated_training_samples_fail_the_model_run(flow, tmp_path, capsys, record_property):
    base, day = flow
    root = copy_flow(base, tmp_path) / "data"
    before = stored(root)
    prev = window(day, -1, -1)[0]  # a training day of the model of D
    _truncate(root / "lake" / "training_samples" / f"ds={prev}" / "part-0.parquet")

    rc, out, err = run_flow_here(tmp_path, day, 1, capsys)
    assert rc == 1
    for part in (f"training_samples partition {prev}", "part-0.parquet", "truncated", "--select training_samples",
                 f"--partition {prev}"):
        assert part in err, (part, err[-3000:])
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    [failed] = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]
    assert (failed.job_name, failed.tags["dagster/partition"]) == ("daily_model", day)
    events = [e for e in instance.all_logs(failed.run_id) if e.dagster_event and e.dagster_event.step_key == "trained_model"]
    started = min(e.timestamp for e in events if e.dagster_event.event_type == dg.DagsterEventType.STEP_START)
    detected = min(e.timestamp for e in events if e.dagster_event.event_type in (
        dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY))

    # what the error says: re-materialize that partition (here: its day's data job), then the day again
    assert run_flow_here(tmp_path, prev, 1, capsys)[0] == 0
    rc, out, err = run_flow_here(tmp_path, day, 1, capsys)
    assert rc == 0, err[-3000:]
    failed_ids, recovered = run_outcomes(instance, "daily_model", day)
    lost, wrong = data_lost(before, root), wrong_models_served(root)
    assert failed_ids == [failed.run_id] and len(recovered) == 1
    assert lost == [] and wrong == [] and corrupt_entries(root) == []
    report(record_property, "truncated Parquet file (training_samples of a training day)", failed=1, recovered=1,
           lost=lost, wrong=wrong, detection_s=detected - started, detected_by="the integrity check on read")


@pytest.mark.slow  # the shared flow takes minutes to build
def test_bit_flip_in_a_graph_is_detected_on_read(flow, tmp_path, record_property):
    base, day = flow
    root = copy_flow(base, tmp_path) / "data"
    cfg, lake = load_config(tmp_path / "pipeline.toml"), Lake(root)
    prev = window(day, -1, -1)[0]
    npy = sorted((root / "lake" / "bipartite_graph" / f"ds={prev}").glob("*.npy"))[0]
    size = npy.stat().st_size
    _flip_byte(npy)
    assert npy.stat().st_size == size
    t0 = time.perf_counter()
    with pytest.raises(CorruptPartitionError) as e:
        load_day_inputs(lake, prev)
    detection = time.perf_counter() - t0
    msg = str(e.value)
    assert f"bipartite_graph partition {prev}" in msg and npy.name in msg and "sha256" in msg
    assert "--select bipartite_graph,user_similarity_graph,item_similarity_graph" in msg  # one multi-asset
    assert "re-materialize window_graphs" in msg

    # day D's graphs are refreshed from D-1's: a corrupt D-1 is not refreshed from but rebuilt over
    out = run_window_graphs(cfg, lake, day, graph_window_days(cfg, day))
    assert out.mode == "full" and "corrupt" in out.bipartite.full_rebuild_reason

    run_window_graphs(cfg, lake, prev, graph_window_days(cfg, prev))  # the remedy: rebuild that day's graphs
    assert load_day_inputs(lake, prev).graph.days == graph_window_days(cfg, prev)
    assert corrupt_entries(root) == []
    report(record_property, "one byte flipped in a graph array (bipartite_graph)", failed=1, recovered=1,
           lost=[], wrong=wrong_models_served(root), detection_s=detection, detected_by="the integrity check on read")


@pytest.mark.slow  # the shared flow takes minutes to build
def test_corrupt_bundle_is_never_served(flow, tmp_path, monkeypatch, record_property):
    base, day = flow
    root = copy_flow(base, tmp_path) / "data"
    store = BundleStore(root)
    monkeypatch.setattr("ml_core.stages.deployment.gate", always_promote)  # D+1 promoted by a deployment
    version = run_deployed_model(load_config(tmp_path / "pipeline.toml"), Lake(root), next_day(day)).version
    assert store.production()["version"] == version
    good = Scorer.from_registry(root)
    _flip_byte(store.version_dir(version) / "model.pt", at=0.9)

    t0 = time.perf_counter()
    with pytest.raises(CorruptPartitionError, match=f"model bundle {version}.*model.pt.*moge republish {version}"):
        Scorer.from_registry(root)
    detection = time.perf_counter() - t0
    with pytest.raises(CorruptPartitionError):
        store.set_production(version, {"partition": next_day(day)})  # never (re)pointed at either
    served_wrong = [p for p in wrong_models_served(root) if "cannot load" not in p]  # refused, not served

    republish(Lake(root), version)  # the error's remedy: its copy in the lake
    verify_dir(store.version_dir(version), version, "")
    again = Scorer.from_registry(root)
    assert again.version == good.version
    assert (again.score([1, 2], [3, 4]) == good.score([1, 2], [3, 4])).all()
    wrong = wrong_models_served(root)
    assert served_wrong == [] and wrong == []
    report(record_property, "one byte flipped in the production bundle's weights", failed=1, recovered=1,
           lost=[], wrong=served_wrong + wrong, detection_s=detection,
           detected_by="the scorer's integrity check on load")
