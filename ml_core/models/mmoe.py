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

Args:
    spec (ModelSpec): input sizes and tasks.
    n_experts (int): number of experts (default: 4).
    expert_hidden (list[int]): expert MLP sizes (default: [32, 32]).
    gate_hidden (list[int], optional): hidden layers of the gates (default: None = linear).
Shapes: Batch of B samples -> logits ``[B, K]``.
"""

from __future__ import annotations

import torch

from ml_core.contracts.spec import ModelSpec
from ml_core.models.inputs import FeatureInput, register_with_graph
from ml_core.nn.dense import MixtureOfExperts, TaskTowers


@register_with_graph("mmoe")
class MMoE(FeatureInput):
    def __init__(self, spec: ModelSpec, n_experts: int = 4, expert_hidden: list[int] | None = None,
                 gate_hidden: list[int] | None = None, **input_args):
        super().__init__()
        self.spec = spec
        in_dim = self.build_input(spec, **input_args)  # P, Q (+ MGNN)
        self.moe = MixtureOfExperts(in_dim, spec.n_tasks, n_experts, expert_hidden or [32, 32], gate_hidden)
        self.towers = TaskTowers(self.moe.expert_dim, spec.n_tasks)  # v_k

    def forward(self, batch) -> torch.Tensor:
        x = self.model_input(batch)  # x^ [B, 2d] (graph: [B, 4d])
        mixed, _, _ = self.moe(x)  # o^k [K, B, 32]
        return self.towers(mixed)  # [B, K]
