"""Dense building blocks. Every model composes these; none re-implements a tower, gate or MLP.

* :class:`MLP` - stacked Linear + activation (LeakyReLU by default, as in MoGE's experts).
* :class:`FeatureEncoder` - MoGE's shared transform ``p_u = x_u P``: the id is one more feature,
  so ``p_u = E_id[u] + W [emb(cat_1) || ... || emb(cat_C) || nums]``.
* :class:`SoftmaxGate` - ``g(x) = softmax(W x + b)`` over experts (normalised by a softmax and
  nothing else: no batch-norm inside the gate).
* :class:`ExpertPool` - N expert MLPs on one input, stacked ``[B, N, d_e]``.
* :class:`MixtureOfExperts` - MMoE's ``o^k = sum_n g^k(x)_n f^n(x)`` (optionally each task's gate
  routes over a subset of the experts: CGC's shared + task-specific experts).
* :class:`HardConcreteGate` - learned near-binary gates ``z in [0, 1]`` with exact 0 and 1 (hard
  concrete, L0 relaxation; SNR's sub-network routing codes).
* :class:`TaskTowers` - one head per task, ``y^k = v_k^T o^k`` (or a small MLP first).
* :class:`PairInteraction` - MoGE's ``kappa(a, b)``: ep / add / con / mlp.

Graph layers are in :mod:`ml_core.nn.graph`.
"""

from __future__ import annotations

import torch
from torch import nn

from ml_core.contracts.batch import NodeTable
from ml_core.contracts.spec import SideShape


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

    ``side`` (``shape.side``, ``"user"`` or ``"item"``) says whose vocabularies the rows of
    ``id_emb`` and ``cat_embs[j]`` (column ``j`` of that side) index: a warm start grows them
    (:mod:`ml_core.train.warm`).
    """

    def __init__(self, shape: SideShape, dim: int, cat_dim: int = 8, use_ids: bool = True):
        super().__init__()
        self.side = shape.side
        self.id_emb = nn.Embedding(shape.n_ids, dim) if use_ids else None
        self.cat_embs = nn.ModuleList(nn.Embedding(n, cat_dim) for n in shape.cat_sizes)
        in_dim = cat_dim * len(shape.cat_sizes) + shape.n_nums
        self.proj = nn.Linear(in_dim, dim) if in_dim > 0 else None
        self.dim = dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Ids ``N(0, 0.05^2)`` (added to the output, one row per node: start small); categorical
        embeddings ``N(0, 1)``, the scale of the standardised numeric columns they are concatenated
        with. (At std 0.05 a category entered the projection 20x weaker than a unit-variance numeric
        column, so at initialisation ``p_u`` was mostly its numeric columns, noise included; on the
        planted zoo data the feature-only baselines then spent ~2 epochs on a loss plateau and
        Cross-Stitch missed its threshold on one data seed of five.)"""
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.05)
        for e in self.cat_embs:
            nn.init.normal_(e.weight, std=1.0)

    def inputs(self, x: NodeTable) -> torch.Tensor:
        """``[emb(c_1) || ... || emb(c_C) || nums]``, what the projection reads: ``[n, in_dim]``."""
        parts = [emb(x.cats[:, j]) for j, emb in enumerate(self.cat_embs)]  # each [n, cat_dim]
        return torch.cat(parts + [x.nums], dim=-1)  # nums: [n, F]

    def forward(self, x: NodeTable) -> torch.Tensor:
        out = self.proj(self.inputs(x)) if self.proj is not None else x.nums.new_zeros(len(x), self.dim)
        if self.id_emb is not None:
            out = out + self.id_emb(x.ids)
        return out  # [n, dim]


def small_softmax(x: torch.Tensor) -> torch.Tensor:
    """``softmax(x, dim=-1)`` for a short last dimension (a gate's N experts): torch's kernel
    takes ~2x as long on CPU there (165 against 77 us for ``[1000, 2, 4]``, one thread)."""
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


class SoftmaxGate(nn.Module):
    """``g(x) = softmax(W x + b)`` over ``n_out`` experts (MMoE / MoGE gate)."""

    def __init__(self, in_dim: int, n_out: int, hidden: list[int] | None = None):
        super().__init__()
        self.net = MLP(in_dim, hidden or [], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)  # [B, n_out]

    def from_first(self, pre: torch.Tensor) -> torch.Tensor:
        """The gate from its first linear layer's output ``pre`` (``net[0](x)``) on."""
        for layer in list(self.net)[1:]:
            pre = layer(pre)
        return torch.softmax(pre, dim=-1)  # [B, n_out]


class ExpertPool(nn.ModuleList):
    """N expert MLPs reading the same input: ``[f^1(x), ..., f^N(x)]``.

    Args:
        in_dim (int): input size.
        n_experts (int): N.
        hidden (list[int]): each expert's MLP sizes (LeakyReLU after every layer).
    Shapes: ``x [B, in_dim]`` -> ``[B, N, hidden[-1]]``.
    """

    def __init__(self, in_dim: int, n_experts: int, hidden: list[int]):
        if n_experts < 1 or not hidden:
            raise ValueError(f"an expert pool needs n_experts >= 1 and hidden sizes, got {n_experts}, {hidden}")
        super().__init__(MLP(in_dim, hidden) for _ in range(n_experts))
        self.out_dim = hidden[-1]
        self.first_layer_size = n_experts * hidden[0]  # columns of first_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's layer l at once: the first as one matrix product with the experts' weights
        side by side (:meth:`first_layer`), the next ones as one batched product over the experts
        (the same sums as ``stack([f(x) for f in self], dim=1)``, in 2 calls per layer instead of N)."""
        w, b = self.first_layer()
        return self.from_first(torch.addmm(b, x, w.t()))

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert's first linear layer side by side: weight ``[N * h_1, in_dim]``, bias ``[N * h_1]``."""
        firsts = [expert[0] for expert in self]
        return torch.cat([m.weight for m in firsts]), torch.cat([m.bias for m in firsts])

    def from_first(self, pre: torch.Tensor) -> torch.Tensor:
        """The experts from their first layer's output ``pre`` ``[B, N * h_1]`` (expert n's in
        columns ``n h_1 .. (n + 1) h_1``) on: ``[B, N, d_e]``."""
        h = pre.view(len(pre), len(self), -1).transpose(0, 1)  # [N, B, h_1]
        for layers in list(zip(*self))[1:]:
            first = layers[0]
            if not isinstance(first, nn.Linear):
                h = first(h)  # the same parameter-free activation in every expert
                continue
            w = torch.stack([m.weight for m in layers])  # [N, out, in]
            b = torch.stack([m.bias for m in layers])  # [N, out]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        return h.transpose(0, 1)  # [B, N, d_e]

    def last_weights(self) -> list[torch.Tensor]:
        """Every expert's last linear weight: the last layer all tasks share (GradNorm's ``W``)."""
        return [[m for m in expert.modules() if isinstance(m, nn.Linear)][-1].weight for expert in self]


class MixtureOfExperts(nn.Module):
    """MMoE core: N expert MLPs shared by K tasks, one softmax gate per task.

    ``forward`` returns (per-task mixtures ``[K, B, d_e]``, gates ``[K, B, N]``, experts
    ``[B, N, d_e]``); extra per-expert vectors may be appended to each expert's output before
    mixing (MoGE's ``[f^n(x) || Z^n]``).

    ``routes`` (optional, one list of expert indices per task) restricts task k's gate to the
    experts ``routes[k]`` (CGC / PLE: shared + task-specific experts): its softmax runs over those
    experts only and the returned ``[K, B, N]`` gates are 0 on the others (each row still sums
    to 1). ``None`` = every task mixes every expert (MMoE).
    """

    def __init__(self, in_dim: int, n_tasks: int, n_experts: int = 4, expert_hidden: list[int] | None = None,
                 gate_hidden: list[int] | None = None, gate_in_dim: int | None = None,
                 routes: list[list[int]] | None = None):
        super().__init__()
        expert_hidden = expert_hidden or [32, 32]
        if routes is not None:
            if len(routes) != n_tasks:
                raise ValueError(f"routes must list the experts of each of the {n_tasks} tasks, got {len(routes)} lists")
            for r in routes:
                if not r or len(set(r)) != len(r) or min(r) < 0 or max(r) >= n_experts:
                    raise ValueError(f"each route must be distinct expert indices in 0..{n_experts - 1}, got {r}")
        self.experts = ExpertPool(in_dim, n_experts, expert_hidden)
        self.routes = None if routes is None else [list(r) for r in routes]
        sizes = [n_experts] * n_tasks if routes is None else [len(r) for r in routes]
        self.gates = nn.ModuleList(SoftmaxGate(gate_in_dim or in_dim, n, gate_hidden) for n in sizes)
        self.n_experts = n_experts
        self.expert_dim = expert_hidden[-1]

    def gate_values(self, gate_in: torch.Tensor) -> torch.Tensor:
        """Every task's gate over all N experts, ``[K, B, N]`` (0 outside a task's route)."""
        return self._route([g(gate_in) for g in self.gates])

    def _route(self, per_task: list[torch.Tensor]) -> torch.Tensor:
        """The gates' outputs (task k's ``[B, |route_k|]``) as ``[K, B, N]``, 0 outside each route."""
        if self.routes is None:
            return torch.stack(per_task, dim=0)  # [K, B, N]
        out = []
        for g_k, route in zip(per_task, self.routes):
            idx = torch.as_tensor(route, device=g_k.device)
            out.append(g_k.new_zeros(g_k.shape[0], self.n_experts).index_copy(1, idx, g_k))  # [B, N]
        return torch.stack(out, dim=0)  # [K, B, N]

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None, gate_x: torch.Tensor | None = None):
        if gate_x is None:  # experts and gates read x: their first layers in one product
            w, b = self.first_layer()
            return self.from_first(torch.addmm(b, x, w.t()), extra)
        gates = self.gate_values(gate_x)  # [K, B, N]
        return self.mix(self.experts(x), gates, extra)

    def first_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The experts' first layers, then every gate's, stacked: weight ``[M, in_dim]``, bias
        ``[M]`` (``M = N h_1 + sum_k`` gate k's first size). Linear in ``x``, so a caller may
        precompute parts of ``x W^T`` (e.g. per node) and pass the sum to :meth:`from_first`."""
        firsts = [expert[0] for expert in self.experts] + [g.net[0] for g in self.gates]
        return torch.cat([m.weight for m in firsts]), torch.cat([m.bias for m in firsts])

    def from_first(self, pre: torch.Tensor, extra: torch.Tensor | None = None):
        """:meth:`forward` from ``pre = x W^T + b`` (``[B, M]``, :meth:`first_layer`) on."""
        return self.mix(*self.experts_and_gates(pre), extra)

    def experts_and_gates(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(experts ``[B, N, d_e]``, gates ``[K, B, N]``) from ``pre`` (:meth:`from_first`), not mixed."""
        e = self.experts.first_layer_size
        experts = self.experts.from_first(pre[:, :e])  # [B, N, d_e]
        if self.routes is None and all(len(g.net) == 1 for g in self.gates):  # linear gates: one softmax for all
            gates = small_softmax(pre[:, e:].reshape(len(pre), len(self.gates), -1)).transpose(0, 1)
        else:
            parts = torch.split(pre[:, e:], [g.net[0].out_features for g in self.gates], dim=-1)
            gates = self._route([g.from_first(p) for g, p in zip(self.gates, parts)])
        return experts, gates  # [B, N, d_e], [K, B, N]

    @staticmethod
    def mix(experts: torch.Tensor, gates: torch.Tensor, extra: torch.Tensor | None):
        """(mixtures ``[K, B, d]``, gates, experts ``[B, N, d]``): each task's gate-weighted sum of
        ``[f^n || extra^n]``."""
        if extra is not None:
            experts = torch.cat([experts, extra], dim=-1)  # [B, N, d_e + d_z]
        mixed = torch.einsum("kbn,bnd->kbd", gates, experts)  # [K, B, d]
        return mixed, gates, experts


class TaskTowers(nn.Module):
    """One head per task: ``y^k = v_k^T MLP_k(o^k)`` (no hidden layer = the paper's ``v^T o^k``)."""

    def __init__(self, in_dim: int, n_tasks: int, hidden: list[int] | None = None):
        super().__init__()
        self.towers = nn.ModuleList(MLP(in_dim, hidden or [], 1) for _ in range(n_tasks))

    def forward(self, per_task: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t(x) for t, x in zip(self.towers, per_task)], dim=-1)  # [B, K]

    def linear_heads(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(V [K, in_dim], c [K])`` when every head is one linear layer (``y = o^k V_k^T + c_k``);
        None when they have hidden layers."""
        if any(len(t) != 1 for t in self.towers):
            return None
        return torch.cat([t[0].weight for t in self.towers]), torch.cat([t[0].bias for t in self.towers])

    @torch.no_grad()
    def init_bias(self, prior_logits: torch.Tensor) -> None:
        """Start each head at its task's base rate: without it the first steps are spent pulling
        every logit down, which penalises large (popular) feature values and ranks backwards."""
        for tower, b in zip(self.towers, prior_logits):
            tower[-1].bias.fill_(float(b))


class HardConcreteGate(nn.Module):
    """Learned gates ``z in [0, 1]`` that reach exactly 0 and 1: the hard concrete distribution
    (Louizos, Welling & Kingma, ICLR 2018), a differentiable relaxation of binary gates.

    .. math::
        u \\sim U(0, 1),\\quad s = \\sigma\\big((\\log u - \\log(1 - u) + \\log\\alpha) / \\beta\\big)
        \\ (\\text{training}),\\qquad s = \\sigma(\\log\\alpha)\\ (\\text{eval})

        z = \\min\\big(1, \\max(0, s (\\zeta - \\gamma) + \\gamma)\\big), \\qquad
        \\mathbb{E}\\|z\\|_0 = \\textstyle\\sum \\sigma\\big(\\log\\alpha - \\beta \\log(-\\gamma / \\zeta)\\big)

    One ``z`` is drawn per forward call (per batch), shared by the batch's samples.

    Args:
        shape (tuple[int, ...]): shape of the gate tensor.
        init_log_alpha (float): initial ``log alpha`` (default: 0.0, z = 0.5 at eval: neither
            open nor closed).
        beta (float): temperature (default: 2/3, Louizos et al.).
        gamma, zeta (float): stretch interval, ``gamma < 0 < 1 < zeta`` (default: -0.1, 1.1).
    Shapes: ``() -> shape``.
    """

    def __init__(self, shape: tuple[int, ...], init_log_alpha: float = 0.0, beta: float = 2 / 3,
                 gamma: float = -0.1, zeta: float = 1.1):
        super().__init__()
        if not (gamma < 0 and zeta > 1) or beta <= 0:
            raise ValueError(f"hard concrete needs beta > 0 and gamma < 0 < 1 < zeta, got beta={beta}, gamma={gamma}, zeta={zeta}")
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        self.init_log_alpha = init_log_alpha
        self.log_alpha = nn.Parameter(torch.empty(tuple(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.log_alpha, self.init_log_alpha)

    def forward(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)  # shape

    def expected_l0(self) -> torch.Tensor:
        """Expected number of non-zero gates (the L0 penalty), a scalar."""
        shift = self.beta * torch.log(torch.tensor(-self.gamma / self.zeta))
        return torch.sigmoid(self.log_alpha - shift).sum()


class PairInteraction(nn.Module):
    """MoGE's interaction function ``kappa(a, b)`` of two d-vectors (paper section 4.2 / 5.6).

    ``ep``: ``a * b`` (element-wise product, the paper's default), ``add``: ``a + b``,
    ``con``: ``[a || b]``, ``mlp``: ``LeakyReLU(W [a || b] + c)`` (one layer, its own weights for
    each of the ``n_pairs`` pairs).

    Args:
        kind (str): ``ep``, ``add``, ``con`` or ``mlp``.
        dim (int): d.
        n_pairs (int): how many pairs are scored (one MLP each for ``mlp``) (default: 4).
    Shapes: ``a [B, P, d]``, ``b [B, P, d]`` -> ``[B, P, out_dim]`` (``out_dim`` = d, or 2d for ``con``).
    """

    KINDS = ("ep", "add", "con", "mlp")

    def __init__(self, kind: str, dim: int, n_pairs: int = 4):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"interaction must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.out_dim = 2 * dim if kind == "con" else dim
        self.mlps = nn.ModuleList(MLP(2 * dim, [dim]) for _ in range(n_pairs)) if kind == "mlp" else None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.kind == "ep":
            return a * b  # [B, P, d]
        if self.kind == "add":
            return a + b  # [B, P, d]
        ab = torch.cat([a, b], dim=-1)  # [B, P, 2d]
        if self.kind == "con":
            return ab
        return torch.stack([f(ab[:, n]) for n, f in enumerate(self.mlps)], dim=1)  # [B, P, d]

    def grid(self, a2: torch.Tensor, b2: torch.Tensor, n_pairs: int) -> torch.Tensor:
        """``kappa`` of the pairs ``(a2[:, j], b2[:, l])`` in row-major order (j, then l), the first
        ``n_pairs``: ``a2 [B, J, d]``, ``b2 [B, L, d]`` -> ``[B, n_pairs, out_dim]``. ``ep`` and
        ``add`` broadcast (no ``[B, J L, d]`` copies of the inputs)."""
        B, J, d = a2.shape
        L = b2.shape[1]
        if self.kind in ("ep", "add"):
            out = a2.unsqueeze(2) * b2.unsqueeze(1) if self.kind == "ep" else a2.unsqueeze(2) + b2.unsqueeze(1)
            return out.reshape(B, J * L, d)[:, :n_pairs]
        a = a2.unsqueeze(2).expand(B, J, L, d).reshape(B, J * L, d)[:, :n_pairs]
        b = b2.unsqueeze(1).expand(B, J, L, d).reshape(B, J * L, d)[:, :n_pairs]
        return self(a, b)
