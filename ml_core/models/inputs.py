"""What the multi-task baselines read: raw features, or the MGNN representation ("+Graph").

MoGE paper section 5.2: every multi-task baseline (Shared-Bottom, Cross-Stitch, ESMM, MMoE,
SNR-Trans, CGC) also runs as a "+Graph" variant "that takes the MGNN module's output as its
input". One body class serves both: a body builds its input with
``in_dim = self.build_input(spec, config)`` and reads ``x = self.model_input(batch)``;
which input it gets is decided by the input class it inherits from:

.. math::
    \\text{FeatureInput:}\\quad x = [p_u \\| q_i] \\in \\mathbb{R}^{2d},
        \\qquad p_u = x_u P,\\ q_i = x_i Q

    \\text{GraphInput:}\\quad x = [h_u \\| h_i \\| s_u \\| s_i] \\in \\mathbb{R}^{4d},
        \\qquad (h_u, h_i, s_u, s_i) = \\mathrm{MGNN}(u, i)

and, when the model's feature spec has a pair input (``train.pair_features``, the default), the
pair's history ``r_ui`` (:meth:`~ml_core.models.base.RecModel.pair_input`, ``[B, d]``) is
appended to either: ``x = [p_u || q_i || r_ui]``.

Choices (the paper gives none):

* GraphInput feeds all four MGNN outputs (bipartite channel ``h``, similarity channels ``s``),
  the same four vectors MoGE's experts read, and *not* ``p_u``, ``q_i``: the variant's input is
  the MGNN representation "instead of" the features. The raw features still reach it through
  ``h^0`` (each MGNN layer's gated combine keeps part of the node's own state).
* The MGNN reads the body's own shared transforms ``P``, ``Q`` (as in MoGE): one set of
  feature encoders per model, trained end to end with the MGNN and the body.
* The MGNN options (:class:`GraphInputConfig`) are those of :class:`~ml_core.models.mgnn.MGNN`:
  ``layers`` (default ``len(spec.fanouts)``), ``combine`` (``gru``), ``channels`` (all three);
  ``graph_features`` picks the concatenated vectors among ``p_u, q_i, h_u, h_i, s_u, s_i``
  (default the four above; adding ``p_u, q_i`` is the "features + graph" reading). The
  variant's configuration is the body's with these fields added; the body alone rejects them.
* Start-up: the MGNN representation varies between samples about as much as ``p_u`` at
  initialisation (between-sample std 0.24-0.40 against 0.33-0.54 for ``p_u``, ``q_i`` on the
  planted zoo data), so the
  variants learn from the first epoch like their feature-only bodies. It did not with torch's
  default GRU initialisation and categorical embeddings at std 0.05 (a ~2-epoch loss plateau);
  see :class:`~ml_core.nn.graph.GatedCombine` and ``FeatureEncoder.reset_parameters``.

Parameter names: the encoders are ``user_enc`` / ``item_enc`` and the MGNN ``mgnn`` directly
on the model (MMoE's state-dict keys are the ones MoGE's ``use_mgnn=False`` reduction loads).

:func:`register_with_graph` registers a body under ``name`` (FeatureInput) and its "+Graph"
variant under ``name + "_graph"``: a subclass with :class:`GraphInput` first in its bases, so
``build_input`` / ``model_input`` resolve to the graph versions and nothing else changes, and a
configuration dataclass with the body's fields and :class:`GraphInputConfig`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ml_core.contracts.batch import CHANNELS
from ml_core.contracts.reps import NodeReps
from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import GraphNeeds, RecModel, check_choice
from ml_core.models.mgnn import MGNN, REPRESENTATIONS, encode_day
from ml_core.models.registry import register
from ml_core.nn.dense import FeatureEncoder
from ml_core.nn.graph import GatedCombine

#: the MGNN outputs a GraphInput concatenates by default, in this order
GRAPH_FEATURES = ("h_u", "h_i", "s_u", "s_i")


@dataclass
class GraphInputConfig:
    """The MGNN options of a "+Graph" variant (added to its body's configuration)."""

    #: MGNN layers L; None = ``len(spec.fanouts)``, one layer per sampled hop (MoGE section 4.4)
    layers: int | None = None
    #: MGNN's combine ``f(h, m)``: a GRU cell (MoGE's "LSTM-like operator", section 4.1; see GatedCombine)
    combine: str = "gru"
    #: channels read; None = all three (MoGE section 4.1)
    channels: list[str] | None = None
    #: concatenated MGNN outputs; None = ``h_u, h_i, s_u, s_i`` (the vectors MoGE's experts read)
    graph_features: list[str] | None = None

    def __post_init__(self) -> None:
        check_choice("combine", self.combine, GatedCombine.KINDS)
        features = self.graph_features
        if features is not None and (not features or len(set(features)) != len(features)
                                     or not set(features) <= set(REPRESENTATIONS)):
            raise ValueError(f"graph_features must be distinct names among {REPRESENTATIONS}, got {features}")


class FeatureInput(RecModel):
    """Input ``x = [p_u || q_i]`` (``[B, 2d]``) from the shared feature transforms P, Q."""

    graph_needs = GraphNeeds.NONE

    def build_input(self, spec: ModelSpec, config) -> int:
        """Build the input's modules on ``self``; returns the input size (``config``: the model's)."""
        self.user_enc = FeatureEncoder(spec.user, spec.dim)  # P
        self.item_enc = FeatureEncoder(spec.item, spec.dim)  # Q
        return 2 * spec.dim + self.build_history_input(spec)

    #: the node vectors ``x`` starts with, in order (what :mod:`~ml_core.models.precompute` projects)
    input_blocks = ("p_u", "q_i")

    def model_input(self, batch) -> torch.Tensor:
        if batch.reps is not None:  # precomputed by encode_nodes
            x = torch.cat([batch.reps["p_u"], batch.reps["q_i"]], dim=-1)  # [B, 2d]
        else:
            x = torch.cat([self.user_enc(batch.user), self.item_enc(batch.item)], dim=-1)  # [B, 2d]
        return self.with_history(x, batch)  # [B, 2d (+ d)]

    @torch.no_grad()
    def encode_nodes(self, ctx, fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
        """Every node's ``p_u = x_u P`` / ``q_i = x_i Q`` (no graph)."""
        return NodeReps(ctx.users, ctx.items, {"p_u": self.user_enc(ctx.users)}, {"q_i": self.item_enc(ctx.items)})


class GraphInput(FeatureInput):
    """Input ``x = [h_u || h_i || s_u || s_i]`` (``[B, 4d]``) from an MGNN over the batch's
    sampled subgraphs, reading the model's own P, Q (see the module docstring)."""

    graph_needs = GraphNeeds.SUBGRAPHS

    def build_input(self, spec: ModelSpec, config: GraphInputConfig) -> int:
        features = tuple(config.graph_features or GRAPH_FEATURES)
        history_dim = super().build_input(spec, config) - 2 * spec.dim
        self.mgnn = MGNN(spec, layers=config.layers, channels=tuple(config.channels or CHANNELS),
                         combine=config.combine, user_enc=self.user_enc, item_enc=self.item_enc)
        self.graph_features = self.input_blocks = features
        return len(features) * spec.dim + history_dim

    def model_input(self, batch) -> torch.Tensor:
        reps = self.mgnn.representations(batch)  # each [B, d]
        return self.with_history(torch.cat([reps[k] for k in self.graph_features], dim=-1), batch)  # [B, 4d (+ d)]

    def encode_nodes(self, ctx, fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
        """Every node's MGNN outputs, layer-wise over the day (:func:`~ml_core.models.mgnn.encode_day`)."""
        return encode_day(self.mgnn, ctx, fanouts, seed)


def _graph_config(config_cls: type) -> type:
    """The "+Graph" variant's configuration: ``config_cls``'s fields and :class:`GraphInputConfig`'s,
    both ``__post_init__`` checks."""

    def post_init(self) -> None:
        config_cls.__post_init__(self)
        GraphInputConfig.__post_init__(self)

    return dataclasses.make_dataclass(f"{config_cls.__name__.removesuffix('Config')}GraphConfig", [],
                                      bases=(config_cls, GraphInputConfig), namespace={"__post_init__": post_init})


def register_with_graph(name: str, config_cls: type):
    """Register a :class:`FeatureInput` body as ``name`` (configured by ``config_cls``, which
    must define ``__post_init__``) and its "+Graph" variant as ``name_graph``."""

    def deco(cls: type[FeatureInput]) -> type[FeatureInput]:
        if not issubclass(cls, FeatureInput) or issubclass(cls, GraphInput):
            raise TypeError(f"{cls.__name__} must be a FeatureInput body to get a graph variant")
        register(name, config_cls)(cls)
        graph_cls = type(f"{cls.__name__}Graph", (GraphInput, cls), {
            "__module__": cls.__module__,
            "__doc__": f"{cls.__name__} + Graph: the same body on the MGNN representation (see "
                       f":class:`~ml_core.models.inputs.GraphInput`).\n\n{cls.__doc__ or ''}",
        })
        register(f"{name}_graph", _graph_config(config_cls))(graph_cls)
        cls.graph_variant = graph_cls
        return cls

    return deco
