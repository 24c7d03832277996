"""The MoGE paper's single-task baselines (section 5.2.1): MLP and NGCF.

"Single-task" = K independent networks, one per task, trained side by side by the same
trainer on the same batches: no parameter is shared between tasks (not even the feature
encoders), so task k's loss moves only task k's network. Both return the usual ``[B, K]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ml_core.batching import layer_edges
from ml_core.contracts.batch import ChannelBatch, NodeTable
from ml_core.contracts.reps import NodeReps, neighbourhood_label
from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import GraphNeeds, RecModel, check_sizes
from ml_core.models.mgnn import layer_plan
from ml_core.models.registry import register
from ml_core.nn.dense import FeatureEncoder, TaskTowers
from ml_core.nn.graph import weighted_sum


@dataclass
class SingleTaskMLPConfig:
    """MLP's options (``train.model_args``)."""

    #: each task's MLP sizes: "[512, 256, 128]" (MoGE paper section 5.4)
    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    #: dropout after each hidden layer, in [0, 1): none (section 5.4 lists none)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_sizes(hidden=self.hidden)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("mlp", SingleTaskMLPConfig)
class SingleTaskMLP(RecModel):
    """MLP: one feed-forward network per task on the shared-transform features.

    .. math::
        x^k = [x_u P^k \\| x_i Q^k], \\qquad \\hat{y}^k = \\sigma\\big(v_k^\\top \\mathrm{MLP}_k(x^k)\\big)

    Each task has its own ``P^k``, ``Q^k`` (id embedding + feature projection,
    :class:`~ml_core.nn.dense.FeatureEncoder`) and its own MLP [512, 256, 128] with
    LeakyReLU (section 5.4), then a linear head.

    Configuration: :class:`SingleTaskMLPConfig`.
    Shapes: Batch of B samples -> logits ``[B, K]``.
    """

    def __init__(self, spec: ModelSpec, config: SingleTaskMLPConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        hidden = list(cfg.hidden)
        self.spec = spec
        self.user_encs = nn.ModuleList(FeatureEncoder(spec.user, spec.dim) for _ in spec.tasks)  # P^k
        self.item_encs = nn.ModuleList(FeatureEncoder(spec.item, spec.dim) for _ in spec.tasks)  # Q^k
        self.towers = TaskTowers(2 * spec.dim + self.build_history_input(spec), spec.n_tasks, hidden)  # independent MLP_k + v_k

    def forward(self, batch) -> torch.Tensor:
        x = [self.with_history(torch.cat([P(batch.user), Q(batch.item)], dim=-1), batch)
             for P, Q in zip(self.user_encs, self.item_encs)]  # K x [B, 2d (+ d)]
        return self.towers(x)  # [B, K]


class NGCFLayer(nn.Module):
    """One NGCF embedding-propagation layer (Wang et al., SIGIR 2019, eq. 3-4 in matrix form 7).

    .. math::
        m_i = \\sum_{j \\in \\mathcal{N}(i)} \\rho_{ij}\\, e_j, \\qquad
        e'_i = \\mathrm{LeakyReLU}\\big(W_1 (e_i + m_i) + W_2 (m_i \\odot e_i)\\big)

    (``sum_j rho_ij (e_j * e_i) = m_i * e_i``.) ``rho_ij`` is given per edge (see :class:`NGCF`);
    ``W_1``, ``W_2`` have biases (the authors' code); message dropout follows.

    Args:
        dim (int): d (input and output).
        negative_slope (float): LeakyReLU slope (default: 0.2).
        dropout (float): message dropout (default: 0.1).
    Shapes: ``h [N_s, d]``, ``edges [2, E]`` (row 0 indexes ``h``, row 1 the targets),
    ``targets`` (rows of ``h`` updated, ``[T]`` or a slice), ``rho [E]`` -> ``[T, d]``.
    """

    def __init__(self, dim: int, negative_slope: float = 0.2, dropout: float = 0.1):
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)
        self.negative_slope = negative_slope
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, targets, rho: torch.Tensor) -> torch.Tensor:
        h_t = h[targets] if isinstance(targets, slice) else h.index_select(0, targets)  # [T, d]
        m = weighted_sum(rho, h, edges, h_t.shape[0]).to(h.dtype)  # [T, d]
        out = nn.functional.leaky_relu(self.w1(h_t + m) + self.w2(m * h_t), self.negative_slope)
        return self.dropout(out)  # [T, d]


class NGCFTower(nn.Module):
    """One task's NGCF: its own embeddings ``e^0`` (id + features) and L propagation layers.

    Returns ``e* = [e^0 || e^1 / ||e^1|| || ... || e^L / ||e^L||]`` of the requested rows.
    """

    def __init__(self, spec: ModelSpec, n_layers: int, negative_slope: float, dropout: float):
        super().__init__()
        self.user_enc = FeatureEncoder(spec.user, spec.dim)
        self.item_enc = FeatureEncoder(spec.item, spec.dim)
        self.layers = nn.ModuleList(NGCFLayer(spec.dim, negative_slope, dropout) for _ in range(n_layers))

    def initial(self, ch: ChannelBatch) -> torch.Tensor:
        """``e^0`` of every subgraph node, ``[num_nodes, d]``."""
        p, q = self.user_enc(ch.users), self.item_enc(ch.items)  # [n_u, d], [n_i, d]
        e0 = p.new_zeros(ch.num_nodes, p.shape[1])
        return e0.index_copy(0, ch.user_pos, p).index_copy(0, ch.item_pos, q.to(p.dtype))  # [N, d]

    def encode_all(self, users: NodeTable, items: NodeTable, edges: list[torch.Tensor]) -> torch.Tensor:
        """``e*`` of every node of ``[users | items]``, ``[n_users + n_items, (L + 1) d]``, layer by
        layer over the day's bipartite edges of each layer (``[2, E]``, grouped by target)."""
        p, q = self.user_enc(users), self.item_enc(items)
        h = torch.cat([p, q.to(p.dtype)])  # e^0: [N, d]
        outs = [h]
        for layer, e in zip(self.layers, edges):
            e = e.to(h.device)
            rho = torch.bincount(e[1], minlength=len(h)).clamp(min=1).float().reciprocal().index_select(0, e[1])  # [E] 1/|N(i)|
            h = layer(h, e, slice(0, len(h)), rho)  # [N, d]
            outs.append(nn.functional.normalize(h, dim=-1))
        return torch.cat(outs, dim=-1)  # [N, (L + 1) d]

    def forward(self, ch: ChannelBatch, plan, seed_rows: list[torch.Tensor], rhos: list[torch.Tensor]) -> torch.Tensor:
        h = self.initial(ch)  # [N, d]
        outs = [h.index_select(0, seed_rows[0])]  # e^0 of the seeds
        for layer, (targets, edges), rho, rows in zip(self.layers, plan, rhos, seed_rows[1:]):
            h = layer(h, edges, targets, rho)  # states on R_l only
            outs.append(nn.functional.normalize(h.index_select(0, rows), dim=-1))  # e^l of the seeds
        return torch.cat(outs, dim=-1)  # [S, (L + 1) d]


@dataclass
class NGCFConfig:
    """NGCF's options (``train.model_args``)."""

    #: L; None = ``len(spec.fanouts)`` (2 with the default fan-outs = the paper's setting); at most the sampler's hops
    layers: int | None = None
    #: message dropout, in [0, 1): 0.1, the authors' default
    dropout: float = 0.1
    #: LeakyReLU slope: 0.2, the authors' code
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("ngcf", NGCFConfig)
class NGCF(RecModel):
    """NGCF: Neural Graph Collaborative Filtering (Wang et al., SIGIR 2019), one network per task.

    Over the batch's sampled user-item subgraph (channel ``bipartite`` only), per task k:

    .. math::
        e^{l+1}_i = \\mathrm{LeakyReLU}\\Big(W^l_1\\big(e^l_i + \\textstyle\\sum_{j} \\rho_{ij} e^l_j\\big)
            + W^l_2\\big(\\textstyle\\sum_{j} \\rho_{ij} e^l_j \\odot e^l_i\\big)\\Big),
        \\qquad j \\in \\mathcal{N}_s(i)

        e^*_v = [e^0_v \\| \\bar{e}^1_v \\| \\cdots \\| \\bar{e}^L_v], \\qquad
        \\hat{y}^k = \\sigma\\big(v_k^\\top (e^*_u \\odot e^*_i) + b_k\\big)

    Choices the paper (and the sampled setting) leave open:

    * Normalisation on sampled neighbourhoods: ``rho_ij = 1 / |N_s(i)|``, the mean over the
      neighbours sampled for ``i`` (GraphSAGE-style). NGCF's ``1 / sqrt(|N_i| |N_j|)`` needs the
      full-graph degree of every neighbour, which a batch does not carry, and degrees counted in
      the sampled subgraph are capped at the fan-out (0 for the last hop's nodes). Under uniform
      sampling the sampled mean is an unbiased estimate of the full neighbourhood mean
      (``D^-1 A``, the random-walk Laplacian NGCF lists as an alternative), the same at train and
      serve time. A node without sampled neighbours gets ``m_i = 0``. Edge weights are not used.
    * Layers run with :func:`~ml_core.models.mgnn.layer_plan` (each layer updates only nodes
      that still reach a seed), exact for the seeds' ``e^l``. ``W_1``, ``W_2`` per layer.
    * ``e^0`` = the task's own :class:`~ml_core.nn.dense.FeatureEncoder` (id embedding +
      feature projection, as every model here), layer outputs L2-normalised before the concat
      (``bar e``, the authors' code), message dropout 0.1 (the authors' default).
    * Score: NGCF's inner product ``e*_u^T e*_i`` generalised to ``v_k^T (e*_u * e*_i) + b_k``
      (``v = 1, b = 0`` is the inner product); ``b_k`` starts at the task's base rate.
    * Single task: K independent copies (embeddings, layers, head); the sampled subgraph is
      shared (it holds no parameter).
    * The pair input ``r_ui`` (when the spec has one) joins each task's head input:
      ``v_k^T [e*_u * e*_i || r_ui] + b_k``.

    Configuration: :class:`NGCFConfig` (``spec``: input sizes, tasks, d, fan-outs).
    Shapes: Batch of B samples (with ``channels["bipartite"]``) -> logits ``[B, K]``.
    """

    graph_needs = GraphNeeds.SUBGRAPHS

    def __init__(self, spec: ModelSpec, config: NGCFConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        self.n_layers = len(spec.fanouts) if cfg.layers is None else cfg.layers
        if not 1 <= self.n_layers <= len(spec.fanouts):
            raise ValueError(f"layers must be in 1..{len(spec.fanouts)} (the sampler's hops, fanouts {spec.fanouts}), "
                             f"got {self.n_layers}")
        self.spec = spec
        self.nets = nn.ModuleList(NGCFTower(spec, self.n_layers, cfg.negative_slope, cfg.dropout) for _ in spec.tasks)
        self.towers = TaskTowers((self.n_layers + 1) * spec.dim + self.build_history_input(spec), spec.n_tasks)  # v_k, b_k

    def propagation_plan(self, ch: ChannelBatch):
        """What every task's network shares: the layer plan, the seeds' rows at each layer and
        the per-edge ``rho`` of each layer."""
        seeds = torch.cat([ch.seed_user, ch.seed_item])  # [2B] subgraph rows
        plan, pos = layer_plan(ch.edge_index, ch.num_nodes, seeds, self.n_layers)
        rows = [pos.index_select(0, seeds)]  # rows of the seeds in R_{L-1}
        for targets, _ in reversed(plan):  # targets: positions of R_l inside R_{l-1}
            rows.insert(0, rows[0] if isinstance(targets, slice) else targets.index_select(0, rows[0]))
        rhos = []
        for targets, edges in plan:
            n_t = targets.stop if isinstance(targets, slice) else targets.numel()
            deg = torch.bincount(edges[1], minlength=n_t).clamp(min=1)  # |N_s(i)|
            rhos.append(1.0 / deg.index_select(0, edges[1]).float())  # [E_l]
        return plan, rows, rhos

    @torch.no_grad()
    def encode_nodes(self, ctx, fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
        """Every node's ``e*`` of every task, layer-wise over the day's bipartite graph:
        ``e_u [n_users, K, (L + 1) d]``, ``e_i [n_items, K, (L + 1) d]``."""
        edges = [e["bipartite"] for e in layer_edges(ctx, ("bipartite",), self.n_layers, fanouts, seed)]
        e = torch.stack([net.encode_all(ctx.users, ctx.items, edges) for net in self.nets], dim=1)  # [N, K, (L+1)d]
        e_u, e_i = e.split([len(ctx.users), len(ctx.items)])
        return NodeReps(ctx.users, ctx.items, {"e_u": e_u}, {"e_i": e_i}, neighbourhood_label(fanouts, seed))

    def forward(self, batch) -> torch.Tensor:
        if batch.reps is not None:  # precomputed by encode_nodes: [B, K, (L+1)d] each
            e_u, e_i = batch.reps["e_u"], batch.reps["e_i"]
            return self.towers([self.with_history(e_u[:, k] * e_i[:, k], batch) for k in range(e_u.shape[1])])  # [B, K]
        if batch.channels is None or "bipartite" not in batch.channels:
            raise ValueError("NGCF needs batch.channels['bipartite'] (build batches with need_graph=True)")
        ch = batch.channels["bipartite"]
        plan, rows, rhos = self.propagation_plan(ch)
        B = ch.seed_user.numel()
        x = []
        for net in self.nets:
            e_u, e_i = net(ch, plan, rows, rhos).split([B, ch.seed_item.numel()])  # [B, (L+1)d] each
            x.append(self.with_history(e_u * e_i, batch))  # [B, (L+1)d (+ d)]
        return self.towers(x)  # [B, K]
