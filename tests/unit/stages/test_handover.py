"""The evaluation hands the deployment files, never memory: evaluated and decided in separate
processes, day D gets the decision and the judged evaluation it gets in one, from the same
evaluation (its node representations, what a promoted bundle would carry, included)."""

import json
import shutil
import subprocess
import sys

from ml_core import stages as P
from ml_core.stages.evaluation import SNAPSHOT_FILE
from ml_core.stages.inputs import cached_scoring_days
from ml_core.storage import Lake
from tests.conftest import REPO, make_config
from tests.unit.serving.deployed import MODEL_OVERRIDES, OVERRIDES, D

#: MoGE (its references score on graph[D]), as the serving tests deploy it
MOGE = [*OVERRIDES, 'train.model="moge"', *MODEL_OVERRIDES["moge"]]

_EVALUATE = """
import sys
from ml_core import stages as P
from ml_core.storage import Lake
from tests.conftest import make_config
root, day, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
P.run_model_evaluation(make_config(root, *overrides), Lake(root), day)
"""


def _outcome(lake: Lake, day: str) -> dict:
    """What the deployment of ``day`` left (its decision, the judged evaluation) and the evaluation
    it read (its metrics and its node representations, as bytes)."""
    dep, ev = lake.checked_dir("deployed_model", day), lake.checked_dir("model_evaluation", day)
    return {"decision": json.loads((dep / "decision.json").read_text()),
            "judged": json.loads((dep / "evaluation.json").read_text()),
            "evaluation": json.loads((ev / "evaluation.json").read_text()),
            "node_reps": (ev / SNAPSHOT_FILE).read_bytes()}


def test_evaluation_and_deployment_in_separate_processes_decide_as_in_one(served_deployments, tmp_path):
    """Day D evaluated again and decided against the production model (trained_model[D] itself,
    published by the serving tests' flow): in one process, and with the evaluation in another."""
    base = served_deployments("moge").root
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(base, one)
    shutil.copytree(base, two)

    # one process: the deployment's reference scoring reuses the day the evaluation read
    P.run_model_evaluation(make_config(one, *MOGE), Lake(one), D)
    assert cached_scoring_days() == 1
    P.run_deployed_model(make_config(one, *MOGE), Lake(one), D)
    assert cached_scoring_days() == 0
    # two processes: the evaluation in a child, the deployment here (which reads the day itself)
    subprocess.run([sys.executable, "-c", _EVALUATE, str(two), D, *MOGE], cwd=REPO, check=True)
    P.run_deployed_model(make_config(two, *MOGE), Lake(two), D)

    alone, apart = _outcome(Lake(one), D), _outcome(Lake(two), D)
    assert alone["judged"]["references"] and alone["decision"]["production_before"]  # judged against production
    assert alone == apart
