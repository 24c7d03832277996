"""Shared building blocks. Every model composes these; none re-implements a tower, gate or MLP.

* :class:`MLP` - stacked Linear + activation (LeakyReLU by default, as in MoGE's experts).
* :class:`FeatureEncoder` - MoGE's shared transform ``p_u = x_u P``: the id is one more feature,
  so ``p_u = E_id[u] + W [emb(cat_1) || ... || emb(cat_C) || nums]``.
* :class:`SoftmaxGate` - ``g(x) = softmax(W x + b)`` over experts (normalised by a softmax and
  nothing else: no batch-norm inside the gate).
* :class:`MixtureOfExperts` - MMoE's ``o^k = sum_n g^k(x)_n f^n(x)``.
* :class:`TaskTowers` - one head per task, ``y^k = v_k^T o^k`` (or a small MLP first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ml_core.train.data import NodeTable


@dataclass
class SideShape:
    n_ids: int
    cat_sizes: list[int]
    n_nums: int


@dataclass
class ModelSpec:
    """Sizes a model needs, derived from the fitted FeatureSpec (saved with the model)."""

    tasks: list[str]
    user: SideShape
    item: SideShape
    dim: int = 64
    fanouts: list[int] = field(default_factory=lambda: [10, 5])

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @classmethod
    def from_feature_spec(cls, fs, dim: int, fanouts: list[int]) -> "ModelSpec":
        side = lambda s: SideShape(s.n_ids, list(s.cat_sizes), len(s.nums))  # noqa: E731
        return cls(list(fs.tasks), side(fs.user), side(fs.item), dim, list(fanouts))


class MLP(nn.Sequential):
    """``[Linear -> act (-> dropout)] x len(hidden)``; ``out_dim`` adds a final plain Linear."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int | None = None, dropout: float = 0.0,
                 act: type[nn.Module] = nn.LeakyReLU):
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), act()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        super().__init__(*layers)
        self.out_dim = d


class FeatureEncoder(nn.Module):
    """Shared transform of one node type's raw features to ``dim``.

    Args:
        shape (SideShape): id vocabulary, categorical cardinalities, numeric count.
        dim (int): output size d.
        cat_dim (int): size of each categorical embedding (default: 8).
        use_ids (bool): include the id embedding (default: True).
    Shapes: NodeTable of n nodes -> ``[n, dim]``.
    """

    def __init__(self, shape: SideShape, dim: int, cat_dim: int = 8, use_ids: bool = True):
        super().__init__()
        self.id_emb = nn.Embedding(shape.n_ids, dim) if use_ids else None
        self.cat_embs = nn.ModuleList(nn.Embedding(n, cat_dim) for n in shape.cat_sizes)
        in_dim = cat_dim * len(shape.cat_sizes) + shape.n_nums
        self.proj = nn.Linear(in_dim, dim) if in_dim > 0 else None
        self.dim = dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.05)
        for e in self.cat_embs:
            nn.init.normal_(e.weight, std=0.05)

    def forward(self, x: NodeTable) -> torch.Tensor:
        parts = [emb(x.cats[:, j]) for j, emb in enumerate(self.cat_embs)]  # each [n, cat_dim]
        if x.nums.shape[1]:
            parts.append(x.nums)  # [n, F]
        out = self.proj(torch.cat(parts, dim=-1)) if self.proj is not None else x.nums.new_zeros(len(x), self.dim)
        if self.id_emb is not None:
            out = out + self.id_emb(x.ids)
        return out  # [n, dim]


class SoftmaxGate(nn.Module):
    """``g(x) = softmax(W x + b)`` over ``n_out`` experts (MMoE / MoGE gate)."""

    def __init__(self, in_dim: int, n_out: int, hidden: list[int] | None = None):
        super().__init__()
        self.net = MLP(in_dim, hidden or [], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)  # [B, n_out]


class MixtureOfExperts(nn.Module):
    """MMoE core: N expert MLPs shared by K tasks, one softmax gate per task.

    ``forward`` returns (per-task mixtures ``[K, B, d_e]``, gates ``[K, B, N]``, experts
    ``[B, N, d_e]``); extra per-expert vectors may be appended to each expert's output before
    mixing (MoGE's ``[f^n(x) || Z^n]``).
    """

    def __init__(self, in_dim: int, n_tasks: int, n_experts: int = 4, expert_hidden: list[int] | None = None,
                 gate_hidden: list[int] | None = None, gate_in_dim: int | None = None):
        super().__init__()
        expert_hidden = expert_hidden or [32, 32]
        self.experts = nn.ModuleList(MLP(in_dim, expert_hidden) for _ in range(n_experts))
        self.gates = nn.ModuleList(SoftmaxGate(gate_in_dim or in_dim, n_experts, gate_hidden) for _ in range(n_tasks))
        self.expert_dim = expert_hidden[-1]

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None, gate_x: torch.Tensor | None = None):
        experts = torch.stack([f(x) for f in self.experts], dim=1)  # [B, N, d_e]
        if extra is not None:
            experts = torch.cat([experts, extra], dim=-1)  # [B, N, d_e + d_z]
        gate_in = x if gate_x is None else gate_x
        gates = torch.stack([g(gate_in) for g in self.gates], dim=0)  # [K, B, N]
        mixed = torch.einsum("kbn,bnd->kbd", gates, experts)  # [K, B, d]
        return mixed, gates, experts


class TaskTowers(nn.Module):
    """One head per task: ``y^k = v_k^T MLP_k(o^k)`` (no hidden layer = the paper's ``v^T o^k``)."""

    def __init__(self, in_dim: int, n_tasks: int, hidden: list[int] | None = None):
        super().__init__()
        self.towers = nn.ModuleList(MLP(in_dim, hidden or [], 1) for _ in range(n_tasks))

    def forward(self, per_task: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t(x) for t, x in zip(self.towers, per_task)], dim=-1)  # [B, K]


class RecModel(nn.Module):
    """Base class: ``forward(batch) -> logits [B, K]``; ``compute_loss`` adds model-specific terms.

    Class attributes: ``needs_graph`` (the batch must carry sampled channel subgraphs).
    """

    needs_graph: bool = False

    def compute_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(logits, loss, parts): default = sum over tasks of the mean BCE."""
        logits = self(batch)
        per_task = bce_per_task(logits, batch.labels)
        loss = per_task.sum()
        return logits, loss, {f"bce_{k}": float(v) for k, v in enumerate(per_task.detach())}


def bce_per_task(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each task, ``[K]``."""
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(dim=0)
