"""Where a training run starts: ``train.model`` resolved once (:class:`ModelChoice`) and the
weights it starts from (:class:`StartState`): a fresh model of the window's feature spec, or the
start model's weights grown into a fresh model of the grown spec (a warm start,
:mod:`ml_core.train.warm`), each with its reason in the manifest's ``init`` record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ml_core.contracts.spec import ModelSpec
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.models.base import RecModel
from ml_core.models.registry import model_class
from ml_core.train.warm import (
    StartModel,
    WarmStart,
    grown_feature_spec,
    open_start,
    restore_optimizer_state,
    scratch_init,
    transfer,
)
from ml_core.typed import build


@dataclass(frozen=True)
class ModelChoice:
    """``train.model`` and ``train.model_args`` resolved: the registered class, its configuration
    built and checked (:func:`~ml_core.models.registry.validate_model_args`: an unknown key or a bad
    value fails here, before any data is read)."""

    name: str
    cls: type[RecModel]
    config: Any

    @classmethod
    def of(cls, cfg) -> ModelChoice:
        """The choice of ``cfg`` (a :class:`~ml_core.config.TrainConfig`)."""
        model_cls = model_class(cfg.model)
        return cls(cfg.model, model_cls, cls.configure(model_cls, cfg.model_args))

    @staticmethod
    def configure(model_cls: type[RecModel], args) -> Any:
        """``model_cls``'s configuration built from ``args`` (a ``train.model_args`` mapping)."""
        return build(model_cls.config_cls, args or {}, "train.model_args")

    def new_model(self, spec: ModelSpec, args) -> RecModel:
        """A fresh model for ``spec``, configured by ``args`` (each model gets its own configuration)."""
        return self.cls(spec, self.configure(self.cls, args))


def fresh_model(cfg, fspec: FeatureSpec, choice: ModelChoice | None = None) -> tuple[RecModel, ModelSpec]:
    """``cfg.model`` (``choice``, resolved from ``cfg`` when not given) built on ``fspec`` from the
    seed ``cfg.seed`` (what every run starts from)."""
    choice = choice or ModelChoice.of(cfg)
    torch.manual_seed(cfg.seed)
    mspec = ModelSpec.from_feature_spec(fspec, cfg.dim, cfg.fanouts)
    return choice.new_model(mspec, cfg.model_args), mspec


@dataclass
class StartState:
    """The model a run trains and how it started: its feature and model specs, ``init`` (the
    manifest's record: ``mode`` warm / scratch, ``from``, ``from_version``, ``reason``; a warm start's
    ``grown`` vocabularies and, once restored, its ``optimizer``), and for a warm start the start
    model and the row maps of its grown tables (:func:`~ml_core.train.warm.transfer`)."""

    model: RecModel
    feature_spec: FeatureSpec
    model_spec: ModelSpec
    init: dict
    start: StartModel | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def warm(self) -> bool:
        return self.start is not None

    def prepare(self, contexts) -> None:
        """The model's set-up on the training ``contexts``: a fresh model's output biases set to the
        tasks' base rates (a warm start keeps its trained ones), then the model's own
        :meth:`~ml_core.models.base.RecModel.prepare`."""
        if not self.warm:
            self.model.set_task_priors(torch.from_numpy(np.concatenate([c.labels for c in contexts]).mean(axis=0)))
        self.model.prepare(contexts)  # per-model set-up that needs the data (default: nothing)

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, cfg) -> None:
        """A warm start's optimizer moments restored into ``optimizer`` when ``cfg.warm_start_optimizer``."""
        if self.warm and cfg.warm_start_optimizer:
            self.init["optimizer"] = restore_optimizer_state(optimizer, self.model, self.start, cfg.optimizer, self.maps)

    def describe(self) -> str:
        """``warm start from 2026-01-04 (+3 user ids, +0 item ids)`` or ``from scratch (reason)``."""
        if not self.warm:
            return f"from scratch ({self.init['reason']})"
        grown = self.init["grown"]
        return f"warm start from {self.init['from']} (+{grown['user_ids']['new']} user ids, +{grown['item_ids']['new']} item ids)"


def start_state(cfg, choice: ModelChoice, fspec: FeatureSpec, warm: WarmStart | None) -> StartState:
    """The start of training ``cfg`` (a TrainConfig, its model ``choice``) on data fitted as
    ``fspec``: the start model named by ``warm`` grown into a fresh model of the grown spec when it
    is compatible (:mod:`ml_core.train.warm`), else a fresh model of ``fspec`` with the reason."""
    start, init = open_start(warm, cfg, fspec, choice)
    if start is not None:
        grown = grown_feature_spec(start.fspec, fspec)
        model, mspec = fresh_model(cfg, grown, choice)
        try:
            init["grown"], maps = transfer(start, model, grown)
            return StartState(model, grown, mspec, init, start, maps)
        except ValueError as e:
            init = scratch_init(f"incompatible: {e}", init)
    model, mspec = fresh_model(cfg, fspec, choice)
    return StartState(model, fspec, mspec, init)
