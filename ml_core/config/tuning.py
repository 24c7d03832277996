"""The ``[tuning]`` section of the configuration (:mod:`ml_core.config`): the on-demand
hyper-parameter search of one model (``hyperparameter_search``, :mod:`ml_core.tuning`).

A parameter range is written ``[low, high]`` (uniform), ``[low, high, "log"]`` (log-uniform) or
``{choices = [...]}`` (categorical); an integer setting with integer bounds is searched over
integers. Names are ``[train]`` settings (``lr``, ``dim``, ``batch_size``...) or the model's
arguments written ``model_args.<name>`` (``model_args.n_experts``)::

    [tuning]
    model = "moge"
    trials = 8
    space = { lr = [1e-4, 1e-2, "log"], dim = { choices = [16, 32, 64] }, "model_args.l2" = [1e-4, 1e-2, "log"] }

An empty ``space`` is the model's default space: :data:`TRAIN_SPACE` plus its entry in
:data:`MODEL_SPACES`, or, for a model without one, a space derived from its config dataclass
(:func:`ml_core.tuning.default_space`). Whether the names and bounds fit the model is checked
when the configuration loads (:func:`ml_core.preflight.check_runnable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ml_core.typed import ConfigError, build

#: The ``[train]`` settings of every model's default space: the learning rate (the paper's 1e-4
#: up to 1e-2, log-uniform) and the representation size d.
TRAIN_SPACE: dict[str, Any] = {"lr": [1e-4, 1e-2, "log"], "dim": {"choices": [16, 32, 64]}}

#: Model arguments searched by default, per registered model (the rest: derived from the
#: model's config dataclass). MoGE: the L2 weight lambda (paper 1e-3) and the number of
#: graph-enhanced experts (1..4, one per graph interaction pair); MMoE: its experts; MGOE: its
#: experts and item clusters (k-means k).
MODEL_SPACES: dict[str, dict[str, Any]] = {
    "moge": {"model_args.l2": [1e-4, 1e-2, "log"], "model_args.n_experts": [1, 4]},
    "mmoe": {"model_args.n_experts": [2, 8]},
    "mmoe_graph": {"model_args.n_experts": [2, 8]},
    "mgoe": {"model_args.n_experts": [2, 8], "model_args.n_clusters": [5, 40]},
}


@dataclass
class ParamRange:
    """One searched parameter: ``low .. high`` (``log``: log-uniform) or one of ``choices``."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty choices list or low and high")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"expected low < high, got low={self.low}, high={self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")


def param_range(spec: Any, where: str) -> ParamRange:
    """``[low, high]``, ``[low, high, "log"]`` or a table ``{low, high, log}`` / ``{choices}``."""
    if isinstance(spec, (list, tuple)):
        if len(spec) == 3 and spec[2] in ("log", "linear"):
            spec = {"low": spec[0], "high": spec[1], "log": spec[2] == "log"}
        elif len(spec) == 2:
            spec = {"low": spec[0], "high": spec[1]}
        else:
            raise ConfigError(f'{where} = {spec!r}: expected [low, high], [low, high, "log"] or {{choices = [...]}}')
    if not isinstance(spec, dict):
        raise ConfigError(f'{where} = {spec!r}: expected [low, high], [low, high, "log"] or {{choices = [...]}}')
    return build(ParamRange, spec, where)


@dataclass
class TuningConfig:
    """The on-demand ``hyperparameter_search`` asset: trials train on the partition's training days
    but the last (D-T .. D-2) and are scored on the last (D-1); day D stays held out for the best
    and the default configuration, each trained on the whole window D-T .. D-1."""

    #: The registered model searched; empty = ``train.model`` (then its ``train.model_args`` are
    #: the defaults the trials start from; another model starts from its own defaults).
    model: str = ""
    #: Trials, each one training run. 8: a small search that ends in minutes on the synthetic data.
    trials: int = 8
    #: Trials drawn at random before TPE models the results (Optuna's default is 10).
    startup_trials: int = 4
    #: Seed of the TPE sampler and of every trial's training: the same seed gives the same trials.
    seed: int = 0
    #: What is maximised on the validation day: ``mean`` GAUC over the tasks, or one task's GAUC.
    metric: str = "mean"
    #: Per-trial budget (and that of the final best / default runs); 0 = the ``[train]`` value.
    epochs: int = 0
    max_steps_per_epoch: int = 0
    #: Parameter -> range (see the module docstring); empty = the model's default space.
    space: dict[str, Any] = field(default_factory=dict)
    #: Train the best and the default configuration on D-T .. D-1 and evaluate both on day D.
    evaluate_best: bool = True

    def __post_init__(self) -> None:
        if self.trials < 1 or self.startup_trials < 0 or self.epochs < 0 or self.max_steps_per_epoch < 0:
            raise ValueError("trials >= 1, startup_trials >= 0, epochs >= 0 and max_steps_per_epoch >= 0")
        self.ranges()

    def ranges(self) -> dict[str, ParamRange]:
        """``space`` parsed (its format only; :func:`ml_core.tuning.resolve_space` checks the names)."""
        return {name: param_range(spec, f"tuning.space.{name}") for name, spec in self.space.items()}

    def budget(self) -> dict[str, int]:
        return {k: v for k, v in (("epochs", self.epochs), ("max_steps_per_epoch", self.max_steps_per_epoch)) if v}
