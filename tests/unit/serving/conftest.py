"""Fixtures of the serving tests: the deployed models (built once per session, see deployed.py)."""

from __future__ import annotations

import shutil

import pytest

from ml_core.serving.scorer import Scorer
from ml_core.storage import Lake
from tests.conftest import build_data_days, make_config
from tests.unit.serving.deployed import DAYS, MODEL_OVERRIDES, OVERRIDES, Deployment, deploy


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-data")
    build_data_days(make_config(root, *OVERRIDES), Lake(root), DAYS)
    return root


@pytest.fixture(scope="session")
def deployments(data_root, tmp_path_factory):
    cache: dict[str, Deployment] = {}

    def get(model: str) -> Deployment:
        if model not in cache:
            root = tmp_path_factory.mktemp(f"flow-{model}")
            shutil.copytree(data_root / "lake", root / "lake")
            cfg = make_config(root, *OVERRIDES, f'train.model="{model}"', *MODEL_OVERRIDES.get(model, []))
            decision = deploy(cfg, root)
            serve_root = tmp_path_factory.mktemp(f"serve-{model}")
            shutil.copytree(root / "registry", serve_root / "registry")
            cache[model] = Deployment(model, root, serve_root, cfg, decision["version"])
        return cache[model]

    return get


@pytest.fixture(scope="session")
def mmoe(deployments) -> Deployment:
    return deployments("mmoe")


@pytest.fixture(scope="session")
def scorer(mmoe) -> Scorer:
    return Scorer.from_registry(mmoe.serve_root)
