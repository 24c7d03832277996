"""Can this configuration run? Checks that need more than the configuration layer.

:func:`ml_core.config.load_config` checks keys, types and the values it can judge alone. The
checks here need higher layers: the model registry, the training extensions and the source's
files. :func:`check_runnable` runs when the Dagster code location loads (assets/partitions.py)
and when the pipeline resource builds a run's configuration, so a wrong ``source.*`` or
``train.model`` is reported before any stage runs, not inside a run after the data stages.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from ml_core.config import PipelineConfig, SyntheticSource, load_config
from ml_core.typed import ConfigError

__all__ = ["check_runnable", "load_runnable_config"]


def _check_train(cfg: PipelineConfig) -> list[str]:
    from ml_core.models.registry import available_models, validate_model_args
    from ml_core.train import extensions

    problems = []
    models = available_models()
    if cfg.train.model not in models:
        problems.append(f"train.model = {cfg.train.model!r}: not a registered model; available: {models}")
    else:
        try:  # train.model_args against the model's config dataclass (keys, types, ranges)
            validate_model_args(cfg.train.model, cfg.train.model_args)
        except ValueError as exc:
            problems.append(str(exc))
    try:
        extensions.validate(cfg.train)  # train.optimizer, train.post_training(_args)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _check_tuning(cfg: PipelineConfig) -> list[str]:
    from ml_core.models.registry import available_models
    from ml_core.tuning import resolve_space

    problems = []
    if cfg.tuning.metric not in ("mean", *cfg.samples.tasks):
        problems.append(f"tuning.metric = {cfg.tuning.metric!r}: expected 'mean' or a task of {list(cfg.samples.tasks)}")
    if cfg.tuning.model or cfg.train.model in available_models():  # a bad train.model is reported once, above
        try:  # the searched model, and every name and bound of its space
            resolve_space(cfg.tuning, cfg.train)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def _check_source(cfg: PipelineConfig) -> list[str]:
    if isinstance(cfg.source, SyntheticSource):
        return []  # preset, seed, dates and timezone are checked at load
    from ml_core.data.attributes import check_attributes
    from ml_core.data.readers import check_file_source

    problems = []
    try:
        check_file_source(cfg.source)
    except (ValueError, OSError) as exc:
        problems.append(f"[source] kind {cfg.source.kind!r}: {exc}")
    for side in ("user", "item"):
        table = getattr(cfg.source, f"{side}_attributes")
        if table is not None:
            try:
                check_attributes(table, side)
            except (ValueError, OSError) as exc:
                problems.append(str(exc))
    return problems


def _check_registry(cfg: PipelineConfig) -> list[str]:
    if cfg.registry.backend == "mlflow" and importlib.util.find_spec("mlflow") is None:
        return ['registry.backend = "mlflow" needs the MLflow client: pip install -e ".[mlflow]" (mlflow-skinny)']
    return []


def check_runnable(cfg: PipelineConfig) -> None:
    """Raise :class:`~ml_core.typed.ConfigError` listing every problem that would stop a run:

    * ``train.model`` is not a registered model (``ml_core.models.registry.available_models()``);
    * ``train.optimizer`` / ``train.post_training`` / ``train.post_training_args`` name unknown
      training extensions;
    * ``tuning.model`` is not a registered model, ``tuning.metric`` is neither ``mean`` nor a task,
      or ``tuning.space`` names a setting that is not searchable or a bound its setting rejects;
    * a file source's layout is wrong (column mapping missing a required canonical column,
      unknown behaviour, bad ``ts_format`` or timezone), its ``path`` matches no file, a file
      cannot be opened, or a mapped column is not in a file's CSV header / Parquet schema
      (read with ``source.separator``);
    * a ``source.user_attributes`` / ``item_attributes`` table has no id or columns, its path
      matches no file, or its id or a mapped column is not in a file's header;
    * ``registry.backend = "mlflow"`` without the MLflow client installed.
    """
    problems = _check_train(cfg) + _check_tuning(cfg) + _check_source(cfg) + _check_registry(cfg)
    if problems:
        raise ConfigError("the configuration cannot run:\n" + "\n".join(f"  - {p}" for p in problems))


def load_runnable_config(
    path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> PipelineConfig:
    """:func:`~ml_core.config.load_config` followed by :func:`check_runnable`."""
    cfg = load_config(path, overrides)
    check_runnable(cfg)
    return cfg
