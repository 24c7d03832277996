"""Power loss: what a write leaves if the machine stops at any moment. A power cut keeps only
what was flushed to the disk, so at every publishing rename (a power-loss point) everything the
rename makes visible must already be flushed, and the rename itself is flushed after it. The
writes are traced (``os.fsync`` and ``os.replace`` recorded with the paths they touch) instead of
cutting the power; the promotion's crash point between the pointer and its decision record is
simulated by leaving the append out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ml_core.storage as storage
from ml_core.registry.bundles import BundleStore
from ml_core.stages.deployment import recover_decision_log


@pytest.fixture
def trace(monkeypatch):
    """``[(op, path), ...]`` of every fsync (path of the descriptor) and rename (source, target)."""
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def traced_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def traced_replace(src, dst):
        events.append(("replace", f"{src} -> {dst}"))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    return events


def flushed_before(events, i: int) -> set[str]:
    return {p for op, p in events[:i] if op == "fsync"}


def test_a_partition_is_durable_at_its_rename(tmp_path, trace):
    target = tmp_path / "lake" / "asset" / "ds=2026-01-01"
    with storage.atomic_dir(target) as tmp:
        (tmp / "context" / "graph").mkdir(parents=True)  # nested, as a bundle's context/ is
        (tmp / "context" / "graph" / "indptr.npy").write_bytes(b"x" * 100)
        (tmp / "part-0.parquet").write_bytes(b"y" * 100)
        written = [p for p in tmp.rglob("*")]
        tmp_name = str(tmp)
    publish = next(i for i, (op, p) in enumerate(trace) if op == "replace" and p.startswith(tmp_name + " -> "))
    durable = flushed_before(trace, publish)
    missing = [str(p) for p in written if str(p) not in durable] + ([tmp_name] if tmp_name not in durable else [])
    assert missing == [], f"published before these were flushed: {missing}"
    assert ("fsync", str(target.parent)) in trace[publish + 1:], "the rename itself was not flushed"


def test_the_pointer_is_durable_at_its_rename(tmp_path, trace):
    path = tmp_path / "registry" / "production.json"
    storage.atomic_write_text(path, json.dumps({"version": "v1"}))
    i = next(i for i, (op, p) in enumerate(trace) if op == "replace" and p.endswith(f" -> {path}"))
    tmp = trace[i][1].split(" -> ")[0]
    assert tmp in flushed_before(trace, i), "the new pointer's bytes were not flushed before the rename"
    assert ("fsync", str(path.parent)) in trace[i + 1:], "the rename itself was not flushed"
    assert json.loads(path.read_text()) == {"version": "v1"} and not list(path.parent.glob(".tmp-*"))


def test_a_promotion_whose_decision_was_not_logged_is_logged_at_the_next_deployment(tmp_path):
    """The pointer moved, then the machine stopped before the decision's append: the pointer
    carries the decision, and the next deployment (its first step) logs it, once."""
    store = BundleStore(tmp_path)
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "model.pt").write_bytes(b"w")
    store.publish(bundle, "2026-01-03-0123456789")
    decision = {"partition": "2026-01-03", "version": "2026-01-03-0123456789", "promoted": True, "reasons": []}
    store.set_production("2026-01-03-0123456789", {"partition": "2026-01-03", "metrics": {}, "decision": decision})
    # ... and no store.record_decision(decision): the power-loss point
    assert store.decisions() == []
    recovered = recover_decision_log(store)
    assert recovered is not None and recovered["version"] == "2026-01-03-0123456789" and recovered["recovered"]
    assert [d["version"] for d in store.decisions()] == ["2026-01-03-0123456789"]
    assert recover_decision_log(store) is None and len(store.decisions()) == 1  # once
    store.record_decision({**decision, "partition": "2026-01-04", "version": "x", "promoted": False})
    assert recover_decision_log(store) is None  # a refusal after it changes nothing


def test_a_pointer_without_a_decision_needs_no_recovery(tmp_path):
    store = BundleStore(tmp_path)
    assert recover_decision_log(store) is None  # no pointer
    Path(store.root).mkdir(parents=True)
    store.pointer_path.write_text(json.dumps({"version": "v", "partition": "2026-01-01"}))  # promoted by hand
    assert recover_decision_log(store) is None and store.decisions() == []
