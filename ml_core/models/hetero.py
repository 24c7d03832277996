"""E2E-GRec's graph side: the batch's channel subgraphs merged into one heterogeneous subgraph
(node types ``user``, ``item``; relations :data:`RELATIONS`) and the L-layer relational encoder
over it, ``h^{l+1}_v = LeakyReLU(W_tau h^l_v + sum_r W_r AGG_r(h^l_j))``, ``z = W_out h^L``
(equations and choices: :mod:`ml_core.models.e2e_grec`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ml_core.contracts.batch import NodeTable
from ml_core.models.mgnn import cat_tables
from ml_core.nn.graph import NeighborAttention, weighted_sum

NODE_TYPES = ("user", "item")
#: per-relation aggregations: GraphSAGE mean (``sage``) or GAT attention (``gat``)
CONVS = ("sage", "gat")
#: relation -> (channel it is read from, source node type, target node type)
RELATIONS = {
    "item_to_user": ("bipartite", "item", "user"),
    "user_to_item": ("bipartite", "user", "item"),
    "user_to_user": ("user_sim", "user", "user"),
    "item_to_item": ("item_sim", "item", "item"),
}


# -- the heterogeneous subgraph of a batch ---------------------------------------------------------
@dataclass
class HeteroSubgraph:
    """The batch's channel subgraphs merged into one graph with typed nodes and relations.

    ``tables[t]`` holds the inputs of the distinct nodes of type ``t``; ``edges[r]`` is
    ``[2, E_r]`` (row 0 indexes the source type's nodes, row 1 the target type's);
    ``sample_user[b]`` / ``sample_item[b]`` are the rows of sample b's user and item.
    """

    tables: dict[str, NodeTable]
    edges: dict[str, torch.Tensor]
    sample_user: torch.Tensor
    sample_item: torch.Tensor

    def seeds(self) -> dict[str, torch.Tensor]:
        return {"user": torch.unique(self.sample_user), "item": torch.unique(self.sample_item)}


def merge_channels(batch, channels: tuple[str, ...]) -> HeteroSubgraph:
    """One :class:`HeteroSubgraph` from ``batch.channels`` (nodes identified by ``n_id``).

    Keys: a user's row in the day's user space; an item's row in the item space (the bipartite
    channel numbers items ``n_users + j``; ``n_users`` is read off the batch's seed items).
    """
    chans = {c: batch.channels[c] for c in channels}
    missing = [c for c, ch in chans.items() if ch.n_id is None]
    if missing:
        raise ValueError(f"E2E-GRec merges channels by node id: channels {missing} carry no n_id")
    item_shift = {c: 0 for c in chans}
    if "bipartite" in chans:
        bip = chans["bipartite"]
        item_shift["bipartite"] = bip.n_id[bip.seed_item[:1]] - batch.item_index[:1]  # [1] = n_users
    keys = {t: [] for t in NODE_TYPES}
    tables = {t: [] for t in NODE_TYPES}
    for name, ch in chans.items():
        keys["user"].append(ch.n_id[ch.user_pos])
        keys["item"].append(ch.n_id[ch.item_pos] - item_shift[name])
        tables["user"].append(ch.users)
        tables["item"].append(ch.items)
    dev = batch.labels.device
    merged, row_of = {}, {c: torch.empty(ch.num_nodes, dtype=torch.long, device=dev) for c, ch in chans.items()}
    for t in NODE_TYPES:
        k = torch.cat(keys[t])  # [sum n_t]
        uniq, inv = torch.unique(k, return_inverse=True)  # [N_t], [sum n_t]
        first = torch.full((len(uniq),), len(k), dtype=torch.long, device=dev).scatter_reduce(
            0, inv, torch.arange(len(k), device=dev), "amin")  # [N_t] first occurrence of each node
        merged[t] = cat_tables(tables[t])[first]
        for (name, ch), part in zip(chans.items(), torch.split(inv, [len(x) for x in keys[t]])):
            row_of[name][ch.user_pos if t == "user" else ch.item_pos] = part
    edges = {}
    for rel, (name, s, t) in RELATIONS.items():
        if name not in chans:
            continue
        ch = chans[name]
        is_item = torch.zeros(ch.num_nodes, dtype=torch.bool, device=dev)
        is_item[ch.item_pos] = True
        src, dst = ch.edge_index
        keep = (is_item[src] == (s == "item")) & (is_item[dst] == (t == "item"))
        edges[rel] = torch.stack([row_of[name][src[keep]], row_of[name][dst[keep]]])  # [2, E_r]
    u_chan = "bipartite" if "bipartite" in chans else "user_sim"
    i_chan = "bipartite" if "bipartite" in chans else "item_sim"
    return HeteroSubgraph(merged, edges, row_of[u_chan][chans[u_chan].seed_user],
                          row_of[i_chan][chans[i_chan].seed_item])


def hop_masks(edges: dict[str, torch.Tensor], n_nodes: dict[str, int], seeds: dict[str, torch.Tensor],
              n_layers: int) -> list[dict[str, torch.Tensor]]:
    """``R_l`` per node type, ``l = 0..L-1``: the nodes layer ``l`` must update so that the seeds'
    layer-``L`` states are exact (``R_{L-1}`` = seeds, ``R_{l-1} = R_l`` + in-neighbours over every
    relation), as boolean masks ``{type: [N_t]}``."""
    need = {}
    for t in NODE_TYPES:
        need[t] = torch.zeros(n_nodes[t], dtype=torch.bool, device=seeds[t].device)
        need[t][seeds[t]] = True
    masks = [need]
    for _ in range(n_layers - 1):
        wider = {t: m.clone() for t, m in need.items()}
        for rel, ei in edges.items():
            _, s, t = RELATIONS[rel]
            wider[s][ei[0][need[t][ei[1]]]] = True
        need = wider
        masks.append(need)
    return masks[::-1]


def day_relations(edges: dict[str, torch.Tensor], n_users: int, relations: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A day's channel edges (:func:`~ml_core.batching.layer_edges`: node-space rows, bipartite
    over ``[users | items]``) as ``{relation: [2, E_r]}`` with type-local rows (row 0 the source
    type's, row 1 the target type's), for ``relations`` only."""
    out = {}
    for rel in relations:
        name, s, t = RELATIONS[rel]
        src, dst = edges[name]
        if name == "bipartite":
            keep = (src >= n_users) == (s == "item")  # the other end is of the other type
            src, dst = src[keep], dst[keep]
            src = src - n_users if s == "item" else src
            dst = dst - n_users if t == "item" else dst
        out[rel] = torch.stack([src, dst])  # [2, E_r]
    return out


# -- graph encoder -------------------------------------------------------------------------------
class MeanAggregation(nn.Module):
    """GraphSAGE's mean aggregator ``W mean_{j in N(i)} h_j`` (0 for a target without edges).

    Shapes: ``x_src [N_s, d]``, ``x_dst [N_t, d]`` (only its length is read), ``edge_index [2, E]``
    -> ``[N_t, d]``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False)  # W_r

    def forward(self, x_src: torch.Tensor, x_dst: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = x_dst.shape[0]
        deg = torch.bincount(edge_index[1], minlength=n).clamp(min=1)  # [N_t]
        alpha = deg.float().reciprocal().index_select(0, edge_index[1])  # [E]  1 / |N(i)|
        return self.lin(weighted_sum(alpha, x_src, edge_index, n).to(x_src.dtype))  # [N_t, d]


class HeteroLayer(nn.Module):
    """``h'_v = LeakyReLU(W_tau h_v + sum_r W_r AGG_r(h_j))`` for the nodes of ``masks``."""

    def __init__(self, dim: int, relations: tuple[str, ...], conv: str, negative_slope: float):
        super().__init__()
        self.root = nn.ModuleDict({t: nn.Linear(dim, dim) for t in NODE_TYPES})  # W_tau
        self.rel = nn.ModuleDict({
            r: MeanAggregation(dim) if conv == "sage" else NeighborAttention(dim, negative_slope) for r in relations
        })  # W_r (and GAT's a_s, a_t)
        self.negative_slope = negative_slope

    def forward(self, h: dict[str, torch.Tensor], edges: dict[str, torch.Tensor],
                masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for t in NODE_TYPES:
            targets = torch.nonzero(masks[t]).flatten()  # [T] rows updated by this layer
            pos = torch.cumsum(masks[t], 0) - 1  # node -> row among the targets
            h_t = h[t].index_select(0, targets)  # [T, d]
            m = self.root[t](h_t)  # [T, d]
            for rel, agg in self.rel.items():
                _, s, dst_type = RELATIONS[rel]
                if dst_type != t:
                    continue
                src, dst = edges[rel]
                keep = masks[t][dst]
                m = m + agg(h[s], h_t, torch.stack([src[keep], pos[dst[keep]]]))  # [T, d]
            new = nn.functional.leaky_relu(m, self.negative_slope).to(h[t].dtype)
            out[t] = new if len(targets) == len(h[t]) else h[t].index_copy(0, targets, new)  # [N_t, d]
        return out


class HeteroGraphEncoder(nn.Module):
    """L :class:`HeteroLayer` s and the shared output layer ``z = W_out h^L``.

    Shapes: ``h0 {type: [N_t, d]}`` -> ``(rows {type: [S_t]}, z {type: [S_t, d]})`` for the
    nodes ``rows`` of ``outputs`` (their layer-L states are exact).
    """

    def __init__(self, dim: int, n_layers: int, relations: tuple[str, ...], conv: str, negative_slope: float):
        super().__init__()
        self.layers = nn.ModuleList(HeteroLayer(dim, relations, conv, negative_slope) for _ in range(n_layers))
        self.out = nn.Linear(dim, dim)  # W_out, the last layer shared by every loss

    def forward(self, h0: dict[str, torch.Tensor], edges: dict[str, torch.Tensor],
                outputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        masks = hop_masks(edges, {t: len(x) for t, x in h0.items()}, outputs, len(self.layers))
        h = h0
        for layer, mask in zip(self.layers, masks):
            h = layer(h, edges, mask)
        rows = {t: torch.nonzero(masks[-1][t]).flatten() for t in NODE_TYPES}  # [S_t]
        return rows, {t: self.out(h[t].index_select(0, rows[t])) for t in NODE_TYPES}  # [S_t, d]

    def encode_all(self, h0: dict[str, torch.Tensor], edges: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``z`` of every node, ``{type: [N_t, d]}``: each layer updates every node from its
        relations' edges of that layer (:func:`day_relations`, one dict per layer)."""
        h = h0
        for layer, e in zip(self.layers, edges):
            every = {t: torch.ones(len(x), dtype=torch.bool, device=x.device) for t, x in h.items()}
            h = layer(h, {r: ei.to(h0["user"].device) for r, ei in e.items()}, every)
        return {t: self.out(h[t]) for t in NODE_TYPES}  # [N_t, d]
