"""MoGE: Mixture of Graph-enhanced Experts for multi-task recommendation (MoGE paper, section 4).

Pipeline of one sample (u, i), symbol by symbol:

.. math::
    p_u = x_u P, \\quad q_i = x_i Q, \\quad \\hat{x} = [p_u \\| q_i]
        \\qquad \\text{(shared transform; ids count as features)}

    (h_u, h_i, s_u, s_i) = \\mathrm{MGNN}(u, i)
        \\qquad \\text{(section 4.1, :mod:`ml_core.models.mgnn`)}

    \\mathcal{Z} = \\{\\kappa(h_u, h_i), \\kappa(h_u, s_i), \\kappa(s_u, h_i), \\kappa(s_u, s_i)\\}

    o^k = \\sum_{n=1}^{N} g^k(\\hat{x})_n \\, [f^n(\\hat{x}) \\| \\mathcal{Z}^n], \\qquad
    \\hat{y}^k = \\sigma(v_k^\\top o^k)

    \\mathcal{L} = \\sum_k \\big(e^{-s_k} \\mathrm{BCE}_k + s_k\\big) + \\beta \\mathcal{L}_{co}
        + \\lambda \\|\\Theta\\|^2 \\qquad \\text{(section 4.3, :mod:`ml_core.nn.losses`)}

Experts ``f^n``: MLP [32, 32] with LeakyReLU; gates ``g^k``: linear + softmax over the N
experts (normalised by the softmax only); ``v_k``: a linear head per task.

Readings of the paper (documented choices):

* ``x^``: the paper writes ``[x_u || x_i]``; the raw inputs here are ids + categorical codes +
  numerics, so experts and gates read the shared transforms ``[p_u || q_i]`` (also MMoE's
  input in this package). Consequence: with ``use_mgnn=False`` (``Z`` dropped) MoGE *is* MMoE,
  parameter for parameter (a unit test loads MMoE's weights and compares outputs).
* ``N = n_experts`` (1..4) experts; expert ``n`` carries ``Z^n`` in the order above, so
  ``n_experts`` adds the graph-enhanced experts "from left to right" (ablation 5.8);
  ``use_mgnn=False`` is the "no graph-enhanced expert" end of that ablation.
* ``lambda ||Theta||^2``: the paper's objective sums the cross-entropies (and ``L_co``) over all
  training samples H and adds ``lambda ||Theta||^2`` once. Divided by ``|H|`` to match the
  trainer's batch-mean BCE, its per-batch estimate is
  ``mean_B BCE + beta mean_B L_co + (lambda / |H|) ||Theta||^2``: that is what is applied
  (``|H|`` = training samples, read in :meth:`prepare`; without it, the batch size). Dense
  parameters are penalised entirely, id-embedding tables only on the rows the batch reads
  (the other rows' penalty gradient is negligible at ``lambda / |H|`` and would cost a pass over
  the whole table per step). ``s_k`` are not penalised. Measured alternatives (closing note of
  issue 4): ``lambda / B`` per batch - Adam normalises the penalty's gradient, so on parameters
  whose loss gradient is still tiny (the graph path at initialisation) it acts as a decay of
  ~lr per step and kept MoGE from ever using the graph on the planted-signal data; ``lambda``
  on every parameter erases id rows a batch does not read.
* ``L_co`` is averaged over the batch (the trainer's BCEs are batch means too).
* ``weighting = "gradnorm"`` replaces term (i) by GradNorm (:mod:`ml_core.nn.gradnorm`) over the
  K task losses, with ``W`` = the experts' last layers (the last parameters every task shares);
  ``"sum"`` is the plain ``sum_k BCE_k`` (ablation 5.7's "no (i)").

Paper hyper-parameters (section 5.4): Adam, lr 1e-4, batch 256, d 64, L 2, 4 experts [32, 32],
gates [16, 16] (the text also says "simple linear transform + softmax": the default here is
linear; pass ``gate_hidden=[16, 16]`` for the other reading), beta 1e-6, lambda 1e-3. The
trainer's default lr is 1e-3: our daily windows hold ~10^4-10^5 samples, not 10^6, and at 1e-4
the models are still far from converged after the same budget.

Configuration: :class:`MoGEConfig` (``spec``: input sizes, tasks, d, fan-outs).
Shapes: Batch of B samples (with sampled ``channels``) -> logits ``[B, K]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ml_core.contracts.batch import CHANNELS
from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import (
    GraphNeeds,
    RecModel,
    bce_per_task,
    check_choice,
    check_sizes,
)
from ml_core.models.mgnn import MGNN, REPRESENTATIONS, encode_day
from ml_core.models.precompute import first_layer_of_pairs, is_projected, logits_from_first, pair_reps, project_nodes
from ml_core.models.registry import register
from ml_core.models.state_cache import LayerStateCache
from ml_core.nn.dense import (
    FeatureEncoder,
    MixtureOfExperts,
    PairInteraction,
    TaskTowers,
)
from ml_core.nn.gradnorm import GradNorm
from ml_core.nn.graph import GatedCombine
from ml_core.nn.losses import UncertaintyWeighting, expert_cooperation_loss, l2_penalty

#: loss term (i)'s choices (``MoGEConfig.weighting``)
WEIGHTINGS = ("uncertainty", "gradnorm", "sum")
#: Z^n = kappa(a, b) for the pairs, in the paper's order: (h_u,h_i), (h_u,s_i), (s_u,h_i), (s_u,s_i).
PAIRS = (("h_u", "h_i"), ("h_u", "s_i"), ("s_u", "h_i"), ("s_u", "s_i"))
#: scoring's per-node stacks of Z's inputs (``[h_u, s_u]``, ``[h_i, s_i]``: PAIRS is their row-major grid)
STACKED = ("hs_u", "hs_i")


@dataclass
class MoGEConfig:
    """MoGE's options (``train.model_args``)."""

    #: ``kappa``: ``ep`` (element-wise product, the paper's default), ``con``, ``add``, ``mlp`` (ablation 5.6)
    interaction: str = "ep"
    #: N graph-enhanced experts, 1..4, one per graph interaction pair: "4 experts" (section 5.4; ablation 5.8)
    n_experts: int = 4
    #: expert MLP sizes: "[32, 32]" (section 5.4)
    expert_hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: gate hidden layers; None = "simple linear transform + softmax" (section 5.4's text; its [16, 16] the other reading)
    gate_hidden: list[int] | None = None
    #: MGNN layers L; None = ``len(spec.fanouts)`` (section 5.4: L = 2)
    layers: int | None = None
    #: MGNN combine ``f``: "usually an LSTM-like operator" (section 4.1): a GRU cell
    combine: str = "gru"
    #: MGNN channels; None = all three (section 4.1)
    channels: list[str] | None = None
    #: loss term (i), the task weighting: "uncertainty" (learned ``s_k``, section 4.3), "gradnorm"
    #: (Chen et al. 2018 on the experts' last layer, as E2E-GRec balances its losses) or "sum"
    weighting: str = "uncertainty"
    #: GradNorm's asymmetry (``weighting = "gradnorm"``): 1.5, Chen et al.'s most used value
    alpha: float = 1.5
    #: learning rate of the GradNorm weights; None = the trainer's lr
    gradnorm_lr: float | None = None
    #: loss term (ii), expert co-operation ``beta L_co`` (section 4.3)
    co_loss: bool = True
    #: weight of ``L_co``: 1e-6 (section 5.4)
    beta: float = 1e-6
    #: lambda, loss term (iii): 1e-3 (section 5.4); 0 disables it
    l2: float = 1e-3
    #: False drops the MGNN and ``Z`` (= MMoE; the reduction the tests check)
    use_mgnn: bool = True
    #: the node vectors the experts and gates read, ``x^`` (then the pair's history); None = the
    #: paper's ``[p_u, q_i]`` (``Z`` reaches the graph only after the experts). Any of ``p_u, q_i,
    #: h_u, h_i, s_u, s_i``, e.g. all six (E2E-GRec's "feature-level fusion") or MMoE + Graph's four
    expert_input: list[str] | None = None
    #: 0: every batch runs the L layers over its sampled L-hop subgraph (the paper's). N > 0:
    #: train from one-hop batches over cached layer states of the neighbours, recomputed over each
    #: training day every N steps (historical embeddings, :mod:`~ml_core.models.state_cache`);
    #: inference is unchanged
    state_cache: int = 0

    def __post_init__(self) -> None:
        check_sizes(expert_hidden=self.expert_hidden, gate_hidden=self.gate_hidden)
        check_choice("interaction", self.interaction, PairInteraction.KINDS)
        check_choice("combine", self.combine, GatedCombine.KINDS)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        if self.gradnorm_lr is not None and self.gradnorm_lr <= 0:
            raise ValueError(f"gradnorm_lr must be > 0, got {self.gradnorm_lr}")
        blocks = self.expert_input
        if blocks is not None and (not blocks or len(set(blocks)) != len(blocks) or not set(blocks) <= set(REPRESENTATIONS)):
            raise ValueError(f"expert_input must be distinct names among {REPRESENTATIONS}, got {blocks}")
        if blocks is not None and not self.use_mgnn and not set(blocks) <= {"p_u", "q_i"}:
            raise ValueError(f"expert_input {blocks} reads MGNN outputs: it needs use_mgnn = true")
        if not 1 <= self.n_experts <= len(PAIRS):
            raise ValueError(f"n_experts must be in 1..{len(PAIRS)} (one per graph interaction), got {self.n_experts}")
        if self.state_cache < 0 or (self.state_cache and not self.use_mgnn):
            raise ValueError(f"state_cache must be >= 0 steps and needs use_mgnn = true, got {self.state_cache}")
        if self.beta < 0 or self.l2 < 0:
            raise ValueError(f"beta and l2 must be >= 0, got beta={self.beta}, l2={self.l2}")


@register("moge", MoGEConfig)
class MoGE(RecModel):
    graph_needs = GraphNeeds.SUBGRAPHS

    def __init__(self, spec: ModelSpec, config: MoGEConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        n_experts, beta, l2 = cfg.n_experts, cfg.beta, cfg.l2
        co_loss, use_mgnn, interaction = cfg.co_loss, cfg.use_mgnn, cfg.interaction
        self.spec = spec
        self.n_experts = n_experts
        self.co_loss = co_loss
        self.beta = beta
        self.l2 = l2
        self.n_train: int | None = None  # |H|, set by prepare()
        self.user_enc = FeatureEncoder(spec.user, spec.dim)  # P
        self.item_enc = FeatureEncoder(spec.item, spec.dim)  # Q
        if use_mgnn:
            self.mgnn = MGNN(spec, layers=cfg.layers, channels=tuple(cfg.channels or CHANNELS), combine=cfg.combine,
                             user_enc=self.user_enc, item_enc=self.item_enc)
            self.interaction = PairInteraction(interaction, spec.dim, n_experts)  # kappa
            z_dim = self.interaction.out_dim
        else:
            self.mgnn = None
            self.interaction = None
            z_dim = 0
        history_dim = self.build_history_input(spec)  # r_ui, s(u, i) (0 without either)
        self.input_blocks = tuple(cfg.expert_input or ("p_u", "q_i"))  # x^ before the history
        self.moe = MixtureOfExperts(len(self.input_blocks) * spec.dim + history_dim, spec.n_tasks, n_experts, list(cfg.expert_hidden), cfg.gate_hidden)
        self.towers = TaskTowers(self.moe.expert_dim + z_dim, spec.n_tasks)  # v_k
        self.task_weighting = UncertaintyWeighting(spec.n_tasks, enabled=cfg.weighting == "uncertainty")  # s_k
        self.gradnorm = GradNorm(spec.n_tasks, cfg.alpha) if cfg.weighting == "gradnorm" else None
        self.gradnorm_lr = cfg.gradnorm_lr
        self.state_cache = LayerStateCache(cfg.state_cache, spec.fanouts) if cfg.state_cache else None

    def training_fanouts(self, fanouts: list[int]) -> list[int]:
        """One hop with a state cache (the neighbours' deeper layers are cached), else ``fanouts``."""
        return list(fanouts[:1]) if self.state_cache is not None else list(fanouts)

    def graph_interactions(self, reps: dict[str, torch.Tensor]) -> torch.Tensor:
        """``Z``: ``[B, N, d_z]``, expert n's interaction ``kappa`` of pair n (see ``PAIRS``)."""
        pairs = PAIRS[: self.n_experts]
        a = torch.stack([reps[x] for x, _ in pairs], dim=1)  # [B, N, d]
        b = torch.stack([reps[y] for _, y in pairs], dim=1)  # [B, N, d]
        return self.interaction(a, b)  # [B, N, d_z]

    def forward_with_gates(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``[B, K]``, gates ``[K, B, N]``)."""
        if self.mgnn is None:
            reps, z = {"p_u": self.user_enc(batch.user), "q_i": self.item_enc(batch.item)}, None
        else:
            cached = self.state_cache is not None and self.training and batch.channels is not None
            states = self.state_cache.of(self.mgnn, batch.day) if cached else None
            reps = self.mgnn.representations(batch, states)  # p_u, q_i, h_u, h_i, s_u, s_i: [B, d] each
            z = self.graph_interactions(reps)  # [B, N, d_z]
        # x^ [B, 2d] (expert_input: [B, len * d]) (+ r_ui, s(u, i): [B, d] each)
        x = self.with_history(torch.cat([reps[k] for k in self.input_blocks], dim=-1), batch)
        mixed, gates, _ = self.moe(x, extra=z)  # o^k: [K, B, 32 + d_z], g^k: [K, B, N]
        return self.towers(mixed), gates  # [B, K], [K, B, N]

    def forward(self, batch) -> torch.Tensor:
        return self.forward_with_gates(batch)[0]

    def encode_nodes(self, ctx, fanouts: list[int] | None = None, seed: int = 0):
        """Every node's ``p_u, h_u, s_u`` / ``q_i, h_i, s_i``, layer-wise over the day
        (:func:`~ml_core.models.mgnn.encode_day`); without the MGNN, the node inputs."""
        return super().encode_nodes(ctx) if self.mgnn is None else encode_day(self.mgnn, ctx, fanouts, seed)

    @torch.no_grad()
    def scoring_reps(self, reps):
        """With the experts' and gates' first layer of ``x^``'s node vectors per node
        (:mod:`~ml_core.models.precompute`) and each side's two inputs of ``Z`` stacked (``[n, 2, d]``)."""
        u, i = reps.user_reps, reps.item_reps
        if self.mgnn is None:  # encode_nodes gave the node inputs only
            u, i = {**u, "p_u": self.user_enc(reps.users)}, {**i, "q_i": self.item_enc(reps.items)}
        else:
            u = {**u, STACKED[0]: torch.stack([u["h_u"], u["s_u"]], dim=1)}
            i = {**i, STACKED[1]: torch.stack([i["h_i"], i["s_i"]], dim=1)}
        return project_nodes(self.moe, self.input_blocks, dataclasses.replace(reps, user_reps=u, item_reps=i))

    def score_encoded(self, reps, user_rows, item_rows, pair=None, seq=None) -> torch.Tensor:
        if not is_projected(reps):
            return super().score_encoded(reps, user_rows, item_rows, pair, seq)
        u, i, pre = first_layer_of_pairs(self, reps, user_rows, item_rows, pair, seq)  # x^ W^T + b  [B, M]
        z = None
        if self.mgnn is not None:  # PAIRS is the row-major grid of (h_u, s_u) x (h_i, s_i)
            stacked = pair_reps(reps, STACKED, u, i)  # [B, 2, d] each
            z = self.interaction.grid(stacked[STACKED[0]], stacked[STACKED[1]], self.n_experts)  # [B, N, d_z]
        return logits_from_first(self.moe, self.towers, pre, extra=z)  # [B, K]

    def compute_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        logits, gates = self.forward_with_gates(batch)
        if self.state_cache is not None and self.training:
            self.state_cache.advance()
        bce = bce_per_task(logits, batch.labels)  # [K]
        parts = {f"bce_{k}": float(v) for k, v in enumerate(bce.detach())}
        if self.gradnorm is not None:  # (i)
            loss, stats = self.gradnorm(bce, self.moe.experts.last_weights())
            parts.update(stats)
        else:
            loss = self.task_weighting(bce)
        if self.task_weighting.log_vars is not None:
            parts.update({f"log_var_{k}": float(v) for k, v in enumerate(self.task_weighting.log_vars.detach())})
        if self.co_loss and self.beta > 0:
            co = expert_cooperation_loss(gates)  # (ii)
            loss = loss + self.beta * co
            parts["co"] = float(co.detach())
        if self.l2 > 0:
            reg = self.regularizer(batch)  # (iii)
            loss = loss + (self.l2 / (self.n_train or len(batch))) * reg
            parts["l2"] = float(reg.detach())
        return logits, loss, parts

    def param_groups(self, cfg) -> list[dict]:
        """With GradNorm, its weights in their own group (``gradnorm_lr``, no weight decay)."""
        if self.gradnorm is None:
            return super().param_groups(cfg)
        return self.gradnorm.param_groups(self, self.gradnorm_lr or cfg.lr)

    def prepare(self, contexts) -> None:
        """Trainer hook before step 1: ``|H|``, the number of training samples (scales the L2);
        the training days of the state cache."""
        self.n_train = int(sum(c.n_samples for c in contexts)) or None
        if self.state_cache is not None:
            self.state_cache.prepare(contexts)

    def regularizer(self, batch) -> torch.Tensor:
        """``||Theta_batch||^2``: dense parameters + the embedding rows (ids and categorical codes)
        this batch reads. Embedding tables are never penalised whole: a categorical column with
        raw codes can have millions of rows."""
        encoders = ((self.user_enc, [batch.user]), (self.item_enc, [batch.item]))
        if self.mgnn is not None:
            for ch in batch.channels.values():
                encoders[0][1].append(ch.users)
                encoders[1][1].append(ch.items)
        sparse = []
        for enc, tables in encoders:
            sparse.append((enc.id_emb, torch.cat([t.ids for t in tables])))
            cats = torch.cat([t.cats for t in tables])  # [n, C]
            sparse += [(emb, cats[:, j]) for j, emb in enumerate(enc.cat_embs)]
        return l2_penalty(self._dense_parameters(), sparse)

    def _dense_parameters(self) -> list[torch.Tensor]:
        if getattr(self, "_dense", None) is None:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, torch.nn.Embedding)}
            skip |= {id(p) for m in (self.task_weighting, self.gradnorm) if m is not None for p in m.parameters()}
            self._dense = [p for p in self.parameters() if id(p) not in skip]
        return self._dense
