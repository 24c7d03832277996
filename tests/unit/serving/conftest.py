"""Fixtures of the serving tests: the deployed models (built once per session by the root
conftest's ``served_deployments``, see deployed.py)."""

from __future__ import annotations

import pytest

from ml_core.serving.scorer import Scorer
from tests.unit.serving.deployed import Deployment


@pytest.fixture(scope="session")
def deployments(served_deployments):
    return served_deployments


@pytest.fixture(scope="session")
def mmoe(deployments) -> Deployment:
    return deployments("mmoe")


@pytest.fixture(scope="session")
def scorer(mmoe) -> Scorer:
    return Scorer.from_registry(mmoe.serve_root)
