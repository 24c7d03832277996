"""E2E-GRec: end-to-end GNN + multi-task recommender training (papers/e2e-grec-abstract.txt).

Only the abstract is published (no method text, no code), so every equation below is this
package's reading of its three components; the choices are listed after the equations.

**(i) Graph encoder over the sampled heterogeneous subgraph.** A batch carries one sampled
subgraph per channel; their nodes are merged by node-space id into one heterogeneous subgraph
with node types ``{user, item}`` and four relations (``R``): ``item->user`` and ``user->item``
(bipartite channel), ``user->user`` (user similarity), ``item->item`` (item similarity). With
``h^0_v = x_v P_{tau(v)}`` (the recommender's own shared feature transform, ids included):

.. math::
    h^{l+1}_v = \\mathrm{LeakyReLU}\\Big(W^l_{\\tau(v)} h^l_v + \\sum_{r \\in R:\\ \\mathrm{dst}(r) = \\tau(v)}
        W^l_r \\operatorname{AGG}_{j \\in \\mathcal{N}_r(v)} h^l_j\\Big), \\qquad
    z_v = W_{out} h^L_v

``AGG`` = mean over the sampled neighbours (GraphSAGE, ``conv="sage"``) or GAT attention
(``conv="gat"``, :class:`~ml_core.nn.graph.NeighborAttention`, whose ``W`` is ``W^l_r``);
the relations' messages are summed per node type (PyG ``HeteroConv(aggr="sum")``).

**(ii) Graph Feature Auto-Encoder.** Each node type's decoder ``D_tau`` (an MLP) reconstructs the
node's input features from ``z_v``:

.. math::
    \\mathcal{L}_{gfae} = \\frac{\\sum_{v \\in S} \\| D_{\\tau(v)}(z_v) - \\mathrm{sg}[e_v] \\|^2}
        {\\sum_{v \\in S} \\dim e_v}, \\qquad
    e_v = [\\mathrm{emb}(c_{v,1}) \\| \\dots \\| \\mathrm{emb}(c_{v,C}) \\| \\mathrm{nums}_v]

with ``e_v`` what the shared transform ``P_tau`` projects (categorical embeddings + scaled
numerics, without the id), ``sg`` = stop-gradient, ``S`` = the decoded nodes (a mean squared error
over all decoded entries).

**(iii) Two-level fusion, MMoE body, GradNorm.**

.. math::
    \\hat x = [p_u \\| q_i \\| z_u \\| z_i] \\quad (\\text{feature level}), \\qquad
    o^k = \\sum_{n=1}^{N} g^k(\\hat x)_n f^n(\\hat x)

    \\tilde o^k = [o^k \\| \\kappa(z_u, z_i)] \\quad (\\text{representation level}), \\qquad
    \\hat y^k = \\sigma(v_k^\\top \\tilde o^k)

    \\mathcal{L} = \\sum_{k=1}^{K} w_k \\mathrm{BCE}_k + w_{K+1} \\mathcal{L}_{gfae}
    \\qquad (w \\text{ by GradNorm, } \\alpha = 1.5, \\text{ on } W_{out})

GradNorm (:class:`~ml_core.nn.gradnorm.GradNorm`) balances all ``K + 1`` losses; the weights
are logged as ``w_0 .. w_K`` (``w_K`` = GFAE) in the loss parts.

Choices the paper leaves open (documented here):

* Heterogeneous graph: the three sampled channel subgraphs are merged into one (a user that
  appears in the bipartite and the user-similarity subgraph is one node, reached by both
  relations), so a seed's state at every layer combines all relations (not three separate GNNs
  joined at the end). Each relation has its own ``W_r`` per layer, each node type its own
  ``W_tau`` (the self/root term; SAGE's ``lin_r``); the channels are sampled independently as
  for MoGE (fan-outs per channel).
* Per-seed propagation: layer ``l`` updates only the nodes within ``L - 1 - l`` hops of a seed
  (over all relations), so the last layer touches only the seeds and their edges, as in MGNN.
* ``W_out`` (``d -> d``, one matrix for both node types) is the last layer every loss passes
  through: GradNorm's ``W``. Its output ``z`` is the "GNN embedding" of both fusion levels and
  of the GFAE.
* GFAE: decoded nodes ``S`` = the seeds (the batch's distinct users and items), the nodes whose
  L-hop neighbourhoods are sampled in full (standard mini-batch GNN training computes its loss on
  the seeds); ``gfae_nodes="all"`` decodes every sampled node (each then needs its own L-layer
  state: no trimming, about twice the encoder's cost). Target = the encoder's input vector
  ``e_v``, detached: MSE over codes makes no sense, a softmax over a category vocabulary (millions
  of Taobao codes) is too costly, and without the stop-gradient the embedding tables could shrink
  the target. Ids are not reconstructed (that is memorisation, not structure). A node type
  without categorical or numeric features has no decoder.
* Representation-level fusion: ``kappa(z_u, z_i)`` (element-wise product by default, MoGE's
  interaction block) is appended to every task's mixture before its head, so each head scores
  ``v_k^T o^k + u_k^T kappa(z_u, z_i)``: a direct path from the GNN to every logit.
* The feature transforms ``P, Q`` are shared by the recommender and the GNN (``h^0``), as in MoGE.
* GradNorm: ``L_i(0)`` = the first training batch's losses; weights floored at ``1e-3`` before
  renormalising to ``sum w = K + 1``; ``alpha = 1.5`` (Chen et al.'s most used value). ``w`` is
  trained by the same Adam at ``gradnorm_lr`` (default: the trainer's lr), without weight decay.
  ``gradnorm=False`` trains ``sum_k BCE_k + gfae_weight * L_gfae`` instead.

Configuration: :class:`E2EGRecConfig` (``spec``: input sizes, tasks, d, fan-outs).
Shapes: Batch of B samples (with sampled ``channels`` carrying ``n_id``) -> logits ``[B, K]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ml_core.batching import layer_edges
from ml_core.contracts.batch import CHANNELS, NodeTable
from ml_core.contracts.reps import NodeReps, neighbourhood_label
from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import (
    GraphNeeds,
    RecModel,
    bce_per_task,
    check_choice,
    check_sizes,
)
from ml_core.models.hetero import (
    CONVS,
    NODE_TYPES,
    RELATIONS,
    HeteroGraphEncoder,
    day_relations,
    merge_channels,
)
from ml_core.models.registry import register
from ml_core.nn.dense import (
    MLP,
    FeatureEncoder,
    MixtureOfExperts,
    PairInteraction,
    TaskTowers,
)
from ml_core.nn.gradnorm import GradNorm


def encoder_inputs(enc: FeatureEncoder, x: NodeTable) -> torch.Tensor:
    """``e_v = [emb(c_1) || ... || emb(c_C) || nums]``: what ``enc`` projects, ``[n, in_dim]`` (no graph)."""
    with torch.no_grad():
        return enc.inputs(x)  # [n, C * cat_dim + F]


@dataclass
class GraphOutput:
    p_u: torch.Tensor  # [B, d] samples' h^0 (user)
    q_i: torch.Tensor  # [B, d]
    z_u: torch.Tensor  # [B, d] GNN embedding of the sample's user
    z_i: torch.Tensor  # [B, d]
    gfae: torch.Tensor | None  # scalar GFAE loss (None when not asked for)


@dataclass
class E2EGRecConfig:
    """E2E-GRec's options (``train.model_args``); the abstract gives no values, so each default
    is this package's choice unless a source is named (module docstring: the choices)."""

    #: neighbour aggregation per relation: ``sage`` (mean, GraphSAGE) or ``gat`` (attention)
    conv: str = "sage"
    #: GNN layers L; None = ``len(spec.fanouts)`` (one per sampled hop); at most the sampler's hops
    layers: int | None = None
    #: channels read as relations; None = all three. Must give both node types (``bipartite``,
    #: or ``user_sim`` and ``item_sim``)
    channels: list[str] | None = None
    #: MMoE experts N: 4, as MMoE (MoGE paper section 5.4)
    n_experts: int = 4
    #: expert MLP sizes: [32, 32], as MMoE (MoGE paper section 5.4)
    expert_hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: gate hidden layers; None = linear + softmax, as MMoE
    gate_hidden: list[int] | None = None
    #: representation-level ``kappa``: ``ep`` (element-wise product, MoGE's default), ``add``, ``con``, ``mlp``
    fusion: str = "ep"
    #: train the GFAE loss (the abstract's component ii)
    gfae: bool = True
    #: decoded nodes: the ``seeds`` (standard mini-batch GNN loss) or ``all`` sampled nodes (~2x the encoder's cost)
    gfae_nodes: str = "seeds"
    #: decoder MLP hidden sizes; None = ``[d]``
    decoder_hidden: list[int] | None = None
    #: GFAE weight when ``gradnorm=False``, >= 0
    gfae_weight: float = 1.0
    #: balance the losses with GradNorm (the abstract's component iii)
    gradnorm: bool = True
    #: GradNorm's asymmetry: 1.5, Chen et al.'s most used value
    alpha: float = 1.5
    #: learning rate of the loss weights, > 0; None = the trainer's lr
    gradnorm_lr: float | None = None
    #: LeakyReLU slope of the layers (and GAT logits): 0.2, as GAT
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        check_sizes(expert_hidden=self.expert_hidden, gate_hidden=self.gate_hidden, decoder_hidden=self.decoder_hidden)
        if self.channels is not None and (not self.channels or set(self.channels) - set(CHANNELS)):
            raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, got {self.channels}")
        channels = set(self.channels or CHANNELS)
        if "bipartite" not in channels and not {"user_sim", "item_sim"} <= channels:
            raise ValueError(f"channels must reach users and items (bipartite, or user_sim and item_sim), got {self.channels}")
        check_choice("conv", self.conv, CONVS)
        check_choice("gfae_nodes", self.gfae_nodes, ("seeds", "all"))
        check_choice("fusion (interaction)", self.fusion, PairInteraction.KINDS)
        if self.gfae_weight < 0 or (self.gradnorm_lr is not None and self.gradnorm_lr <= 0):
            raise ValueError(f"gfae_weight must be >= 0 and gradnorm_lr > 0, got {self.gfae_weight}, {self.gradnorm_lr}")


@register("e2e_grec", E2EGRecConfig)
class E2EGRec(RecModel):
    graph_needs = GraphNeeds.SUBGRAPHS

    def __init__(self, spec: ModelSpec, config: E2EGRecConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        channels = tuple(c for c in CHANNELS if c in (cfg.channels or CHANNELS))
        n_layers = len(spec.fanouts) if cfg.layers is None else cfg.layers
        if not 1 <= n_layers <= len(spec.fanouts):
            raise ValueError(f"layers must be in 1..{len(spec.fanouts)} (the sampler's hops, fanouts {spec.fanouts}), got {n_layers}")
        gfae, gfae_nodes, gradnorm_lr = cfg.gfae, cfg.gfae_nodes, cfg.gradnorm_lr
        d = spec.dim
        self.spec = spec
        self.channels = channels
        self.relations = tuple(r for r, (c, _, _) in RELATIONS.items() if c in channels)
        self.gfae_nodes = gfae_nodes
        self.gfae_weight = cfg.gfae_weight
        self.gradnorm_lr = gradnorm_lr
        self.encoders = nn.ModuleDict({"user": FeatureEncoder(spec.user, d), "item": FeatureEncoder(spec.item, d)})  # P, Q
        self.gnn = HeteroGraphEncoder(d, n_layers, self.relations, cfg.conv, cfg.negative_slope)
        self.decoders = None
        if gfae:
            in_dims = {t: 0 if e.proj is None else e.proj.in_features for t, e in self.encoders.items()}  # dim e_v
            if not any(in_dims.values()):
                raise ValueError("gfae=True needs node features to reconstruct; neither users nor items have any")
            self.decoders = nn.ModuleDict({t: MLP(d, cfg.decoder_hidden if cfg.decoder_hidden is not None else [d], n)
                                           for t, n in in_dims.items() if n > 0})  # D_tau
        history_dim = self.build_history_input(spec)  # r_ui, s(u, i) (0 without either)
        self.moe = MixtureOfExperts(4 * d + history_dim, spec.n_tasks, cfg.n_experts, list(cfg.expert_hidden), cfg.gate_hidden)
        self.fuse = PairInteraction(cfg.fusion, d, n_pairs=1)  # kappa
        self.towers = TaskTowers(self.moe.expert_dim + self.fuse.out_dim, spec.n_tasks)  # v_k
        n_losses = spec.n_tasks + (1 if gfae else 0)
        self.gradnorm = GradNorm(n_losses, cfg.alpha) if cfg.gradnorm else None

    # -- components ------------------------------------------------------------------------------
    def graph(self, batch, with_gfae: bool = False) -> GraphOutput:
        """Merge the channels, encode ``h^0``, run the GNN; optionally the GFAE loss."""
        if batch.reps is not None:  # precomputed by encode_nodes
            r = batch.reps
            return GraphOutput(p_u=r["p_u"], q_i=r["q_i"], z_u=r["z_u"], z_i=r["z_i"], gfae=None)
        if batch.channels is None:
            raise ValueError("E2E-GRec needs batch.channels (sampled subgraphs); build batches with need_graph=True")
        g = merge_channels(batch, self.channels)
        h0 = {t: self.encoders[t](g.tables[t]) for t in NODE_TYPES}  # {type: [N_t, d]}
        seeds = g.seeds()
        decode_all = with_gfae and self.gfae_nodes == "all"
        outputs = {t: torch.arange(len(h0[t]), device=h0[t].device) for t in NODE_TYPES} if decode_all else seeds
        rows, z = self.gnn(h0, g.edges, outputs)  # rows {type: [S_t]}, z {type: [S_t, d]}
        pos = {}
        for t in NODE_TYPES:
            pos[t] = torch.full((len(h0[t]),), -1, dtype=torch.long, device=h0[t].device)
            pos[t][rows[t]] = torch.arange(len(rows[t]), device=h0[t].device)
        gfae = self.gfae_loss(z, {t: g.tables[t][rows[t]] for t in NODE_TYPES}) if with_gfae else None
        return GraphOutput(
            p_u=h0["user"].index_select(0, g.sample_user), q_i=h0["item"].index_select(0, g.sample_item),
            z_u=z["user"].index_select(0, pos["user"][g.sample_user]),
            z_i=z["item"].index_select(0, pos["item"][g.sample_item]), gfae=gfae)

    @torch.no_grad()
    def encode_nodes(self, ctx, fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
        """Every node's ``h^0`` and ``z``, layer-wise over the day's heterogeneous graph (every
        relation of every node; the per-batch path's merged subgraph lacks the other channels'
        edges of non-seed nodes, so the two agree exactly only with one channel and every
        neighbour). ``{p_u, z_u}`` ``[n_users, d]``, ``{q_i, z_i}`` ``[n_items, d]``."""
        per_layer = layer_edges(ctx, self.channels, len(self.gnn.layers), fanouts, seed)
        edges = [day_relations(e, len(ctx.users), self.relations) for e in per_layer]
        h0 = {"user": self.encoders["user"](ctx.users), "item": self.encoders["item"](ctx.items)}  # [N_t, d]
        z = self.gnn.encode_all(h0, edges)
        return NodeReps(ctx.users, ctx.items, {"p_u": h0["user"], "z_u": z["user"]},
                        {"q_i": h0["item"], "z_i": z["item"]}, neighbourhood_label(fanouts, seed))

    def gfae_loss(self, z: dict[str, torch.Tensor], tables: dict[str, NodeTable]) -> torch.Tensor:
        """``sum ||D(z_v) - sg[e_v]||^2 / sum dim e_v`` over the nodes of ``tables`` (rows of ``z``)."""
        sq, count = [], 0
        for t, dec in self.decoders.items():
            target = encoder_inputs(self.encoders[t], tables[t])  # [S_t, in_t]
            sq.append((dec(z[t]).float() - target).square().sum())
            count += target.numel()
        return torch.stack(sq).sum() / max(count, 1)

    def head(self, r: GraphOutput, batch) -> torch.Tensor:
        """Two-level fusion, MMoE and the task heads: logits ``[B, K]`` (``batch``: its pair input)."""
        x = torch.cat([r.p_u, r.q_i, r.z_u.to(r.p_u.dtype), r.z_i.to(r.p_u.dtype)], dim=-1)  # x^ [B, 4d]
        x = self.with_history(x, batch)  # [B, 4d (+ d)]
        mixed, _, _ = self.moe(x)  # o^k [K, B, d_e]
        kappa = self.fuse(r.z_u.unsqueeze(1), r.z_i.unsqueeze(1)).squeeze(1)  # [B, d_z]
        fused = torch.cat([mixed, kappa.to(mixed.dtype).expand(len(mixed), -1, -1)], dim=-1)  # [K, B, d_e + d_z]
        return self.towers(fused)  # [B, K]

    def forward(self, batch) -> torch.Tensor:
        return self.head(self.graph(batch), batch)

    # -- training --------------------------------------------------------------------------------
    def shared_layer(self) -> list[torch.Tensor]:
        """GradNorm's ``W``: the GNN output layer's weight (every loss passes through it)."""
        return [self.gnn.out.weight]

    def compute_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        r = self.graph(batch, with_gfae=self.decoders is not None)
        logits = self.head(r, batch)
        bce = bce_per_task(logits, batch.labels)  # [K]
        losses = bce if r.gfae is None else torch.cat([bce, r.gfae.reshape(1)])  # [K (+1)]
        parts = {f"bce_{k}": float(v) for k, v in enumerate(bce.detach())}
        if r.gfae is not None:
            parts["gfae"] = float(r.gfae.detach())
        if self.gradnorm is not None:
            loss, stats = self.gradnorm(losses, self.shared_layer())
            parts.update(stats)
        else:
            loss = bce.sum() + (0.0 if r.gfae is None else self.gfae_weight * r.gfae)
        return logits, loss, parts

    def param_groups(self, cfg) -> list[dict]:
        """The GradNorm weights in their own group: no weight decay, learning rate ``gradnorm_lr``
        (default ``cfg.lr``); every other parameter in the optimiser's default group."""
        if self.gradnorm is None:
            return super().param_groups(cfg)
        return self.gradnorm.param_groups(self, self.gradnorm_lr or cfg.lr)
