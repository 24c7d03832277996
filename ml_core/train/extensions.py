"""Trainer extensions chosen by configuration: the optimizer and post-training steps.

* ``train.optimizer`` (default ``"adam"``) with ``train.optimizer_args``: a factory
  ``fn(model, cfg, contexts, **args) -> torch.optim.Optimizer``. ``adam`` optimises the model's
  :meth:`~ml_core.models.base.RecModel.param_groups` (one group by default; a model may give some
  parameters their own learning rate or weight decay, e.g. E2E-GRec's GradNorm weights).
* ``train.post_training`` (default ``[]``) with ``train.post_training_args = {name = {...}}``:
  steps ``fn(model, contexts, **args) -> dict`` run in order after the last epoch. A step changes
  the model in place, in parameters or buffers (so the saved bundle carries its result) and
  returns statistics for the run's metadata.

Both register as models do (:class:`~ml_core.typed.Registry`): one decorator on the function,
in any module of ``ml_core.train`` (imported on the first lookup), which also declares the
graphs it reads as models do, a :class:`~ml_core.models.base.GraphNeeds`
(``@OPTIMIZERS.register("sevo", graph_needs=GraphNeeds.DAY_GRAPHS)``, or ``NONE``): the trainer
then builds the days' channel adjacencies (``DayContext.channels``) even for a model that
samples no subgraph (:func:`training_graph_needs`).
"""

from __future__ import annotations

import torch

from ml_core.models.base import GraphNeeds
from ml_core.models.registry import model_class
from ml_core.typed import Registry

#: The modules of ml_core.train that register no extension (not imported by a lookup).
_TRAINER = {"trainer", "loop", "start", "validation", "warm", "distributed", "sparse_adam"}
#: ``train.optimizer``: ``fn(model, cfg, contexts, **train.optimizer_args) -> torch.optim.Optimizer``
OPTIMIZERS = Registry("optimizer", "ml_core.train", skip=_TRAINER)
#: ``train.post_training``: ``fn(model, contexts, **train.post_training_args[name]) -> dict``
POST_TRAINING = Registry("post-training step", "ml_core.train", skip=_TRAINER)
#: What this module imports by name, for the assets' code versions (assets/common.py).
__code_deps__ = ["ml_core.train"]


@OPTIMIZERS.register("adam", graph_needs=GraphNeeds.NONE)
def adam(model, cfg, contexts, sparse_embeddings: bool = True, **args):
    """Adam (the MoGE paper's optimiser) over ``model.param_groups(cfg)`` at ``cfg.lr`` /
    ``cfg.weight_decay`` (a group's own ``lr`` / ``weight_decay`` take precedence), with the
    embedding tables updated row-sparsely (:mod:`ml_core.train.sparse_adam`) unless
    ``sparse_embeddings`` is false or DDP runs on NCCL."""
    from ml_core.train import distributed as ddp
    from ml_core.train.sparse_adam import split_adam

    sparse = sparse_embeddings and ddp.current_backend() != "nccl"
    return split_adam(model, model.param_groups(cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, sparse=sparse, **args)



def make_optimizer(model, cfg, contexts) -> torch.optim.Optimizer:
    return OPTIMIZERS.lookup(cfg.optimizer)(model, cfg, contexts, **cfg.optimizer_args)


def run_post_training(model, cfg, contexts, log=None) -> dict[str, dict]:
    """Apply ``cfg.post_training`` in order; returns ``{step: stats}``."""
    out = {}
    for name in cfg.post_training:
        fn = POST_TRAINING.lookup(name)
        out[name] = fn(model, contexts, **cfg.post_training_args.get(name, {})) or {}
        if log:
            log(f"post-training {name}: {out[name]}")
    return out


def extension_graph_needs(cfg) -> GraphNeeds:
    """The graphs the configured optimizer and post-training steps read (their ``graph_needs``)."""
    fns = [OPTIMIZERS.lookup(cfg.optimizer), *(POST_TRAINING.lookup(n) for n in cfg.post_training)]
    return max(fn.graph_needs for fn in fns)


def training_graph_needs(cfg, model_cls: type | None = None) -> GraphNeeds:
    """What training ``cfg`` (a :class:`~ml_core.config.TrainConfig`; ``model_cls``: its model's
    class when already resolved) reads: the model's ``graph_needs`` combined with its extensions'.
    ``.day_graphs``: the training days need their channel adjacencies; ``.subgraphs``: the
    batches sample subgraphs."""
    return max((model_cls or model_class(cfg.model)).graph_needs, extension_graph_needs(cfg))


def validate(cfg) -> None:
    """Clear errors for unknown names (before any data is read)."""
    if cfg.optimizer not in OPTIMIZERS.load():
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS.names()}, got {cfg.optimizer!r}")
    bad = [n for n in cfg.post_training if n not in POST_TRAINING.load()]
    if bad:
        raise ValueError(f"unknown train.post_training steps {bad}; available: {POST_TRAINING.names()}")
    extra = set(cfg.post_training_args) - set(cfg.post_training)
    if extra:
        raise ValueError(f"train.post_training_args names steps not in train.post_training: {sorted(extra)}")
