"""The model contract: :class:`RecModel`, the base class of every registered model.

A model is built as ``cls(spec, config)`` (:mod:`ml_core.models.registry`; ``config`` an instance
of the dataclass the model registers with, next to the model, built from ``train.model_args`` by
:func:`ml_core.typed.build`: a wrong key or type names the key), takes a
:class:`~ml_core.contracts.batch.Batch` and returns per-task logits ``[B, K]``. What the trainer,
its extensions, inference and serving ask of a model is declared here, with defaults:

* :attr:`RecModel.graph_needs` - which graphs the model reads (:class:`GraphNeeds`): the one
  declaration the trainer, the training extensions and serving all read.
* :meth:`RecModel.prepare` - set-up from the training days, before the first step;
  :meth:`RecModel.training_fanouts` - the hops training batches are sampled with.
* :attr:`RecModel.reads_day_graph_at_inference` and :meth:`RecModel.prepare_inference` - a model
  that reads the scored day's whole graph once before scoring it (LightGODE's ODE).
* :meth:`RecModel.encode_nodes` and :meth:`RecModel.score_encoded` - inference from node
  representations computed once per node and day (:mod:`ml_core.contracts.reps`).
* :meth:`RecModel.build_history_input` and :meth:`RecModel.with_history` - the user's own
  history with the candidate (:mod:`ml_core.history`): the pair input ``r_ui`` (what the user did
  with the item and its category in the window) and the behaviour sequence attended against the
  item ``s(u, i)`` (:mod:`ml_core.nn.sequence`), built and read the same way by every model.
* :meth:`RecModel.param_groups` - the optimiser's parameter groups.
* :meth:`RecModel.compute_loss` - ``(logits, loss, parts)`` of a batch.
* :meth:`RecModel.set_task_priors` - output biases at the tasks' base rates.
* :attr:`RecModel.warm_start_blocker` and :attr:`RecModel.derived_state` - whether and how a
  trained model starts the next day's training (:mod:`ml_core.train.warm`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ml_core.contracts.reps import NodeReps
from ml_core.nn.dense import MLP, TaskTowers
from ml_core.typed import build


def check_sizes(**sizes: list[int] | None) -> None:
    """ValueError unless every given list of layer sizes holds positive sizes (None = not given)."""
    for name, v in sizes.items():
        if v is not None and any(h < 1 for h in v):
            raise ValueError(f"{name} must be a list of positive layer sizes, got {v!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """ValueError unless ``value`` is one of ``choices`` (the layer's or function's own list)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class GraphNeeds(enum.IntEnum):
    """Which graphs a model (or a training extension) reads; ordered, so needs combine by ``max``.

    * ``NONE`` - no graph: the days' contexts carry no adjacency, batches no subgraph.
    * ``DAY_GRAPHS`` - the training days' whole channel adjacencies (``DayContext.channels``), read
      outside the batches (in :meth:`RecModel.prepare`, an optimiser or a post-training step);
      batches carry no subgraph. Whether inference reads the scored day's whole graph is the
      separate declaration :attr:`RecModel.reads_day_graph_at_inference` (LightGODE: its ODE
      integrates over the scored day's graph in :meth:`RecModel.prepare_inference`).
    * ``SUBGRAPHS`` - every batch, in training and at inference, carries sampled channel
      subgraphs (``Batch.channels``), so every day's context needs its adjacencies.
    """

    NONE = 0
    DAY_GRAPHS = 1
    SUBGRAPHS = 2

    @property
    def day_graphs(self) -> bool:
        """Training days need their channel adjacencies built."""
        return self >= GraphNeeds.DAY_GRAPHS

    @property
    def subgraphs(self) -> bool:
        """Batches (training and inference) sample channel subgraphs; inference reads graphs."""
        return self >= GraphNeeds.SUBGRAPHS


class RecModel(nn.Module):
    """Base class: ``forward(batch) -> logits [B, K]``; the hooks below have defaults.

    Class attributes: ``graph_needs`` (:class:`GraphNeeds`, default ``NONE``); ``registry_name``
    and ``config_cls`` (the model's config dataclass), both set by
    :func:`~ml_core.models.registry.register`.
    """

    graph_needs: ClassVar[GraphNeeds] = GraphNeeds.NONE
    config_cls: ClassVar[type | None] = None
    #: True for a model that integrates LightGODE's graph ODE itself (``attach_graph(contexts)``):
    #: the ``lightgode`` post-training step then hands it the graph instead of integrating
    integrates_graph_ode: ClassVar[bool] = False
    #: True for a model that reads the scored day's whole channel adjacencies
    #: (``DayContext.channels`` of day D: graph[D], built from days before D only) at inference,
    #: through :meth:`prepare_inference`; inference then builds the scored day's context with its
    #: graphs even when the batches sample no subgraph (:func:`ml_core.inference.inference_needs_graph`)
    reads_day_graph_at_inference: ClassVar[bool] = False
    #: Why the model's weights cannot start the next window's training (``train.warm_start``), or
    #: None: they can. Its vocabulary-indexed rows are those of its FeatureEncoders; any other
    #: state that depends on the training window must be declared here or in :attr:`derived_state`
    #: (:mod:`ml_core.train.warm`)
    warm_start_blocker: ClassVar[str | None] = None
    #: ``state_dict`` entries the model re-derives from the data (in :meth:`prepare` or when
    #: switched to eval mode): a warm start leaves them at a fresh model's values
    derived_state: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def configure(cls, config: Any = None, args: Mapping[str, Any] | None = None) -> Any:
        """The model's configuration: ``config`` as given, or built from keyword ``args`` by
        :func:`ml_core.typed.build` (keys and types checked, errors name ``<Class>.<key>``), so
        ``Model(spec, config)`` and ``Model(spec, key=value, ...)`` are the same model."""
        if config is None:
            return build(cls.config_cls, args or {}, cls.__name__)
        if args:
            raise TypeError(f"{cls.__name__}: pass a config or keyword arguments, not both")
        if not isinstance(config, cls.config_cls):
            raise TypeError(f"{cls.__name__} takes a {cls.config_cls.__name__}, got {type(config).__name__}")
        return config

    def build_history_input(self, spec) -> int:
        """Build what reads the user's history with the candidate, as the model's spec has it:
        the pair encoder ``r_ui = LeakyReLU(W_r x_ui + b_r)`` (``[B, d]``, when ``spec.n_pair >
        0``; ``x_ui`` the scaled :func:`~ml_core.history.pair_features` of the sample) and the
        sequence block ``s(u, i)`` (``[B, d]``, when ``spec.seq_len > 0``,
        :class:`~ml_core.nn.sequence.TargetAttention`). Returns the size they add (0 for neither)."""
        from ml_core.nn.sequence import TargetAttention

        self.pair_enc = MLP(spec.n_pair, [spec.dim]) if spec.n_pair else None
        self.seq_enc = TargetAttention(spec.item.n_ids, spec.dim) if spec.seq_len else None
        return spec.dim * (bool(spec.n_pair) + bool(spec.seq_len))

    def history_input(self, batch) -> list[torch.Tensor]:
        """``[r_ui]``, ``[s(u, i)]``, both or none (each ``[B, d]``), as built."""
        return self.history_of(batch.pair, batch.seq, lambda: batch.item.ids)

    def history_of(self, pair, seq, item_ids) -> list[torch.Tensor]:
        """:meth:`history_input` of a batch's ``pair`` ``[B, P]`` and ``seq`` (``Sequences``
        ``[B, N]``); ``item_ids()`` gives the candidates' item ids (read by the sequence block only)."""
        out = []
        for name, x, part in (("pair", pair, "pair_enc"), ("seq", seq, "seq_enc")):
            enc = getattr(self, part, None)  # None: never built (LightGODE) or built without it
            if enc is None:
                continue
            if x is None:
                raise ValueError(f"{type(self).__name__} reads a {name} input (its feature spec has one) but the "
                                 "batch has none: build the day context with the model's feature spec")
            out.append(enc(x) if name == "pair" else enc(x, item_ids()))
        return out

    def with_history(self, x: torch.Tensor, batch) -> torch.Tensor:
        """``[x || r_ui || s(u, i)]`` (the parts the model has; ``x`` unchanged for neither)."""
        parts = self.history_input(batch)
        return torch.cat([x, *[p.to(x.dtype) for p in parts]], dim=-1) if parts else x

    def prepare(self, contexts) -> None:
        """Set-up that needs the training days (``list[DayContext]``), called by the trainer after
        :meth:`set_task_priors` and before the optimiser is built (e.g. the training-set size
        ``|H|`` of MoGE's L2 and SNR-Trans's L0 terms, MGOE's clusters and macro graphs,
        LightGODE's graph). Default: nothing."""

    def training_fanouts(self, fanouts: list[int]) -> list[int]:
        """The fan-outs the trainer samples training batches with (``train.fanouts``; inference
        always samples all of them). Default: ``fanouts``."""
        return list(fanouts)

    def prepare_inference(self, ctx) -> None:
        """Set-up from the scored day's :class:`~ml_core.contracts.day.DayContext`, called by
        :func:`ml_core.inference.predict` (evaluation, comparison, serving) after ``model.eval()``
        and before the first batch; ``ctx.channels`` holds the day's graphs when
        :attr:`reads_day_graph_at_inference` is set (and may be empty for a caller that built the
        context without them). Default: nothing."""

    def encode_nodes(self, ctx, fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
        """Every node of ``ctx`` (a :class:`~ml_core.contracts.day.DayContext`) encoded once: the
        representations :meth:`score_encoded` scores pairs from (call in eval mode, after
        :meth:`prepare_inference`). A graph model runs its layers layer by layer over all nodes
        (:func:`ml_core.batching.layer_edges`): ``fanouts=None`` reads every neighbour, a list
        draws that many per node and layer, seeded by ``seed``. Default (a model that reads no
        subgraph): the node inputs themselves, no representation."""
        return NodeReps(ctx.users, ctx.items)

    def score_encoded(self, reps: NodeReps, user_rows: torch.Tensor, item_rows: torch.Tensor,
                      pair: torch.Tensor | None = None, seq=None) -> torch.Tensor:
        """Logits ``[B, K]`` of the pairs ``(user_rows[b], item_rows[b])`` (node-space rows of
        ``reps``) with their pair input ``pair`` ``[B, P]`` and their users' sequences ``seq``
        (``Sequences`` ``[B, N]``; None: the model reads none): ``forward`` of the batch whose
        ``reps`` hold the pairs' precomputed vectors."""
        return self(reps.batch(user_rows, item_rows, pair=pair, seq=seq))

    def scoring_reps(self, reps: NodeReps) -> NodeReps:
        """``reps`` (from :meth:`encode_nodes`) with whatever :meth:`score_encoded` can precompute
        per node added (e.g. :func:`~ml_core.models.precompute.project_nodes`); call once per
        day or snapshot, in eval mode. Default: ``reps`` as they are."""
        return reps

    def param_groups(self, cfg) -> list[dict]:
        """Parameter groups for the configured optimiser (``train.optimizer = "adam"``); ``cfg`` is
        the :class:`~ml_core.config.TrainConfig`. Default: one group of every parameter, at the
        optimiser's ``lr`` and ``weight_decay``."""
        return [{"params": list(self.parameters())}]

    @torch.no_grad()
    def set_task_priors(self, rates: torch.Tensor) -> None:
        """Initialise output biases to ``logit(rate_k)`` (called by the trainer before step 1)."""
        logits = torch.logit(rates.clamp(1e-4, 1 - 1e-4))
        for m in self.modules():
            if isinstance(m, TaskTowers):
                m.init_bias(logits)

    def compute_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(logits, loss, parts): default = sum over tasks of the mean BCE."""
        logits = self(batch)
        per_task = bce_per_task(logits, batch.labels)
        loss = per_task.sum()
        return logits, loss, {f"bce_{k}": float(v) for k, v in enumerate(per_task.detach())}


def bce_per_task(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each task, ``[K]``."""
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(dim=0)

