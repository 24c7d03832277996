"""MGNN: MoGE's multi-channel graph neural network (paper section 4.1).

Three channels share one initial representation and each has its own weights:

* ``bipartite`` (G, user <-> item), over the node space ``[users | items]``,
* ``user_sim`` (G^U, user <-> user collaborative similarity),
* ``item_sim`` (G^I, item <-> item).

.. math::
    h^0_u = p_u = x_u P, \\qquad h^0_i = q_i = x_i Q \\qquad (\\text{shared by all channels})

    h^{l+1}_v = f_c\\Big(h^l_v,\\ \\mathrm{LeakyReLU}\\big(W_c \\textstyle\\sum_{j \\in \\mathcal{N}_c(v)}
        \\alpha^c_{v \\leftarrow j} h^l_j\\big)\\Big), \\qquad c \\in \\{G, G^U, G^I\\}

with ``alpha`` GAT attention over the *sampled* neighbours (:class:`NeighborAttention`), ``f``
an LSTM-like gated combine (:class:`GatedCombine`, a GRU cell by default) and L layers
(default 2). The final representations of a sample (u, i) are

.. math::
    h_u = h^L_u,\\ h_i = h^L_i \\ (\\text{channel } G), \\qquad
    s_u = h^{\\mathcal{L}L}_u \\ (G^U), \\qquad s_i = h^{\\mathcal{L}L}_i \\ (G^I).

Choices the paper leaves open (documented here):

* ``W_c``, ``alpha``, ``f`` are per layer (the paper's equations drop the layer index;
  ``share_layers=True`` uses one set per channel for all layers). In the bipartite channel the
  same ``W`` serves u <- i and i <- u, as written.
* Per batch, each channel's layers run once over the union of the sampled L-hop subgraph of the
  batch's distinct users/items (section 4.4), never over the whole graph. Layer ``l`` updates
  only the nodes within ``L - l`` hops of a seed (the others cannot reach a seed's output), so
  the last layer touches only the seeds' edges: cost linear in sampled edges.
* A node with no sampled neighbour receives a zero message (``f(h, 0)``).
* Sampled edge weights (similarities, interaction counts) are not used: the paper's attention
  decides the neighbours' weights.

Args:
    spec (ModelSpec): input sizes.
    layers (int): L (default: ``len(spec.fanouts)``; must not exceed the sampler's hops).
    channels (tuple[str]): channels to run (default: all three). A channel left out passes
        ``h^0`` through: without ``bipartite`` ``(h_u, h_i) = (p_u, q_i)``, without ``user_sim``
        ``s_u = p_u``, without ``item_sim`` ``s_i = q_i``.
    combine (str): ``"gru"`` or ``"lstm"`` (default: ``"gru"``).
    negative_slope (float): slope of the attention's and the message's LeakyReLU (default: 0.2).
    share_layers (bool): one set of weights per channel for all layers (default: False).
    user_enc, item_enc (FeatureEncoder, optional): the shared transforms P and Q. When given
        they are *used but not registered* here (their owner, e.g. MoGE, trains and saves them);
        otherwise MGNN builds and owns its own.
Shapes: Batch of B samples (with ``channels``) -> ``(h_u, h_i, s_u, s_i)``, each ``[B, d]``;
:meth:`MGNN.representations` also returns the samples' own ``p_u``, ``q_i`` (what the "+Graph"
baselines and MoGE's experts read). A batch with precomputed ``reps`` (from :func:`encode_day`:
every node's layer-L states, computed layer by layer over the whole day) is read as is.
"""

from __future__ import annotations

import torch
from torch import nn

from ml_core.batching import layer_edges
from ml_core.contracts.batch import CHANNELS, ChannelBatch, NodeTable
from ml_core.contracts.reps import NodeReps, neighbourhood_label
from ml_core.contracts.spec import ModelSpec
from ml_core.nn.dense import FeatureEncoder
from ml_core.nn.graph import GatedCombine, NeighborAttention


class ChannelLayer(nn.Module):
    """One MGNN layer of one channel: ``h'_v = f(h_v, LeakyReLU(W sum_j alpha_{v<-j} h_j))``."""

    def __init__(self, dim: int, combine: str = "gru", negative_slope: float = 0.2):
        super().__init__()
        self.att = NeighborAttention(dim, negative_slope)
        self.combine = GatedCombine(dim, combine)
        self.negative_slope = negative_slope

    def forward(self, h: torch.Tensor, c: torch.Tensor | None, edge_index: torch.Tensor, targets: torch.Tensor):
        """New state of rows ``targets`` of ``h``, from edges ``edge_index`` (row 0 indexes ``h``,
        row 1 indexes ``targets``). Returns ``(h' [T, d], c' [T, d] or None)``."""
        pick = (lambda x: x[targets]) if isinstance(targets, slice) else (lambda x: x.index_select(0, targets))
        h_t = pick(h)  # [T, d]
        m = self.att(h, h_t, edge_index)  # [T, d]  W sum_j alpha_j h_j
        m = nn.functional.leaky_relu(m, self.negative_slope)  # sigma(.)
        c_t = None if c is None else pick(c)
        h_new, c_new = self.combine(m, h_t, c_t)  # f(h, m): [T, d]
        return h_new.to(h.dtype), None if c_new is None else c_new.to(h.dtype)


def layer_plan(edge_index: torch.Tensor, num_nodes: int, seeds: torch.Tensor, n_layers: int):
    """Which rows each layer must update so that the seeds' layer-L output is exact.

    ``R_{L-1}`` = the seeds; ``R_{l-1} = R_l`` plus the in-neighbours of ``R_l``; ``R_{-1}`` = all
    nodes. Layer ``l`` reads states on ``R_{l-1}`` and writes states on ``R_l`` only, so state
    tensors shrink layer by layer (the last layer touches only the seeds and their edges).

    Returns, per layer ``l = 0..L-1``: ``(targets, edges)`` with ``targets [|R_l|]`` = positions of
    ``R_l`` inside ``R_{l-1}`` and ``edges [2, E_l]`` = the edges into ``R_l``, source local to
    ``R_{l-1}`` and target local to ``R_l``; plus ``pos [num_nodes]``, the row of each node in
    ``R_{L-1}`` (-1 outside). When every ``R_l`` is a prefix of the node order (the sampler lists
    seeds first, then each hop's new nodes), ``targets`` is a ``slice`` and no row is re-indexed.
    """
    src, dst = edge_index[0], edge_index[1]
    need = torch.zeros(num_nodes, dtype=torch.bool, device=edge_index.device)
    need[seeds] = True
    masks = [need]  # R_{L-1}, R_{L-2}, ..., R_0
    for _ in range(n_layers - 1):
        wider = need.clone()
        wider[src[need[dst]]] = True
        need = wider
        masks.append(need)
    masks.reverse()  # R_0 (widest) .. R_{L-1} (seeds)
    sizes = [int(m.sum()) for m in masks]
    if all(bool(m[:n].all()) for m, n in zip(masks, sizes)):  # every R_l is a prefix: no re-indexing
        plan = []
        for mask, n in zip(masks, sizes):
            keep = mask[dst]
            plan.append((slice(0, n), torch.stack([src[keep], dst[keep]])))
        return plan, torch.arange(num_nodes, device=edge_index.device)
    plan = []
    prev_pos = None  # node -> row in R_{l-1}; None = identity (R_{-1} = all nodes)
    for mask in masks:
        keep = mask[dst]
        pos = torch.cumsum(mask, 0) - 1  # node -> row in R_l (valid where mask)
        rows = torch.nonzero(mask).flatten()  # R_l as node ids
        e_src, e_dst = src[keep], dst[keep]
        if prev_pos is not None:
            e_src, rows = prev_pos[e_src], prev_pos[rows]
        plan.append((rows, torch.stack([e_src, pos[e_dst]])))  # [|R_l|], [2, E_l]
        prev_pos = pos
    return plan, prev_pos


#: what MGNN.representations returns per sample (and encode_day per node)
REPRESENTATIONS = ("p_u", "q_i", "h_u", "h_i", "s_u", "s_i")


@torch.no_grad()
def encode_day(mgnn: MGNN, ctx, fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
    """Every node of ``ctx`` through ``mgnn`` (:meth:`MGNN.encode_all` over
    :func:`~ml_core.batching.layer_edges`): the :class:`NodeReps` MoGE and the "+Graph"
    variants score pairs from."""
    edges = layer_edges(ctx, mgnn.channels, mgnn.n_layers, fanouts, seed)
    user_reps, item_reps = mgnn.encode_all(ctx.users, ctx.items, edges)
    return NodeReps(ctx.users, ctx.items, user_reps, item_reps, neighbourhood_label(fanouts, seed))


def _inverse(pos: torch.Tensor) -> torch.Tensor:
    """``inv[pos[j]] = j`` for a permutation ``pos``."""
    inv = torch.empty_like(pos)
    inv[pos] = torch.arange(len(pos), device=pos.device)
    return inv


def cat_tables(tables: list[NodeTable]) -> NodeTable:
    return NodeTable(torch.cat([t.ids for t in tables]), torch.cat([t.cats for t in tables]),
                     torch.cat([t.nums for t in tables]))


class MGNN(nn.Module):
    def __init__(self, spec: ModelSpec, layers: int | None = None, channels: tuple[str, ...] = CHANNELS,
                 combine: str = "gru", negative_slope: float = 0.2, share_layers: bool = False,
                 user_enc: FeatureEncoder | None = None, item_enc: FeatureEncoder | None = None):
        super().__init__()
        bad = set(channels) - set(CHANNELS)
        if bad or not channels:
            raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, got {channels}")
        self.spec = spec
        self.dim = spec.dim
        self.n_layers = len(spec.fanouts) if layers is None else int(layers)
        if not 1 <= self.n_layers:
            raise ValueError(f"layers must be >= 1, got {self.n_layers}")
        if self.n_layers > len(spec.fanouts):
            raise ValueError(f"layers={self.n_layers} exceeds the sampler's {len(spec.fanouts)} hops (fanouts {spec.fanouts})")
        self.channels = tuple(c for c in CHANNELS if c in channels)
        if user_enc is None or item_enc is None:
            self.user_enc = FeatureEncoder(spec.user, spec.dim)  # P
            self.item_enc = FeatureEncoder(spec.item, spec.dim)  # Q
            self._shared = None
        else:
            self.user_enc = self.item_enc = None
            self._shared = (user_enc, item_enc)  # owned (registered, saved) by the caller

        def stack() -> nn.ModuleList:
            if share_layers:
                layer = ChannelLayer(spec.dim, combine, negative_slope)
                return nn.ModuleList([layer] * self.n_layers)
            return nn.ModuleList(ChannelLayer(spec.dim, combine, negative_slope) for _ in range(self.n_layers))

        self.layers = nn.ModuleDict({c: stack() for c in self.channels})  # W, W^U, W^I (+ alpha, f)

    @property
    def encoders(self) -> tuple[FeatureEncoder, FeatureEncoder]:
        return self._shared if self._shared is not None else (self.user_enc, self.item_enc)

    # -- h^0 ------------------------------------------------------------------------------------
    def initial(self, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """``h^0`` of every node of every channel (``{channel: [num_nodes, d]}``) and the samples'
        own ``p_u``, ``q_i`` (``[B, d]`` each).

        One encoder call per node type over all channels' nodes and the samples: the same rows
        as separate calls, but one embedding backward per table instead of one per call.
        """
        P, Q = self.encoders
        chans = {c: batch.channels[c] for c in self.channels}
        users = [ch.users for ch in chans.values()] + [batch.user]
        items = [ch.items for ch in chans.values()] + [batch.item]
        p_parts = torch.split(P(cat_tables(users)), [len(t) for t in users])  # [n_u, d] per table
        q_parts = torch.split(Q(cat_tables(items)), [len(t) for t in items])  # [n_i, d] per table
        out = {}
        for (name, ch), p, q in zip(chans.items(), p_parts, q_parts):
            if not len(q):
                out[name] = p.index_select(0, _inverse(ch.user_pos))  # [N, d]
            elif not len(p):
                out[name] = q.index_select(0, _inverse(ch.item_pos))  # [N, d]
            else:  # node v is row perm[v] of [p; q]
                out[name] = torch.cat([p, q.to(p.dtype)]).index_select(0, _inverse(torch.cat([ch.user_pos, ch.item_pos])))
        return out, p_parts[-1], q_parts[-1]

    def propagate(self, name: str, h: torch.Tensor, ch: ChannelBatch, seeds: torch.Tensor) -> torch.Tensor:
        """Channel ``name``'s L layers from ``h = h^0 [num_nodes, d]``: ``h^L`` of ``seeds``, ``[len(seeds), d]``."""
        plan, pos = layer_plan(ch.edge_index, ch.num_nodes, seeds, self.n_layers)
        c = None
        for layer, (targets, edges) in zip(self.layers[name], plan):
            h, c = layer(h, c, edges, targets)  # states on R_l only
        return h.index_select(0, pos[seeds])  # [S, d]

    def representations(self, batch, states: dict[str, list[torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """``{p_u, q_i, h_u, h_i, s_u, s_i}``, each ``[B, d]`` (``p_u``, ``q_i``: the samples' h^0);
        a batch's precomputed ``reps`` (:func:`encode_day`) when it carries them. ``states``: the
        batch's day in a :class:`~ml_core.models.state_cache.LayerStateCache` (one-hop batches)."""
        if batch.reps is not None:
            return {k: batch.reps[k] for k in REPRESENTATIONS}
        if batch.channels is None:
            raise ValueError("MGNN needs batch.channels (sampled subgraphs); build batches with need_graph=True")
        h0, p_u, q_i = self.initial(batch)
        out = {}
        for name in self.channels:
            ch = batch.channels[name]
            seeds = [s for s in (ch.seed_user, ch.seed_item) if s is not None]
            if states is None:
                h = self.propagate(name, h0[name], ch, torch.cat(seeds))  # [sum B, d]
            else:  # the sampler lists the distinct seeds first: rows 0 .. n - 1
                rows = torch.cat(seeds)
                h = self.propagate_cached(name, h0[name], ch, int(rows.max()) + 1, states[name]).index_select(0, rows)
            out[name] = torch.split(h, [len(s) for s in seeds])
        h_u, h_i = out.get("bipartite", (p_u, q_i))  # [B, d] each
        s_u = out["user_sim"][0] if "user_sim" in out else p_u  # [B, d]
        s_i = out["item_sim"][0] if "item_sim" in out else q_i  # [B, d]
        return {"p_u": p_u, "q_i": q_i, "h_u": h_u, "h_i": h_i, "s_u": s_u, "s_i": s_i}

    def _all_layers(self, users: NodeTable, items: NodeTable, edges: list[dict[str, torch.Tensor]]):
        """``(p, q, {channel: [h^1 .. h^L]})`` of every node, layer by layer (each ``[N_c, d]``)."""
        P, Q = self.encoders
        p, q = P(users), Q(items)  # h^0: [n_users, d], [n_items, d]
        h0 = {"bipartite": torch.cat([p, q.to(p.dtype)]), "user_sim": p, "item_sim": q}  # [N_c, d] per channel
        out = {}
        for name in self.channels:
            h, c, out[name] = h0[name], None, []
            for layer, e in zip(self.layers[name], edges):
                h, c = layer(h, c, e[name].to(h.device), slice(0, h.shape[0]))  # every node: [N_c, d]
                out[name].append(h)
        return p, q, out

    def encode_all(self, users: NodeTable, items: NodeTable, edges: list[dict[str, torch.Tensor]]):
        """Layer-wise over every node: ``({p_u, h_u, s_u} [n_users, d] each, {q_i, h_i, s_i}
        [n_items, d] each)`` from the day's node inputs and per-layer channel edges
        (:func:`~ml_core.batching.layer_edges`, node-space rows; bipartite over ``[users | items]``).
        Each layer updates every node from its neighbours' previous states, so with every
        neighbour the result equals the per-batch path's seeds' states on full neighbourhoods."""
        p, q, layers = self._all_layers(users, items, edges)
        out = {name: states[-1] for name, states in layers.items()}
        h_u, h_i = out["bipartite"].split([len(p), len(q)]) if "bipartite" in out else (p, q)  # [n_u, d], [n_i, d]
        return ({"p_u": p, "h_u": h_u, "s_u": out.get("user_sim", p)},
                {"q_i": q, "h_i": h_i, "s_i": out.get("item_sim", q)})

    def layer_states(self, users: NodeTable, items: NodeTable, edges) -> dict[str, list[torch.Tensor]]:
        """Every node's states of layers ``1 .. L-1`` per channel (:mod:`~ml_core.models.state_cache`)."""
        return self._all_layers(users, items, edges[: self.n_layers - 1])[2]  # zip stops at L - 1 layers

    def propagate_cached(self, name: str, h: torch.Tensor, ch: ChannelBatch, n_seeds: int,
                         states: list[torch.Tensor]) -> torch.Tensor:
        """``h^L`` of the channel's seeds (its first ``n_seeds`` rows) from ``h = h^0 [num_nodes, d]``
        and the sampled edges into them, layer ``l > 0`` reading the neighbours' cached states
        ``states[l - 1]`` (node-space rows ``ch.n_id``) and the seeds' fresh ones; each fresh
        state of a layer below L is written back to the cache (:mod:`~ml_core.models.state_cache`)."""
        dst = ch.edge_index[1]
        edges = ch.edge_index[:, dst < n_seeds]  # [2, E]: neighbour -> seed (a one-hop sample has no other)
        seeds = slice(0, n_seeds)
        h_seed, c = None, None
        for layer_no, layer in enumerate(self.layers[name]):
            if layer_no:
                cached = states[layer_no - 1].index_select(0, ch.n_id[n_seeds:])
                h = torch.cat([h_seed, cached.to(h_seed.dtype)])  # seeds fresh, the others cached
            h_seed, c = layer(h, c, edges, seeds)  # [S, d]
            if layer_no < self.n_layers - 1:
                states[layer_no].index_copy_(0, ch.n_id[:n_seeds], h_seed.detach().to(states[layer_no].dtype))
        return h_seed

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r = self.representations(batch)
        return r["h_u"], r["h_i"], r["s_u"], r["s_i"]
