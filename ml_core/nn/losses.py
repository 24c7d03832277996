"""Loss terms shared by the multi-task models (MoGE paper, section 4.3).

The paper's objective is

.. math::
    \\mathcal{L} = \\sum_{k=1}^{K} \\big(e^{-s_k} \\mathcal{L}^k + s_k\\big)
        + \\beta \\mathcal{L}_{co} + \\lambda \\|\\Theta\\|^2,
    \\qquad
    \\mathcal{L}_{co} = -\\sum_{\\langle u,i \\rangle} \\sum_{k=1}^{K}
        \\sum_{n=1}^{N} \\sum_{m=n+1}^{N} g^k_n \\, g^k_m

with ``s_k = log sigma_k^2`` (Kendall et al., CVPR 2018, as written in the paper: ``1/sigma^2``
times the cross-entropy plus ``log sigma^2``). Each term is a small unit here:

* :class:`UncertaintyWeighting` - the learned ``s_k`` and ``sum_k exp(-s_k) L^k + s_k``.
* :func:`expert_cooperation_loss` - ``L_co`` averaged over the batch (the paper sums over
  samples; the trainer's task losses are batch means, so the same scale is kept here).
* :func:`l2_penalty` - ``||Theta||^2`` over dense parameters plus only the *active* rows of
  large embedding tables (see its docstring for why).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class UncertaintyWeighting(nn.Module):
    """Homoscedastic-uncertainty task weighting (Kendall et al. 2018; MoGE eq. in section 4.3).

    .. math::
        \\mathcal{L}_{main} = \\sum_{k=1}^{K} e^{-s_k} \\mathcal{L}^k + s_k,
        \\qquad s_k = \\log \\sigma_k^2 \\ (\\text{learned, initialised to } 0)

    ``exp(-s_k)`` is the task's weight; ``s_k`` keeps it from growing without bound. With
    ``enabled=False`` the module returns the plain sum ``sum_k L^k`` (the loss ablation's "i"
    variant) and holds no parameter.

    Args:
        n_tasks (int): K.
        enabled (bool): learn the weights (default: True).
    Shapes: per-task losses ``[K]`` -> scalar.
    """

    def __init__(self, n_tasks: int, enabled: bool = True):
        super().__init__()
        self.n_tasks = n_tasks
        self.log_vars = nn.Parameter(torch.zeros(n_tasks)) if enabled else None

    def forward(self, task_losses: torch.Tensor) -> torch.Tensor:
        if self.log_vars is None:
            return task_losses.sum()
        s = self.log_vars  # [K]
        return (torch.exp(-s) * task_losses + s).sum()

    def weights(self) -> torch.Tensor:
        """Current task weights ``exp(-s_k)`` (ones when disabled), ``[K]``."""
        if self.log_vars is None:
            return torch.ones(self.n_tasks)
        return torch.exp(-self.log_vars.detach())


def expert_cooperation_loss(gates: torch.Tensor) -> torch.Tensor:
    """``L_co = - mean_batch sum_k sum_{n<m} g^k_n g^k_m`` (MoGE section 4.3).

    Uses ``sum_{n<m} g_n g_m = ((sum_n g_n)^2 - sum_n g_n^2) / 2``, linear in N. Minimising it
    pushes every gate towards the uniform mixture (the pairwise products are largest there), so
    no expert is left idle.

    Shapes: gates ``[K, B, N]`` -> scalar.
    """
    g = gates.float()
    pair_sum = 0.5 * (g.sum(dim=-1).square() - g.square().sum(dim=-1))  # [K, B]
    return -pair_sum.sum(dim=0).mean()


def l2_penalty(dense: Iterable[torch.Tensor], sparse: Iterable[tuple[nn.Embedding, torch.Tensor]] = ()) -> torch.Tensor:
    """``||Theta||^2`` restricted to what a batch touches.

    ``dense``: parameters penalised entirely (weights, biases, small embedding tables).
    ``sparse``: ``(table, rows)`` pairs, e.g. an id-embedding table (the module) and the ids the
    batch looked up; only the distinct ``rows`` are penalised, looked up through the module so
    that a table with row-sparse gradients (``sparse=True``) keeps them. Penalising every row of a large id
    table on every step (what a literal ``lambda ||Theta||^2`` over all parameters does) makes
    Adam shrink the rows a batch never uses by about ``lr`` per step, erasing rarely seen users
    and items; penalising active rows is the usual practice (NGCF's own code regularises the
    batch's embeddings only).

    Returns a float32 scalar.
    """
    flat = [p.reshape(-1) for p in dense]
    flat += [table(torch.unique(rows)).reshape(-1) for table, rows in sparse]
    if not flat:
        return torch.zeros(())
    return torch.cat(flat).float().square().sum()  # one fused op instead of one per tensor
