"""The MoGE paper's expert-routing baselines (section 5.2) and their "+Graph" variants: SNR-Trans
(experts routed to tasks by coded transforms) and CGC (shared + task-specific experts, per-task
gates). Conventions as in :mod:`ml_core.models.baselines`: inputs from :mod:`ml_core.models.inputs`,
heads :class:`~ml_core.nn.dense.TaskTowers`, sizes from section 5.4 (4 experts of [32, 32]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import check_sizes
from ml_core.models.inputs import FeatureInput, register_with_graph
from ml_core.nn.dense import ExpertPool, HardConcreteGate, MixtureOfExperts, TaskTowers


# -- SNR-Trans ----------------------------------------------------------------------------------------
@dataclass
class SNRTransConfig:
    """SNR-Trans's options (``train.model_args``); ``snr_trans_graph`` adds the MGNN options."""

    #: N lower sub-networks: the MoGE paper's "4 experts" (section 5.4)
    n_experts: int = 4
    #: their MLP sizes: "[32, 32]" (MoGE paper section 5.4)
    expert_hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: ``d_u``, the size of ``W_kn e_n``; None = the expert size (choice)
    route_dim: int | None = None
    #: the upper (per-task) sub-network: one hidden layer [32], so the transforms add something (choice)
    tower_hidden: list[int] = field(default_factory=lambda: [32])
    #: lambda_0, weight of the expected L0 norm of the codes, divided by |H| (choice, as MoGE's L2)
    l0: float = 1e-3
    #: initial code logit: eval code 0.78, mostly open (choice)
    init_log_alpha: float = 1.0

    def __post_init__(self) -> None:
        check_sizes(expert_hidden=self.expert_hidden, tower_hidden=self.tower_hidden)
        if self.l0 < 0:
            raise ValueError(f"l0 must be >= 0, got {self.l0}")


@register_with_graph("snr_trans", SNRTransConfig)
class SNRTrans(FeatureInput):
    """SNR-Trans: Sub-Network Routing with transformation matrices (Ma et al., AAAI 2019).

    The shared bottom is split into N sub-networks (experts); the connection from expert n to
    task k's upper sub-network is a transformation matrix ``W_kn`` switched by a learned code
    ``z_kn in [0, 1]`` (hard concrete: exact 0/1 reachable, L0-penalised):

    .. math::
        e_n = f^n(x), \\qquad u_k = \\sum_{n=1}^{N} z_{kn} W_{kn} e_n, \\qquad
        \\hat{y}^k = \\sigma\\big(v_k^\\top \\mathrm{MLP}_k(u_k)\\big)

        \\mathcal{L} = \\sum_k \\mathrm{BCE}_k + \\frac{\\lambda_0}{|H|}\\ \\mathbb{E}\\|z\\|_0

    Choices: the paper's two levels of sub-networks read as N = 4 lower experts [32, 32]
    (section 5.4) routed to one upper sub-network per task, the task tower's hidden layer [32]
    (without it ``v_k^T W_kn`` would fold into one vector and the transforms would add nothing).
    ``W`` is one ``[K, N, d_e, d_u]`` parameter (a plain Python list of matrices - a known fault
    of a public implementation - is invisible to ``parameters()`` and never trains). Codes:
    :class:`~ml_core.nn.dense.HardConcreteGate` (Louizos et al.'s beta 2/3, gamma -0.1,
    zeta 1.1), one draw per batch in training, the deterministic ``clamp(sigmoid(log alpha)
    (zeta - gamma) + gamma, 0, 1)`` in eval; ``log alpha`` starts at ``init_log_alpha``. The
    L0 penalty's weight is divided by the training-set size ``|H|`` (read in :meth:`prepare`),
    the summed objective's per-sample share as in MoGE's L2.

    Configuration: :class:`SNRTransConfig`.
    Shapes: Batch of B samples -> logits ``[B, K]``; :meth:`codes` -> ``[K, N]``.
    """

    def __init__(self, spec: ModelSpec, config: SNRTransConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        n_experts = cfg.n_experts
        self.spec = spec
        self.l0 = cfg.l0
        self.n_train: int | None = None
        in_dim = self.build_input(spec, cfg)
        self.experts = ExpertPool(in_dim, n_experts, list(cfg.expert_hidden))  # f^n
        d_e = self.experts.out_dim
        d_u = int(cfg.route_dim or d_e)
        self.transforms = nn.Parameter(torch.empty(spec.n_tasks, n_experts, d_e, d_u))  # W_kn
        self.code = HardConcreteGate((spec.n_tasks, n_experts), init_log_alpha=cfg.init_log_alpha)  # z_kn
        self.towers = TaskTowers(d_u, spec.n_tasks, list(cfg.tower_hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        d_e, d_u = self.transforms.shape[-2:]
        bound = math.sqrt(6.0 / (d_e + d_u))  # Glorot for each W_kn
        nn.init.uniform_(self.transforms, -bound, bound)

    def codes(self) -> torch.Tensor:
        """``z [K, N]`` (sampled in training mode, deterministic in eval)."""
        return self.code()

    def forward(self, batch) -> torch.Tensor:
        e = self.experts(self.model_input(batch))  # [B, N, d_e]
        z = self.codes()  # [K, N]
        u = torch.einsum("kn,bne,kneu->kbu", z.to(e.dtype), e, self.transforms.to(e.dtype))  # [K, B, d_u]
        return self.towers(u)  # [B, K]

    def compute_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        logits, loss, parts = super().compute_loss(batch)
        if self.l0 > 0:
            l0 = self.code.expected_l0()
            loss = loss + (self.l0 / (self.n_train or len(batch))) * l0
            parts["l0"] = float(l0.detach())
        return logits, loss, parts

    def prepare(self, contexts) -> None:
        """Trainer hook before step 1: ``|H|``, the number of training samples (scales the L0 term)."""
        self.n_train = int(sum(c.n_samples for c in contexts)) or None


# -- CGC ----------------------------------------------------------------------------------------------
@dataclass
class CGCConfig:
    """CGC's options (``train.model_args``); ``cgc_graph`` adds the MGNN options."""

    #: shared experts: the paper's 4 experts read as 2 shared + 1 per task at K = 2 (MMoE's budget)
    n_shared: int = 2
    #: experts per task (as above)
    n_specific: int = 1
    #: expert MLP sizes: "[32, 32]" (MoGE paper section 5.4)
    expert_hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: gate hidden layers; None = linear + softmax, as MMoE
    gate_hidden: list[int] | None = None
    #: tower hidden layers; None = a linear head, as MMoE
    tower_hidden: list[int] | None = None

    def __post_init__(self) -> None:
        check_sizes(expert_hidden=self.expert_hidden, gate_hidden=self.gate_hidden, tower_hidden=self.tower_hidden)
        if self.n_shared < 0 or self.n_specific < 0 or self.n_shared + self.n_specific < 1:
            raise ValueError(f"CGC needs n_shared, n_specific >= 0 and at least one expert per task, "
                             f"got n_shared={self.n_shared}, n_specific={self.n_specific}")


@register_with_graph("cgc", CGCConfig)
class CGC(FeatureInput):
    """CGC: Customized Gate Control, i.e. PLE with one extraction level (Tang et al., RecSys 2020).

    Shared experts ``S`` and task-specific experts ``E_k``; task k's gate mixes only its own and
    the shared experts:

    .. math::
        o^k = \\sum_{n \\in E_k \\cup S} g^k(x)_n f^n(x), \\qquad
        g^k(x) = \\mathrm{softmax}_{n \\in E_k \\cup S}(W_k x), \\qquad
        \\hat{y}^k = \\sigma(v_k^\\top o^k)

    (:class:`~ml_core.nn.dense.MixtureOfExperts` with per-task ``routes``; experts are
    ordered shared first, then each task's.) Sizes: the paper's 4 experts [32, 32] read as 2
    shared + 1 specific per task (4 in all at K = 2, MMoE's budget); linear gates and heads as
    MMoE. With one extraction level there is no shared gate (PLE's is only needed to feed a
    next level).

    Configuration: :class:`CGCConfig`.
    Shapes: Batch of B samples -> logits ``[B, K]``; gates ``[K, B, n_shared + K n_specific]``.
    """

    def __init__(self, spec: ModelSpec, config: CGCConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        n_shared, n_specific = cfg.n_shared, cfg.n_specific
        self.spec = spec
        K = spec.n_tasks
        shared = list(range(n_shared))
        routes = [shared + [n_shared + k * n_specific + j for j in range(n_specific)] for k in range(K)]
        in_dim = self.build_input(spec, cfg)
        self.moe = MixtureOfExperts(in_dim, K, n_shared + K * n_specific, list(cfg.expert_hidden),
                                    cfg.gate_hidden, routes=routes)
        self.towers = TaskTowers(self.moe.expert_dim, K, cfg.tower_hidden)

    def forward_with_gates(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``[B, K]``, gates ``[K, B, N]``, 0 outside each task's experts)."""
        mixed, gates, _ = self.moe(self.model_input(batch))  # o^k [K, B, 32], g^k [K, B, N]
        return self.towers(mixed), gates

    def forward(self, batch) -> torch.Tensor:
        return self.forward_with_gates(batch)[0]
