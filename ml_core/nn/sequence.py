"""The user's behaviour sequence attended against the candidate item (DIN, Zhou et al., KDD 2018,
section 4.3, on the same Taobao logs).

.. math::
    e_j = E_{item}[i_j] + E_{beh}[b_j] + E_{age}[a_j], \\qquad v = E_{item}[i],

    \\alpha_j = \\mathrm{MLP}([e_j \\| v \\| e_j - v \\| e_j \\odot v]) \\cdot m_j, \\qquad
    s(u, i) = \\sum_{j=1}^{N} \\alpha_j e_j

over the user's last N window events (item ``i_j``, behaviour ``b_j``, age in days ``a_j``;
``m_j = 0`` for padding) and the candidate ``i``. As in DIN the weights are not normalised by a
softmax, so the interest's size keeps how much of the history relates to the candidate. The
item table is the block's own :class:`~ml_core.nn.dense.FeatureEncoder` over the model's item
id vocabulary (side ``item``: a warm start grows its rows like every id table); DIN's
activation unit [80, 40] with PReLU/Dice is read here as one hidden layer of 36 with LeakyReLU
(the MLP block every model here uses).

Shapes: ``Sequences`` ``[B, N]`` and candidate item rows ``[B]`` -> ``[B, d]``.
"""

from __future__ import annotations

import torch
from torch import nn

from ml_core.config import BEHAVIORS
from ml_core.contracts.batch import Sequences
from ml_core.contracts.spec import SideShape
from ml_core.history import MAX_AGE
from ml_core.nn.dense import MLP, FeatureEncoder


class TargetAttention(nn.Module):
    """DIN's sum pooling of a sequence weighted by its relevance to a target (module docstring).

    Args:
        n_item_ids (int): rows of the model's item id vocabulary (row 0 = unknown).
        dim (int): d, the event and interest size.
        hidden (list[int]): the attention MLP's hidden sizes (default: ``[36]``).
    """

    def __init__(self, n_item_ids: int, dim: int, hidden: list[int] | None = None):
        super().__init__()
        self.items = FeatureEncoder(SideShape(n_item_ids, [], 0, side="item"), dim)  # E_item
        self.behavior = nn.Embedding(len(BEHAVIORS) + 1, dim, padding_idx=0)  # E_beh, 0 = padding
        self.age = nn.Embedding(MAX_AGE + 1, dim)  # E_age
        self.score = MLP(4 * dim, hidden or [36], 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.items.reset_parameters()
        for emb in (self.behavior, self.age):
            nn.init.normal_(emb.weight, std=0.05)
        with torch.no_grad():
            self.behavior.weight[0].zero_()

    def forward(self, seq: Sequences, target_ids: torch.Tensor) -> torch.Tensor:
        e = self.items.id_emb(seq.items) + self.behavior(seq.behaviors) + self.age(seq.ages)  # [B, N, d]
        v = self.items.id_emb(target_ids).unsqueeze(1).expand_as(e)  # [B, N, d]
        alpha = self.score(torch.cat([e, v, e - v, e * v], dim=-1)).squeeze(-1)  # [B, N]
        alpha = alpha * seq.mask.to(alpha.dtype)  # padding weighs 0
        return torch.einsum("bn,bnd->bd", alpha, e)  # s(u, i): [B, d]
