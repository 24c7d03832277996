"""The MoGE paper's multi-task baselines (section 5.2) and their "+Graph" variants.

Each body reads ``x`` from its input class (:mod:`ml_core.models.inputs`): ``x = [p_u || q_i]``
(``[B, 2d]``) for ``<name>``, ``x = [h_u || h_i || s_u || s_i]`` (``[B, 4d]``, from an MGNN)
for ``<name>_graph``. Every body ends in :class:`~ml_core.nn.dense.TaskTowers` (one head
per task, its bias initialised to the task's base rate by ``set_task_priors``) and is trained
with the sum of the tasks' mean BCE (no L2 term, as MMoE here).

=================  =====================================================  ======================
registry name      body                                                   paper
=================  =====================================================  ======================
``shared_bottom``  one shared MLP, a tower per task                       Caruana 1997
``cross_stitch``   one MLP column per task, learned linear mixing          Misra et al. CVPR 2016
``esmm``           CTR and CVR towers, ``pCTCVR = pCTR * pCVR``           Ma et al. SIGIR 2018
``snr_trans``      experts routed to tasks by coded transforms            Ma et al. AAAI 2019
``cgc``            shared + task-specific experts, per-task gates         Tang et al. RecSys 2020
=================  =====================================================  ======================

(``snr_trans`` and ``cgc`` are in :mod:`ml_core.models.routing`, ``mmoe`` / ``mmoe_graph`` in
:mod:`ml_core.models.mmoe`.) Sizes follow section 5.4
where it gives them: ESMM's towers [512, 256, 128]; 4 experts of [32, 32] for the expert
models. The gates there are "[16, 16]" but also "linear + softmax": linear by default here,
as MMoE and MoGE (``gate_hidden=[16, 16]`` gives the other reading).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import check_sizes
from ml_core.models.inputs import FeatureInput, register_with_graph
from ml_core.nn.dense import MLP, TaskTowers


# -- Shared-Bottom ------------------------------------------------------------------------------------
@dataclass
class SharedBottomConfig:
    """Shared-Bottom's options (``train.model_args``); ``shared_bottom_graph`` adds the MGNN options."""

    #: the shared MLP: as wide as MMoE's four [32, 32] experts side by side (MoGE paper section 5.4)
    bottom_hidden: list[int] = field(default_factory=lambda: [128, 128])
    #: each task's tower hidden sizes: one layer, so the tasks differ by more than a linear map (choice)
    tower_hidden: list[int] = field(default_factory=lambda: [32])

    def __post_init__(self) -> None:
        check_sizes(bottom_hidden=self.bottom_hidden, tower_hidden=self.tower_hidden)


@register_with_graph("shared_bottom", SharedBottomConfig)
class SharedBottom(FeatureInput):
    """Shared-Bottom (hard parameter sharing; Caruana 1997).

    .. math::
        b = \\mathrm{MLP}_{shared}(x), \\qquad \\hat{y}^k = \\sigma\\big(v_k^\\top \\mathrm{MLP}_k(b)\\big)

    Sizes (the paper lists "4 experts [32, 32]" for Shared-Bottom, which has no experts): the
    bottom is as wide as MMoE's four [32, 32] experts side by side, [128, 128], dense and shared
    by every task; each task keeps a one-layer tower [32] so that the tasks differ by more than
    their last linear map.

    Configuration: :class:`SharedBottomConfig`.
    Shapes: Batch of B samples -> logits ``[B, K]``.
    """

    def __init__(self, spec: ModelSpec, config: SharedBottomConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        self.spec = spec
        in_dim = self.build_input(spec, cfg)
        self.bottom = MLP(in_dim, list(cfg.bottom_hidden))
        self.towers = TaskTowers(self.bottom.out_dim, spec.n_tasks, list(cfg.tower_hidden))

    def forward(self, batch) -> torch.Tensor:
        b = self.bottom(self.model_input(batch))  # [B, 128]
        return self.towers([b] * self.spec.n_tasks)  # [B, K]


# -- Cross-Stitch -------------------------------------------------------------------------------------
class CrossStitchUnit(nn.Module):
    """Learned linear mixing of the K task columns' activations (Misra et al. 2016, eq. 1).

    .. math::
        \\tilde{h}^k = \\sum_{j=1}^{K} \\alpha_{kj} h^j

    One scalar per (task, task) pair and layer (the paper's cross-stitch unit, not per channel).
    Initialised to ``alpha_kk = init_self`` and ``alpha_kj = (1 - init_self) / (K - 1)`` (the
    paper's best initialisation for two tasks is ``(alpha_S, alpha_D) = (0.9, 0.1)``; each row
    starts as a convex combination). Alphas are not constrained during training (as in the
    paper); their learning-rate multiplier (1e2-1e3 in the paper) is not used: the trainer's
    optimizer has one learning rate.

    Shapes: ``h [K, B, d]`` -> ``[K, B, d]``.
    """

    def __init__(self, n_tasks: int, init_self: float = 0.9):
        super().__init__()
        self.n_tasks = n_tasks
        self.init_self = init_self
        self.alpha = nn.Parameter(torch.empty(n_tasks, n_tasks))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        K = self.n_tasks
        off = (1.0 - self.init_self) / (K - 1) if K > 1 else 0.0
        with torch.no_grad():
            self.alpha.fill_(off).fill_diagonal_(self.init_self if K > 1 else 1.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kj,jbd->kbd", self.alpha.to(h.dtype), h)  # [K, B, d]


@dataclass
class CrossStitchConfig:
    """Cross-Stitch's options (``train.model_args``); ``cross_stitch_graph`` adds the MGNN options."""

    #: each column's layer sizes, a stitch after every layer: the "[32, 32]" unit (MoGE paper section 5.4)
    hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: initial ``alpha_kk``, in [0, 1] (Misra et al. initialise the self weight high, 0.9)
    init_self: float = 0.9

    def __post_init__(self) -> None:
        check_sizes(hidden=self.hidden)
        if not self.hidden:
            raise ValueError("hidden must list at least one layer (a stitch follows each)")
        if not 0.0 <= self.init_self <= 1.0:
            raise ValueError(f"init_self must be in [0, 1], got {self.init_self}")


@register_with_graph("cross_stitch", CrossStitchConfig)
class CrossStitch(FeatureInput):
    """Cross-Stitch networks (Misra et al., CVPR 2016).

    One MLP column per task; after every hidden layer a :class:`CrossStitchUnit` mixes the
    columns' activations:

    .. math::
        h^k_0 = x, \\qquad
        h^k_{l+1} = \\sum_j \\alpha^{(l)}_{kj}\\ \\mathrm{LeakyReLU}(W^k_l h^j_l + b^k_l), \\qquad
        \\hat{y}^k = \\sigma(v_k^\\top h^k_L)

    Sizes: each column is [32, 32] (the paper's "[32, 32]" unit for the expert models; one
    column per task rather than four experts), a linear head per task.

    Configuration: :class:`CrossStitchConfig`.
    Shapes: Batch of B samples -> logits ``[B, K]``.
    """

    def __init__(self, spec: ModelSpec, config: CrossStitchConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        self.spec = spec
        hidden = list(cfg.hidden)
        init_self = cfg.init_self
        in_dim = self.build_input(spec, cfg)
        dims = [in_dim, *hidden]
        self.columns = nn.ModuleList(  # columns[l][k]: task k's layer l
            nn.ModuleList(MLP(dims[l], [dims[l + 1]]) for _ in range(spec.n_tasks)) for l in range(len(hidden)))
        self.stitches = nn.ModuleList(CrossStitchUnit(spec.n_tasks, init_self) for _ in hidden)
        self.towers = TaskTowers(hidden[-1], spec.n_tasks)

    def forward(self, batch) -> torch.Tensor:
        x = self.model_input(batch)  # [B, d_in]
        h = [x] * self.spec.n_tasks
        for layer, stitch in zip(self.columns, self.stitches):
            h = stitch(torch.stack([f(h_k) for f, h_k in zip(layer, h)]))  # [K, B, d_l]
        return self.towers(h)  # [B, K]


# -- ESMM ---------------------------------------------------------------------------------------------
def logit_of_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``logit(sigmoid(a) * sigmoid(b))``, stable for any finite ``a``, ``b``.

    ``log p = log sigma(a) + log sigma(b)`` and, since ``1 - sigma(a) sigma(b) = sigma(-a) +
    sigma(a) sigma(-b)``, ``log(1 - p) = logaddexp(log sigma(-a), log sigma(a) + log sigma(-b))``:
    no ``1 - p`` is formed, so the logit stays finite when ``p`` is within float eps of 0 or 1.
    """
    ls = nn.functional.logsigmoid
    log_p = ls(a) + ls(b)
    log_not_p = torch.logaddexp(ls(-a), ls(a) + ls(-b))
    return log_p - log_not_p


@dataclass
class ESMMConfig:
    """ESMM's options (``train.model_args``); ``esmm_graph`` adds the MGNN options."""

    #: each tower's hidden sizes: "[512, 256, 128]" (MoGE paper section 5.4)
    tower_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])

    def __post_init__(self) -> None:
        check_sizes(tower_hidden=self.tower_hidden)


@register_with_graph("esmm", ESMMConfig)
class ESMM(FeatureInput):
    """ESMM: Entire Space Multi-task Model (Ma et al., SIGIR 2018).

    Task 0 is the click (CTR), every later task k a post-click conversion (CVR_k); both towers
    read the same shared input (the paper's shared embedding layer):

    .. math::
        p_{CTR} = \\sigma(a_0),\\quad p_{CVR,k} = \\sigma(a_k),\\quad a_k = \\mathrm{MLP}_k(x)

        p_{CTCVR,k} = p_{CTR} \\cdot p_{CVR,k}, \\qquad
        \\mathrm{logits} = [a_0,\\ \\mathrm{logit}(p_{CTCVR,1}), \\ldots]

    so the trainer's BCE on the logits is ESMM's loss over the entire space: BCE(pCTR, click)
    + BCE(pCTCVR_k, y_k); pCVR is never fitted on its own. ``logit(pCTCVR)`` is computed from
    log-sigmoids (:func:`logit_of_product`), never as ``logit(product)``.

    Choices: with more than two tasks each later task is its own CVR tower times the same pCTR
    (each conversion is conditioned on the click only); the CVR prior of
    :meth:`set_task_priors` is ``logit(rate_k / rate_0)`` (a conversion implies a click, as the
    sample builder's "click" = any interaction), so at step 0 ``pCTCVR_k`` equals task k's base
    rate. Towers [512, 256, 128] (section 5.4) with LeakyReLU, then a linear head.

    Tasks: K >= 2, task 0 = click. Configuration: :class:`ESMMConfig`.
    Shapes: Batch of B samples -> logits ``[B, K]``.
    """

    def __init__(self, spec: ModelSpec, config: ESMMConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        if spec.n_tasks < 2:
            raise ValueError(f"ESMM needs a click task and at least one conversion task, got tasks {spec.tasks}")
        self.spec = spec
        in_dim = self.build_input(spec, cfg)
        self.towers = TaskTowers(in_dim, spec.n_tasks, list(cfg.tower_hidden))  # a_0 (CTR), a_k (CVR_k)

    def tower_logits(self, batch) -> torch.Tensor:
        """``[a_0 (CTR), a_1 (CVR_1), ...]``, ``[B, K]``."""
        x = self.model_input(batch)  # [B, d_in]
        return self.towers([x] * self.spec.n_tasks)  # [B, K]

    def forward(self, batch) -> torch.Tensor:
        a = self.tower_logits(batch)  # [B, K]
        ctr = a[:, :1]  # [B, 1]
        return torch.cat([ctr, logit_of_product(ctr, a[:, 1:])], dim=-1)  # [B, K]: CTR, CTCVR_k

    @torch.no_grad()
    def set_task_priors(self, rates: torch.Tensor) -> None:
        rates = rates.clamp(1e-4, 1 - 1e-4)
        cvr = torch.cat([rates[:1], (rates[1:] / rates[0]).clamp(1e-4, 1 - 1e-4)])  # [K]: pCTR, pCVR_k
        self.towers.init_bias(torch.logit(cvr))
