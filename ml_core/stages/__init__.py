"""The stages of the daily flow as plain functions: read the lake, compute, write the lake.

One module per stage (:mod:`.logs`, :mod:`.graphs`, :mod:`.features`, :mod:`.samples`,
:mod:`.training`, :mod:`.evaluation`, :mod:`.deployment` with its pure :mod:`.gate`, and the
on-demand :mod:`.comparison`). Each ``run_*`` takes the config, the :class:`~ml_core.storage.Lake`,
the partition day and the upstream days it reads (the orchestration layer derives them from its
partition mappings, scripts from :mod:`.windows`), writes its partition atomically and returns a
dataclass (what the asset turns into metadata). :mod:`.data_day` runs a day's data stages in
order; :mod:`.inputs` reads stored partitions. Nothing here imports dagster.
"""

from ml_core.stages.comparison import ComparisonResult, run_model_comparison
from ml_core.stages.data_day import run_data_day, run_data_days
from ml_core.stages.deployment import DeploymentResult, run_deployed_model
from ml_core.stages.evaluation import (
    EvaluationResult,
    gauc_table,
    judge_against_references,
    load_evaluation,
    run_model_evaluation,
)
from ml_core.stages.features import FeaturesResult, run_node_features
from ml_core.stages.gate import Decision, gate
from ml_core.stages.graphs import GraphsResult, run_window_graphs
from ml_core.stages.inputs import (
    load_bipartite,
    load_day_inputs,
    load_features,
    load_similarity,
    scan_logs,
)
from ml_core.stages.logs import LogsResult, run_interaction_logs
from ml_core.stages.samples import SamplesResult, run_training_samples
from ml_core.stages.training import TrainingResult, run_trained_model
from ml_core.stages.windows import Window, graph_window_days, train_window_days, window

__all__ = [
    "ComparisonResult", "Decision", "DeploymentResult", "EvaluationResult", "FeaturesResult", "GraphsResult",
    "LogsResult", "SamplesResult", "TrainingResult", "Window", "gate", "gauc_table", "graph_window_days",
    "judge_against_references", "load_bipartite", "load_day_inputs", "load_evaluation", "load_features", "load_similarity",
    "run_data_day", "run_data_days", "run_deployed_model", "run_interaction_logs", "run_model_comparison",
    "run_model_evaluation", "run_node_features", "run_trained_model", "run_training_samples",
    "run_window_graphs", "scan_logs", "train_window_days", "window",
]
