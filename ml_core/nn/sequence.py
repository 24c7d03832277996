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

    #: the item table embeds a user's history, not one side of the graph's (user, item) pairs: the
    #: id-graph couplings (SEvo, ml_core/nn/id_graph.py) leave it out
    unpaired_id_tables = True

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
        v = self.items.id_emb(target_ids)  # [B, d]
        h = self._first_layer(e, v)  # [B, N, h]
        for layer in list(self.score)[1:]:
            h = layer(h)
        alpha = h.squeeze(-1)  # [B, N]
        alpha = alpha * seq.mask.to(alpha.dtype)  # padding weighs 0
        return torch.einsum("bn,bnd->bd", alpha, e)  # s(u, i): [B, d]

    def _first_layer(self, e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention MLP's first linear layer of ``[e || v || e - v || e * v]`` without building
        that ``[B, N, 4d]`` input: with its weight split as ``[W_e | W_v | W_d | W_p]``, it is
        ``e (W_e + W_d)^T + v (W_v - W_d)^T + (e * v) W_p^T + b``, where the ``v`` term is computed
        once per pair instead of once per event (half the multiplications per event, no [B, N, 4d] copy)."""
        first = self.score[0]
        w_e, w_v, w_d, w_p = first.weight.split(e.shape[-1], dim=1)
        per_pair = nn.functional.linear(v, w_v - w_d, first.bias).unsqueeze(1)  # [B, 1, h]
        return nn.functional.linear(e, w_e + w_d) + nn.functional.linear(e * v.unsqueeze(1), w_p) + per_pair
