"""GradNorm: gradient-normalised adaptive loss balancing (Chen et al., ICML 2018).

A model with losses ``L_1 .. L_n`` sharing a layer ``W`` trains on ``sum_i w_i(t) L_i`` and the
weights ``w`` follow

.. math::
    G_i = \\|\\nabla_W\\, w_i L_i\\|_2, \\qquad \\bar G = \\tfrac1n \\textstyle\\sum_j G_j,
    \\qquad \\tilde L_i = L_i(t) / L_i(0), \\qquad r_i = \\tilde L_i \\big/ \\tfrac1n \\textstyle\\sum_j \\tilde L_j

    \\mathcal{L}_{grad} = \\sum_i \\big| G_i - \\mathrm{sg}\\big[\\bar G\\, r_i^{\\alpha}\\big] \\big|
    \\qquad (\\text{minimised over } w \\text{ only; sg = stop-gradient})

then ``w <- n w / sum_j w_j``. A loss that falls more slowly than the others (``r_i > 1``) gets a
gradient-norm target above the mean, so its weight grows. ``r_i`` is each loss's *own* ratio
(torch-rechub's public GradNorm uses the mean ratio for every task, which makes every target
``mean(G)`` and ``alpha`` irrelevant).

How it fits a trainer that only calls ``loss.backward(); optimizer.step()``: ``w`` is an ordinary
parameter of this module, and :meth:`GradNorm.forward` returns

.. math::
    \\text{loss} = \\sum_i \\mathrm{sg}[w_i] L_i + \\mathcal{L}_{grad} - \\mathrm{sg}[\\mathcal{L}_{grad}]

whose value is the weighted loss and whose backward gives the network the weighted-loss
gradient and ``w`` exactly ``d L_grad / d w`` (``w`` enters nothing else). Because
``G_i = w_i \\|\\nabla_W L_i\\|`` for ``w_i > 0``, the norms are taken of the *unweighted* losses
(``torch.autograd.grad(L_i, W, retain_graph=True)``, first order, no ``create_graph``) and
multiplied by ``w_i`` inside the autograd graph: ``dL_grad/dw_i`` is the same as through a
second-order graph, at the cost of one partial backward from each loss to ``W``. The
renormalisation (and clamping at ``min_weight``, so a weight pushed through zero by a step
comes back) runs without gradient at the start of the next call, i.e. after the optimiser step.

Choices the paper leaves to the implementer:

* ``L_i(0)``: the losses of the first training call (one batch), stored in a buffer (saved
  with the model; ``-1`` = not yet seen).
* ``alpha`` default 1.5: the value Chen et al. use for most of their experiments (their
  reported best range is 0.5-3; ``alpha = 0`` pushes all ``G_i`` to the same norm).
* ``W``: the caller passes the shared parameters; their gradients are concatenated into one
  vector per loss (one tensor = the paper's single layer).

Args:
    n_losses (int): n.
    alpha (float): asymmetry ``alpha >= 0`` (default: 1.5).
    min_weight (float): floor of each weight before renormalising (default: 1e-3).
Shapes: losses ``[n]`` -> (scalar loss, stats dict).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GradNorm(nn.Module):
    def __init__(self, n_losses: int, alpha: float = 1.5, min_weight: float = 1e-3):
        super().__init__()
        if n_losses < 1:
            raise ValueError(f"GradNorm needs at least one loss, got n_losses={n_losses}")
        if alpha < 0:
            raise ValueError(f"GradNorm alpha must be >= 0, got {alpha}")
        if not 0 < min_weight < 1:
            raise ValueError(f"min_weight must be in (0, 1), got {min_weight}")
        self.n_losses = n_losses
        self.alpha = float(alpha)
        self.min_weight = float(min_weight)
        self.weights = nn.Parameter(torch.ones(n_losses))  # w
        self.register_buffer("initial_losses", torch.full((n_losses,), -1.0))  # L_i(0); -1 = unset

    @torch.no_grad()
    def renormalise(self) -> None:
        """``w <- n max(w, min_weight) / sum_j max(w_j, min_weight)``."""
        w = self.weights.clamp(min=self.min_weight)
        self.weights.copy_(w * (self.n_losses / w.sum()))

    @staticmethod
    def gradient_norms(losses: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        """``||grad_W L_i||_2`` of every loss (``[n]``, no graph); a loss that does not reach
        ``W`` has norm 0. Keeps the losses' graph for the caller's backward."""
        norms = []
        for loss in losses:
            grads = torch.autograd.grad(loss, list(shared), retain_graph=True, allow_unused=True)
            sq = [g.float().square().sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else losses.new_zeros((), dtype=torch.float32))
        return torch.stack(norms)  # [n]

    def loss_ratios(self, losses: torch.Tensor) -> torch.Tensor:
        """``r_i = L~_i / mean_j L~_j`` with ``L~_i = L_i / L_i(0)``, ``[n]`` (no graph)."""
        tilde = losses.detach().float() / self.initial_losses.clamp(min=1e-12)  # [n]
        return tilde / tilde.mean().clamp(min=1e-12)

    def forward(self, losses: torch.Tensor, shared: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if losses.shape != (self.n_losses,):
            raise ValueError(f"GradNorm expects {self.n_losses} losses, got shape {tuple(losses.shape)}")
        if not (self.training and torch.is_grad_enabled()):  # evaluation: the current weighting, no update
            w = self.weights.detach().clamp(min=self.min_weight)
            w = w * (self.n_losses / w.sum())
            return (w * losses.float()).sum(), self._stats(w)
        self.renormalise()  # after the previous optimiser step
        if bool((self.initial_losses < 0).any()):
            with torch.no_grad():
                self.initial_losses.copy_(losses.detach().float())
        G = self.weights * self.gradient_norms(losses, shared)  # [n]  G_i = w_i ||grad_W L_i||
        target = (G.mean() * self.loss_ratios(losses).pow(self.alpha)).detach()  # [n]
        l_grad = (G - target).abs().sum()
        weighted = (self.weights.detach() * losses.float()).sum()
        stats = self._stats(self.weights.detach())
        stats["gradnorm_loss"] = float(l_grad.detach())
        stats.update({f"G_{i}": float(g) for i, g in enumerate(G.detach())})
        return weighted + (l_grad - l_grad.detach()), stats

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """Optimiser groups of ``model`` (which holds this module): every other parameter in the
        default group, the weights ``w`` in their own at ``lr`` without weight decay."""
        rest = [p for p in model.parameters() if p is not self.weights]
        return [{"params": rest}, {"params": [self.weights], "weight_decay": 0.0, "lr": lr}]

    @staticmethod
    def _stats(w: torch.Tensor) -> dict[str, float]:
        return {f"w_{i}": float(v) for i, v in enumerate(w)}
