"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), the MoGE paper's main baseline.

.. math::
    \\hat{x} = [p_u \\| q_i], \\quad
    o^k = \\sum_{n=1}^{N} g^k(\\hat{x})_n f^n(\\hat{x}), \\quad
    \\hat{y}^k = \\sigma(v_k^\\top o^k)

with ``p_u``, ``q_i`` the shared feature transforms (ids count as features), N = 4 experts
``f^n``: MLP [32, 32] with LeakyReLU, gates ``g^k``: linear + softmax (MoGE paper section 5.4
lists gates of [16, 16]; the text also says "linear transform + softmax", as MoGE here: pass
``gate_hidden=[16, 16]`` for the other reading).

``mmoe_graph`` (MMoE + Graph, section 5.2): the same body on ``x^ = [h_u || h_i || s_u || s_i]``
from an MGNN (:class:`~ml_core.models.inputs.GraphInput`; MGNN options ``layers``,
``combine``, ``channels``).

Configuration: :class:`MMoEConfig`.
Shapes: Batch of B samples -> logits ``[B, K]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import check_sizes
from ml_core.models.inputs import FeatureInput, register_with_graph
from ml_core.models.precompute import first_layer_of_pairs, is_projected, logits_from_first, project_nodes
from ml_core.nn.dense import MixtureOfExperts, TaskTowers


@dataclass
class MMoEConfig:
    """MMoE's options (``train.model_args``); ``mmoe_graph`` adds the MGNN options."""

    #: experts N: the MoGE paper's "4 experts" (section 5.4)
    n_experts: int = 4
    #: each expert's MLP sizes: "[32, 32]" (MoGE paper section 5.4)
    expert_hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: gate hidden layers; None = linear + softmax (MoGE paper's text; its table's [16, 16] is the other reading)
    gate_hidden: list[int] | None = None

    def __post_init__(self) -> None:
        check_sizes(expert_hidden=self.expert_hidden, gate_hidden=self.gate_hidden)


@register_with_graph("mmoe", MMoEConfig)
class MMoE(FeatureInput):
    def __init__(self, spec: ModelSpec, config: MMoEConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        self.spec = spec
        in_dim = self.build_input(spec, cfg)  # P, Q (+ MGNN)
        self.moe = MixtureOfExperts(in_dim, spec.n_tasks, cfg.n_experts, cfg.expert_hidden, cfg.gate_hidden)
        self.towers = TaskTowers(self.moe.expert_dim, spec.n_tasks)  # v_k

    def forward(self, batch) -> torch.Tensor:
        x = self.model_input(batch)  # x^ [B, 2d] (graph: [B, 4d])
        mixed, _, _ = self.moe(x)  # o^k [K, B, 32]
        return self.towers(mixed)  # [B, K]

    def scoring_reps(self, reps):
        """With the experts' and gates' first layer of the input's node vectors per node
        (:mod:`~ml_core.models.precompute`)."""
        return project_nodes(self.moe, self.input_blocks, reps)

    def score_encoded(self, reps, user_rows, item_rows, pair=None, seq=None) -> torch.Tensor:
        if not is_projected(reps):
            return super().score_encoded(reps, user_rows, item_rows, pair, seq)
        _, _, pre = first_layer_of_pairs(self, reps, user_rows, item_rows, pair, seq)  # x^ W^T + b  [B, M]
        return logits_from_first(self.moe, self.towers, pre)  # [B, K]
