"""The node side of a mixture of experts' first layer, computed once per node for scoring.

An MMoE-style body reads ``x = [a_1 || ... || a_m || r]``: node vectors ``a_j`` of the user or
of the item (``p_u, q_i`` or the MGNN's ``h_u, h_i, s_u, s_i``), then the pair's history ``r``
(``r_ui``, ``s(u, i)``). Its experts' and gates' first layers are linear in ``x``
(:meth:`~ml_core.nn.dense.MixtureOfExperts.first_layer`, ``W = [W_1 | ... | W_m | W_r]``), so

.. math::
    x W^T + b = \\underbrace{\\textstyle\\sum_{j \\in user} a_j W_j^T}_{U[u]}
        + \\underbrace{\\textstyle\\sum_{j \\in item} a_j W_j^T + b}_{I[i]} + r W_r^T

and ``U`` / ``I`` depend on one node each. :func:`project_nodes` adds them to a day's or a
snapshot's :class:`~ml_core.contracts.reps.NodeReps` (one product per node instead of one per
pair: at 1,000 pairs of MoGE's default sizes the first layer is ~80% of a request's
multiplications); :func:`first_layer_of_pairs` sums them for scored pairs. The sums equal the
direct product up to float rounding (tested). The weights are read when :func:`project_nodes`
runs: reps projected before a training step are stale after it (scoring happens in eval mode
on a fixed model: evaluation, comparison, serving).
"""

from __future__ import annotations

import torch

from ml_core.contracts.reps import NodeReps
from ml_core.nn.dense import MixtureOfExperts, TaskTowers

#: names of the projections in ``NodeReps.user_reps`` / ``item_reps``
FIRST_U, FIRST_I = "first_layer_u", "first_layer_i"


def side_of(name: str) -> str:
    """``"user"`` for a user representation (``p_u``, ``h_u``, ``s_u``), ``"item"`` for an item's."""
    if name.endswith("_u"):
        return "user"
    if name.endswith("_i"):
        return "item"
    raise ValueError(f"representation {name!r} is neither a user's (*_u) nor an item's (*_i)")


@torch.no_grad()
def project_nodes(moe: MixtureOfExperts, blocks: tuple[str, ...] | list[str], reps: NodeReps) -> NodeReps:
    """``reps`` with ``U`` (``user_reps[FIRST_U]``, ``[n_users, M]``) and ``I`` (``item_reps[FIRST_I]``,
    ``[n_items, M]``, the bias included) added; ``blocks``: the node vectors ``x`` starts with, in
    order (each ``[n, d]``)."""
    w, b = moe.first_layer()  # [M, in], [M]
    user = w.new_zeros(reps.n_users, w.shape[0])  # U
    item = b.expand(reps.n_items, -1).clone()  # I
    start = 0
    for name in blocks:
        side = side_of(name)
        a = (reps.user_reps if side == "user" else reps.item_reps)[name]
        (user if side == "user" else item).addmm_(a.to(w.dtype), w[:, start:start + a.shape[1]].t())
        start += a.shape[1]
    return NodeReps(reps.users, reps.items, {**reps.user_reps, FIRST_U: user}, {**reps.item_reps, FIRST_I: item},
                    reps.neighbours)


def is_projected(reps: NodeReps) -> bool:
    return FIRST_U in reps.user_reps and FIRST_I in reps.item_reps


def first_layer_of_pairs(model, reps: NodeReps, user_rows, item_rows, pair=None, seq=None):
    """``(users, items, pre)``: the pairs' node rows as tensors and ``pre = x W^T + b`` ``[B, M]``
    of ``model.moe`` for them, from projected ``reps`` and the pairs' history parts
    (:meth:`~ml_core.models.base.RecModel.history_of` of ``pair`` and ``seq``: the last columns of ``x``)."""
    users = torch.as_tensor(user_rows, dtype=torch.long)
    items = torch.as_tensor(item_rows, dtype=torch.long)
    pre = reps.user_reps[FIRST_U].index_select(0, users) + reps.item_reps[FIRST_I].index_select(0, items)
    history = model.history_of(pair, seq, lambda: reps.items.ids.index_select(0, items))
    if history:
        w, _ = model.moe.first_layer()
        r = torch.cat(history, dim=-1) if len(history) > 1 else history[0]  # [B, d_r]
        pre = torch.addmm(pre, r.to(w.dtype), w[:, w.shape[1] - r.shape[1]:].t())
    return users, items, pre


def pair_reps(reps: NodeReps, names, users: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
    """The representations ``names`` at the pairs' rows (``{"h_u": [B, d], ...}``)."""
    return {k: (reps.user_reps[k].index_select(0, users) if side_of(k) == "user" else reps.item_reps[k].index_select(0, items))
            for k in names}


def logits_from_first(moe: MixtureOfExperts, towers: TaskTowers, pre: torch.Tensor,
                      extra: torch.Tensor | None = None) -> torch.Tensor:
    """``towers(moe.from_first(pre, extra))``, logits ``[B, K]``. With linear heads
    (``y_k = v_k . o^k + c_k``, ``o^k = sum_n g^k_n [f^n || extra^n]``) as
    ``sum_n g^k_n (v_k . [f^n || extra^n]) + c_k``: each expert's output meets the K heads in one
    matrix product and no ``[B, N, d_e + d_z]`` concatenation or per-pair ``[K, N] x [N, d]``
    mixing is built."""
    experts, gates = moe.experts_and_gates(pre)  # [B, N, d_e], [K, B, N]
    heads = towers.linear_heads()
    if heads is None:
        return towers(moe.mix(experts, gates, extra)[0])
    v, c = heads  # [K, d_e (+ d_z)], [K]
    d_e = experts.shape[-1]
    t = experts @ v[:, :d_e].t()  # [B, N, K]
    if extra is not None:
        t = t + extra.to(v.dtype) @ v[:, d_e:].t()
    return (gates.permute(1, 2, 0) * t).sum(dim=1) + c  # [B, K]

