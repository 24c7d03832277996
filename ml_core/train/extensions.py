"""Trainer extensions chosen by configuration: the optimizer and post-training steps.

* ``train.optimizer`` (default ``"adam"``) with ``train.optimizer_args``: a factory
  ``fn(model, cfg, contexts, **args) -> torch.optim.Optimizer``. ``adam`` optimises the model's
  :meth:`~ml_core.models.base.RecModel.param_groups` (one group by default; a model may give some
  parameters their own learning rate or weight decay, e.g. E2E-GRec's GradNorm weights).
* ``train.post_training`` (default ``[]``) with ``train.post_training_args = {name = {...}}``:
  steps ``fn(model, contexts, **args) -> dict`` run in order after the last epoch. A step changes
  the model in place, in parameters or buffers (so the saved bundle carries its result) and
  returns statistics for the run's metadata.

Every factory and step declares the graphs it reads as models do, with a
:class:`~ml_core.models.base.GraphNeeds` attribute (``fn.graph_needs = GraphNeeds.DAY_GRAPHS``,
or ``NONE``): the trainer then builds the days' channel adjacencies (``DayContext.channels``)
even for a model that samples no subgraph (:func:`training_graph_needs`). Registering one = one
line in the tables below, pointing at ``module:function`` (imported on first use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from ml_core.models.base import GraphNeeds
from ml_core.models.registry import model_class

OPTIMIZERS: dict[str, str] = {
    "adam": "ml_core.train.extensions:adam",
    "sevo": "ml_core.train.sevo:make_sevo",
}

POST_TRAINING: dict[str, str] = {
    "lightgode": "ml_core.train.lightgode:apply_lightgode",
}


def _resolve(table: dict[str, str], name: str, what: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; available: {sorted(table)}")
    module, _, fn = table[name].partition(":")
    return getattr(importlib.import_module(module), fn)


def adam(model, cfg, contexts, sparse_embeddings: bool = True, **args):
    """Adam (the MoGE paper's optimiser) over ``model.param_groups(cfg)`` at ``cfg.lr`` /
    ``cfg.weight_decay`` (a group's own ``lr`` / ``weight_decay`` take precedence), with the
    embedding tables updated row-sparsely (:mod:`ml_core.train.sparse_adam`) unless
    ``sparse_embeddings`` is false or DDP runs on NCCL."""
    from ml_core.train import distributed as ddp
    from ml_core.train.sparse_adam import split_adam

    sparse = sparse_embeddings and ddp.current_backend() != "nccl"
    return split_adam(model, model.param_groups(cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, sparse=sparse, **args)


adam.graph_needs = GraphNeeds.NONE


def make_optimizer(model, cfg, contexts) -> torch.optim.Optimizer:
    return _resolve(OPTIMIZERS, cfg.optimizer, "optimizer")(model, cfg, contexts, **cfg.optimizer_args)


def run_post_training(model, cfg, contexts, log=None) -> dict[str, dict]:
    """Apply ``cfg.post_training`` in order; returns ``{step: stats}``."""
    out = {}
    for name in cfg.post_training:
        fn = _resolve(POST_TRAINING, name, "post-training step")
        out[name] = fn(model, contexts, **cfg.post_training_args.get(name, {})) or {}
        if log:
            log(f"post-training {name}: {out[name]}")
    return out


def extension_graph_needs(cfg) -> GraphNeeds:
    """The graphs the configured optimizer and post-training steps read (their ``graph_needs``)."""
    fns = [_resolve(OPTIMIZERS, cfg.optimizer, "optimizer")]
    fns += [_resolve(POST_TRAINING, n, "post-training step") for n in cfg.post_training]
    return max(fn.graph_needs for fn in fns)


def training_graph_needs(cfg, model_cls: type | None = None) -> GraphNeeds:
    """What training ``cfg`` (a :class:`~ml_core.config.TrainConfig`; ``model_cls``: its model's
    class when already resolved) reads: the model's ``graph_needs`` combined with its extensions'.
    ``.day_graphs``: the training days need their channel adjacencies; ``.subgraphs``: the
    batches sample subgraphs."""
    return max((model_cls or model_class(cfg.model)).graph_needs, extension_graph_needs(cfg))


def validate(cfg) -> None:
    """Clear errors for unknown names (before any data is read)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {sorted(OPTIMIZERS)}, got {cfg.optimizer!r}")
    bad = [n for n in cfg.post_training if n not in POST_TRAINING]
    if bad:
        raise ValueError(f"unknown train.post_training steps {bad}; available: {sorted(POST_TRAINING)}")
    extra = set(cfg.post_training_args) - set(cfg.post_training)
    if extra:
        raise ValueError(f"train.post_training_args names steps not in train.post_training: {sorted(extra)}")
