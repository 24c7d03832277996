"""trained_model with ``train.distributed``: launched out of process by torchrun through Dagster
Pipes (PipesSubprocessClient), rank 0's log and metadata streamed back, rank 0 the one writer."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
import torch

from ml_core.storage import Lake
from orchestration.definitions import FLOW_ASSETS
from orchestration.resources import PipelineResource, flow_resources
from tests.conftest import FAST, build_data_days, make_config

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]  # the model of the fourth day (the first) trains on days 2-3


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-flow")
    build_data_days(make_config(root), Lake(root), DAYS)
    return root


def _train(root, nproc: int):
    """Materialize trained_model[DAYS[-1]] into ``root`` with ``train.distributed.nproc = nproc``."""
    instance = dg.DagsterInstance.ephemeral()
    res = flow_resources(PipelineResource(overrides=[f'storage.root="{root}"', *FAST,
                                                     f"train.distributed={{nproc={nproc}}}",
                                                     'train.device="cpu"']))  # gloo ranks, also on a GPU host
    result = dg.materialize([*FLOW_ASSETS], selection=dg.AssetSelection.assets("trained_model"), partition_key=DAYS[-1], instance=instance, resources=res)
    assert result.success
    mat = result.asset_materializations_for_node("trained_model")[0]
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    return mat.metadata, logs, Lake(root).partition_dir("trained_model", DAYS[-1])


def _weights(part):
    return torch.load(part / "model.pt")


@pytest.mark.slow
def test_two_ranks_through_pipes_materialize_with_metadata(data_root, tmp_path):
    """torchrun x2 (gloo): the partition is written once (by rank 0), its manifest and the
    materialization say two ranks trained it, rank 0's training log arrived in the run's log."""
    root = tmp_path / "x2"
    shutil.copytree(data_root, root)
    md, logs, part = _train(root, 2)
    assert md["world_size"].value == 2 and md["samples_seen"].value > 0
    assert md["stopped_by"].value and md["device"].value == "cpu"
    assert "training_curve" in md and md["data_version"].value == Lake(root).version("trained_model", DAYS[-1])
    assert any("DDP rank 0 of 2" in m for m in logs), logs[-20:]  # streamed by rank 0 through Pipes
    assert not any("rank 1 of 2" in m for m in logs)  # the other rank logs nothing
    assert json.loads((part / "manifest.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_one_rank_through_pipes_is_the_in_process_model(data_root, tmp_path):
    """nproc = 1: torchrun, Pipes and DDP with one rank store the very weights of the in-process asset."""
    a, b = tmp_path / "inproc", tmp_path / "x1"
    shutil.copytree(data_root, a)
    shutil.copytree(data_root, b)
    md_a, _, part_a = _train(a, 0)
    md_b, _, part_b = _train(b, 1)
    wa, wb = _weights(part_a), _weights(part_b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert md_b["world_size"].value == 1 and md_a["world_size"].value == 1
    assert md_a["epoch_losses"].value == md_b["epoch_losses"].value
    assert set(md_a) == set(md_b)  # the same metadata keys either way
