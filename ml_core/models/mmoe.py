"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), the MoGE paper's main baseline.

.. math::
    \\hat{x} = [p_u \\| q_i], \\quad
    o^k = \\sum_{n=1}^{N} g^k(\\hat{x})_n f^n(\\hat{x}), \\quad
    \\hat{y}^k = \\sigma(v_k^\\top o^k)

with ``p_u``, ``q_i`` the shared feature transforms (ids count as features), N = 4 experts
``f^n``: MLP [32, 32] with LeakyReLU, gates ``g^k``: linear + softmax (MoGE paper section 5.4).

Args:
    spec (ModelSpec): input sizes and tasks.
    n_experts (int): number of experts (default: 4).
    expert_hidden (list[int]): expert MLP sizes (default: [32, 32]).
Shapes: Batch of B samples -> logits ``[B, K]``.
"""

from __future__ import annotations

import torch

from ml_core.models.blocks import FeatureEncoder, MixtureOfExperts, ModelSpec, RecModel, TaskTowers
from ml_core.models.registry import register


@register("mmoe")
class MMoE(RecModel):
    def __init__(self, spec: ModelSpec, n_experts: int = 4, expert_hidden: list[int] | None = None):
        super().__init__()
        self.spec = spec
        self.user_enc = FeatureEncoder(spec.user, spec.dim)  # P
        self.item_enc = FeatureEncoder(spec.item, spec.dim)  # Q
        self.moe = MixtureOfExperts(2 * spec.dim, spec.n_tasks, n_experts, expert_hidden or [32, 32])
        self.towers = TaskTowers(self.moe.expert_dim, spec.n_tasks)

    def forward(self, batch) -> torch.Tensor:
        x = torch.cat([self.user_enc(batch.user), self.item_enc(batch.item)], dim=-1)  # [B, 2d]
        mixed, _, _ = self.moe(x)  # [K, B, 32]
        return self.towers(mixed)  # [B, K]
