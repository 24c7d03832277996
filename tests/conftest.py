"""Shared fixtures: small configs on temp lakes, and the real-data location."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# A small, fast budget: the flow's code paths with a few optimiser steps.
FAST = ["graph.window_days=3", "train.train_days=2", "train.epochs=1", "train.max_steps_per_epoch=40",
        "train.batch_size=512", "train.dim=16"]

# The code location reads its windows from $MOGE_CONFIG when it loads: point it at the test
# settings before anything imports the Definitions (storage roots are overridden per test).
_cfg_file = Path(tempfile.mkdtemp(prefix="moge-test-")) / "pipeline.toml"
_cfg_file.write_text(
    '[source]\nkind = "synthetic"\nstart_date = "2026-01-01"\n'
    "[graph]\nwindow_days = 3\n[train]\ntrain_days = 2\n"
    f'[storage]\nroot = "{_cfg_file.parent / "data"}"\n'
)
os.environ["MOGE_CONFIG"] = str(_cfg_file)

from ml_core import pipeline as P
from ml_core.config import load_config
from ml_core.storage import Lake

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TAOBAO_HEAD = SHARED_DATA / "taobao-userbehavior" / "UserBehavior_head_84475.csv"

def make_config(root: Path, *overrides: str):
    return load_config(None, [f'storage.root="{root}"', *FAST, *overrides])


def build_data_days(cfg, lake: Lake, days: list[str]) -> None:
    """Materialize the data stages (logs .. samples) of ``days`` in order."""
    for d in days:
        P.run_data_day(cfg, lake, d)


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory):
    """Five days of the default synthetic source through the data stages (shared, read-only)."""
    root = tmp_path_factory.mktemp("lake")
    cfg = make_config(root)
    lake = Lake(root)
    days = P.window("2026-01-05", -4, 0)
    build_data_days(cfg, lake, days)
    return cfg, lake, days
