"""SEvo: structure-aware embedding evolution, as AdamW-SEvo (papers/sevo-abstract.txt; MODELS.md "SEvo").

SEvo smooths each update of the id embeddings over the user-item graph, so that related nodes
evolve alike, without a GNN in the model. With the stacked id rows ``E = [E_U ; E_I]``
(``N x d``) and :math:`\\hat A = D^{-1/2} A D^{-1/2}` their symmetric-normalised adjacency
(:mod:`ml_core.nn.id_graph`), one AdamW-SEvo step at step ``t`` is

.. math::
    \\tilde g_r = \\begin{cases} \\hat m_{t-1,r} & \\text{if } g_r = 0 \\text{ (row } r
        \\text{ has no gradient, } t > 1) \\\\ g_r & \\text{otherwise} \\end{cases}, \\qquad
    \\tilde s_r = \\begin{cases} \\hat v_{t-1,r} & \\text{if } g_r = 0,\\ t > 1 \\\\
        g_r \\odot g_r & \\text{otherwise} \\end{cases}

    m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) \\tilde g, \\qquad
    v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) \\tilde s, \\qquad
    \\hat m_t = \\frac{m_t}{1 - \\beta_1^t}, \\quad \\hat v_t = \\frac{v_t}{1 - \\beta_2^t}

    \\Delta = \\frac{\\hat m_t}{\\sqrt{\\hat v_t} + \\epsilon}, \\qquad
    \\psi(\\Delta) = \\frac{1 - b}{1 - b^{L+1}} \\sum_{l=0}^{L} b^l \\hat A^l \\Delta

    E \\leftarrow E (1 - \\eta \\lambda) - \\eta \\, \\psi(\\Delta)

(moment-estimate correction: a row the batch did not touch keeps its bias-corrected moments,
:math:`\\hat m_t = \\hat m_{t-1}`, instead of decaying towards zero; decoupled weight decay
:math:`\\lambda`). Every other parameter takes a plain AdamW step (the same formula with
``psi = identity`` and no correction). ``L = 0`` is AdamW (with ``correction=False`` bit for bit;
with it, AdamW plus the corrected moments of untouched rows). ``b = 1`` is the limit
:math:`\\frac{1}{L+1} \\sum_l \\hat A^l \\Delta`.

Choices the abstract leaves open (documented):

* Graph: the bipartite user-item graph of the most recent training day (interactions before that
  day: no evaluation-day edge), binarised, no self loops (``graph_channels`` / ``graph_days`` /
  ``weighted`` choose others, see :mod:`ml_core.nn.id_graph`). Row 0 of each table (unknown
  id) and ids absent from the graph are isolated: their update is :math:`\\psi(\\Delta) =
  \\frac{1-b}{1-b^{L+1}} \\Delta` (about a quarter of Adam's at the defaults), as the formula says.
* Tables: every ``FeatureEncoder.id_emb`` of the model (user and item tables, paired); the rest
  of an encoder (categorical embeddings, projection) is a plain AdamW parameter.
* "Gradient all zero" is decided per row of the dense table gradient; at ``t = 1`` there is no
  previous moment, so no correction.
* Defaults: ``L = 3``, ``b = 0.99`` (MODELS.md), Adam's ``betas = (0.9, 0.999)``,
  ``eps = 1e-8``; learning rate and weight decay from ``train.lr`` / ``train.weight_decay``.

Selected by ``train.optimizer = "sevo"`` with ``train.optimizer_args`` = the keyword arguments
of :func:`make_sevo` (``layers``, ``beta``, ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ml_core.models.base import GraphNeeds
from ml_core.nn.id_graph import id_adjacency, id_table_pairs
from ml_core.train.extensions import OPTIMIZERS


def smooth(delta: torch.Tensor, adj: torch.Tensor, layers: int, beta: float) -> torch.Tensor:
    """:math:`\\psi(\\Delta) = \\frac{1-b}{1-b^{L+1}} \\sum_{l=0}^{L} b^l \\hat A^l \\Delta`.

    Shapes: ``delta [N, d]``, ``adj [N, N]`` (sparse or dense) -> ``[N, d]``.
    """
    if layers == 0:
        return delta
    coef = 1.0 / (layers + 1) if beta == 1.0 else (1 - beta) / (1 - beta ** (layers + 1))
    out = delta.clone()
    power = delta
    for l in range(1, layers + 1):
        power = adj @ power  # A^l Delta  [N, d]
        out.add_(power, alpha=beta ** l)
    return out.mul_(coef)


class AdamWSEvo(torch.optim.Optimizer):
    """AdamW whose id-embedding updates are smoothed over a graph (module docstring).

    Args:
        dense_params (iterable[Parameter]): parameters with a plain AdamW step.
        table_pairs (list[tuple[Parameter, Parameter]]): (user table, item table) weights whose
            stacked rows ``[user | item]`` are the rows of ``adj``.
        adj (Tensor): :math:`\\hat A`, ``[N, N]`` sparse CSR (or dense) float32.
        lr (float): eta (default: 1e-3).
        betas (tuple[float, float]): Adam's moment decays (default: (0.9, 0.999)).
        eps (float): (default: 1e-8).
        weight_decay (float): decoupled weight decay lambda (default: 0.0).
        layers (int): L, powers of A^ in the smoother (default: 3).
        beta (float): b in (0, 1] (default: 0.99).
        correction (bool): moment-estimate correction for rows without gradient (default: True).
    """

    def __init__(self, dense_params, table_pairs, adj: torch.Tensor, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 layers: int = 3, beta: float = 0.99, correction: bool = True):
        if lr <= 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0, eps > 0, weight_decay >= 0; got lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas must be two values in [0, 1), got {betas}")
        if int(layers) != layers or layers < 0:
            raise ValueError(f"layers (L) must be an integer >= 0, got {layers}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta (b) must be in (0, 1], got {beta}")
        table_pairs = [(u, i) for u, i in table_pairs]
        n = adj.shape[0]
        for u, i in table_pairs:
            if u.shape[0] + i.shape[0] != n or u.shape[1] != i.shape[1]:
                raise ValueError(f"table pair {tuple(u.shape)} + {tuple(i.shape)} does not match the graph's {n} rows")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "layers": int(layers),
                    "beta": beta, "correction": correction}
        groups = [{"params": list(dense_params), "sevo": False}]
        if table_pairs:
            groups.append({"params": [p for pair in table_pairs for p in pair], "sevo": True})
        super().__init__(groups, defaults)
        self.adj = adj

    def _moments(self, p: torch.Tensor, grad: torch.Tensor, group: dict, correct: bool):
        """Update Adam's moments of ``p``; returns ``(m_t, denom, step_size)`` with
        ``m_t / denom * step_size = lr * m^_t / (sqrt(v^_t) + eps)`` (torch.optim.AdamW's order)."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        t = state["step"]
        if correct and t > 1:
            zero = (grad == 0).all(dim=-1, keepdim=True)  # [n, 1] rows without gradient
            g_sq = grad * grad
            if bool(zero.any()):
                grad = torch.where(zero, m / (1 - beta1 ** (t - 1)), grad)  # m^_{t-1}
                g_sq = torch.where(zero, v / (1 - beta2 ** (t - 1)), g_sq)  # v^_{t-1}
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).add_(g_sq, alpha=1 - beta2)
        else:
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
        denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
        return m, denom, group["lr"] / bc1

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            if not group["sevo"]:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if p.grad.is_sparse:
                        raise ValueError("AdamW-SEvo does not take sparse gradients (nn.Embedding(sparse=True))")
                    p.mul_(1 - lr * wd)
                    m, denom, step_size = self._moments(p, p.grad, group, correct=False)
                    p.addcdiv_(m, denom, value=-step_size)
                continue
            params = group["params"]
            for u, i in zip(params[0::2], params[1::2]):
                if u.grad is None and i.grad is None:
                    continue
                deltas, sizes = [], []
                for p in (u, i):
                    grad = p.grad if p.grad is not None else torch.zeros_like(p)
                    if grad.is_sparse:
                        raise ValueError("AdamW-SEvo does not take sparse gradients (nn.Embedding(sparse=True))")
                    m, denom, step_size = self._moments(p, grad, group, correct=group["correction"])
                    if group["layers"] == 0:  # psi = identity: AdamW's own update (bit for bit)
                        p.mul_(1 - lr * wd)
                        p.addcdiv_(m, denom, value=-step_size)
                        continue
                    deltas.append(m / denom)  # m_t / denom; step_size carries lr / (1 - beta1^t)
                    sizes.append(step_size)
                if not deltas:
                    continue
                delta = smooth(torch.cat(deltas, dim=0), self.adj, group["layers"], group["beta"])  # psi(Delta) [N, d]
                for p, d, step_size in zip((u, i), torch.split(delta, [u.shape[0], i.shape[0]]), sizes):
                    p.mul_(1 - lr * wd)
                    p.add_(d, alpha=-step_size)
        return loss


@OPTIMIZERS.register("sevo", graph_needs=GraphNeeds.DAY_GRAPHS)
def make_sevo(model: nn.Module, cfg, contexts, layers: int = 3, beta: float = 0.99,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float | None = None,
              correction: bool = True, graph_channels: list[str] | tuple[str, ...] = ("bipartite",),
              graph_days: str = "last", weighted: bool = False) -> AdamWSEvo:
    """AdamW-SEvo for ``model`` (``train.optimizer = "sevo"``; these keywords = ``train.optimizer_args``).

    Args:
        model (nn.Module): any model with ``FeatureEncoder`` id tables.
        cfg (TrainConfig): ``lr`` and (unless ``weight_decay`` is given) ``weight_decay``.
        contexts (list[DayContext]): training days with their graphs.
        layers (int): L (default: 3). beta (float): b (default: 0.99).
        betas, eps: Adam's (default: (0.9, 0.999), 1e-8).
        weight_decay (float, optional): decoupled weight decay (default: ``cfg.weight_decay``).
        correction (bool): moment-estimate correction (default: True).
        graph_channels (list[str]): graph(s) over the id rows (default: ``["bipartite"]``).
        graph_days (str): ``"last"`` training day's graph (default) or ``"all"`` (union).
        weighted (bool): keep edge weights instead of binary edges (default: False).
    """
    pairs = id_table_pairs(model)
    graph = id_adjacency(contexts, pairs[0][0].num_embeddings, pairs[0][1].num_embeddings, graph_channels,
                         graph_days, weighted)
    tables = [(u.weight, i.weight) for u, i in pairs]
    in_tables = {id(p) for pair in tables for p in pair}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in in_tables]
    device = tables[0][0].device
    return AdamWSEvo(dense, tables, graph.adj.to(device), lr=cfg.lr, betas=tuple(betas), eps=eps,
                     weight_decay=cfg.weight_decay if weight_decay is None else weight_decay,
                     layers=layers, beta=beta, correction=correction)

