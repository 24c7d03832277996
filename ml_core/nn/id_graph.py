"""A model's id-embedding tables and the graph over their rows (shared by SEvo and LightGODE).

Both methods act on the id embeddings directly, outside the model's forward pass: SEvo smooths
each optimiser update over the graph, LightGODE integrates a graph ODE over the trained tables.
They need two things this module provides:

* :func:`id_table_pairs` - the model's id-embedding tables, found generically as the ``id_emb``
  of every :class:`~ml_core.nn.dense.FeatureEncoder` among the model's modules, sorted into
  user and item tables and paired (user table ``n``, item table ``n``).
* :func:`id_adjacency` - the symmetric-normalised adjacency
  :math:`\\hat A = D^{-1/2} A D^{-1/2}` over the stacked rows ``[user id rows | item id rows]``
  (``N = n_user_ids + n_item_ids``; row 0 of each table is the unknown id and is isolated), built
  from the training days' graphs.

Index mapping: a :class:`~ml_core.contracts.day.DayContext` indexes its graph by that day's node
space; ``ctx.users.ids[r]`` / ``ctx.items.ids[r]`` give each node-space row its id-embedding row
(0 = unknown). An edge (node ``r``, node ``c``) becomes the entry (``ids[r]``, ``ids[c]``), items
offset by ``n_user_ids``; edges that touch an unknown id are dropped.

Which graph (``days``): ``"last"`` (default) - the graph of the most recent training day D-1,
which holds the interactions of the graph window *before* D-1, so nothing of the evaluation day D
(nor of D-1's own samples) is in it; the interactions of earlier training days are, as in SEvo and
LightGODE, whose graph is the training interaction graph. ``"all"`` - the union of every training day's graph (each
also from before its own day). Edges are binarised by default (``A_uv = 1`` for an observed pair,
the usual LightGCN / LightGODE / SEvo adjacency); ``weighted=True`` keeps the stored weights
(behaviour-weighted counts, similarities). No self loops.

At inference the standalone LightGODE model calls :func:`id_adjacency` with the single context of
the scored day D (``[ctx]``): graph[D], built from the days before D, so no edge of day D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ml_core.contracts.batch import CHANNELS
from ml_core.nn.dense import FeatureEncoder
from ml_core.nn.graph import sparse_csr

GRAPH_DAYS = ("last", "all")


# -- tables -------------------------------------------------------------------------------------
def id_table_pairs(model: nn.Module) -> list[tuple[nn.Embedding, nn.Embedding]]:
    """``[(user_table, item_table), ...]``: the ``FeatureEncoder.id_emb`` tables of ``model``.

    A table is a user table when its row count is the model's ``spec.user.n_ids`` (and not
    ``spec.item.n_ids``), an item table in the opposite case; when both vocabularies have the same
    size (or the model has no ``spec``) the module path decides (``user``/``item`` in its name).
    A shared encoder (MoGE's MGNN reuses MoGE's) counts once; the tables inside a module with
    ``unpaired_id_tables = True`` (the behaviour sequence's item table: the items of a history, with
    no user table beside it) are not coupled (they train as any other weight). Raises ValueError
    when the model has no id tables, when a table's side is undecidable, or when the tables do not
    pair up.
    """
    spec = getattr(model, "spec", None)
    users: list[nn.Embedding] = []
    items: list[nn.Embedding] = []
    seen: set[int] = set()
    unpaired = tuple(f"{name}." for name, mod in model.named_modules() if getattr(mod, "unpaired_id_tables", False))
    for name, mod in model.named_modules():
        if not isinstance(mod, FeatureEncoder) or mod.id_emb is None or id(mod.id_emb) in seen:
            continue
        if name.startswith(unpaired):
            continue
        seen.add(id(mod.id_emb))
        side = _side(name, mod.id_emb.num_embeddings, spec)
        (users if side == "user" else items).append(mod.id_emb)
    if not users and not items:
        raise ValueError(f"{type(model).__name__} has no id-embedding tables (FeatureEncoder.id_emb)")
    if len(users) != len(items):
        raise ValueError(f"{type(model).__name__}: {len(users)} user id tables but {len(items)} item id tables; "
                         "the graph couples them in pairs")
    pairs = list(zip(users, items))
    for u, i in pairs:
        if u.embedding_dim != i.embedding_dim:
            raise ValueError(f"paired id tables differ in width: user {u.embedding_dim}, item {i.embedding_dim}")
        if (u.num_embeddings, i.num_embeddings) != (pairs[0][0].num_embeddings, pairs[0][1].num_embeddings):
            raise ValueError("id tables of the same side differ in rows (different vocabularies)")
    return pairs


def _side(name: str, n_rows: int, spec) -> str:
    if spec is not None:
        nu, ni = spec.user.n_ids, spec.item.n_ids
        if n_rows == nu and n_rows != ni:
            return "user"
        if n_rows == ni and n_rows != nu:
            return "item"
    low = name.lower()
    if ("user" in low) != ("item" in low):
        return "user" if "user" in low else "item"
    raise ValueError(f"cannot tell whether id table {name!r} ({n_rows} rows) is a user or an item table: "
                     "name its module user_*/item_*")


# -- graph --------------------------------------------------------------------------------------
@dataclass
class IdGraph:
    """``adj``: sparse CSR ``[N, N]`` float32, :math:`D^{-1/2} A D^{-1/2}` over ``[users | items]`` rows."""

    adj: torch.Tensor
    n_user_rows: int
    n_item_rows: int
    n_edges: int  # undirected edges (each stored in both directions)
    days: list[str]
    channels: list[str]

    def dense(self) -> torch.Tensor:
        return self.adj.to_dense()

    def stats(self) -> dict:
        return {"graph_days": self.days, "graph_channels": self.channels, "graph_edges": self.n_edges,
                "rows": self.n_user_rows + self.n_item_rows}


def id_adjacency(contexts, n_user_rows: int, n_item_rows: int, channels: list[str] | tuple[str, ...] = ("bipartite",),
                 days: str = "last", weighted: bool = False) -> IdGraph:
    """Normalised adjacency over id-embedding rows from the training days' graphs (module docstring).

    Args:
        contexts (list[DayContext]): training days, built with their channel graphs.
        n_user_rows (int): rows of the user id table (``spec.user.n_ids``).
        n_item_rows (int): rows of the item id table.
        channels (list[str]): ``bipartite`` (default), ``user_sim``, ``item_sim``; several = the
            union of their edges.
        days (str): ``"last"`` (default) or ``"all"``.
        weighted (bool): keep edge weights instead of binarising (default: False).
    """
    channels = list(channels)
    bad = [c for c in channels if c not in CHANNELS]
    if not channels or bad:
        raise ValueError(f"graph channels must be a non-empty subset of {CHANNELS}, got {channels}")
    if days not in GRAPH_DAYS:
        raise ValueError(f"graph days must be one of {GRAPH_DAYS}, got {days!r}")
    if not contexts:
        raise ValueError("no training contexts to read a graph from")
    chosen = [max(contexts, key=lambda c: c.day)] if days == "last" else list(contexts)
    rows, cols, vals = [], [], []
    for ctx in chosen:
        if not ctx.channels:
            raise ValueError(f"day {ctx.day}: the context carries no graphs (the step reading them must set "
                             "declare graph_needs = GraphNeeds.DAY_GRAPHS so the trainer builds DayContext.channels)")
        u_row = _emb_rows(ctx.users.ids, 0)  # node-space user row -> embedding row (-1 = unknown)
        i_row = _emb_rows(ctx.items.ids, n_user_rows)
        for name in channels:
            csr = ctx.channels[name]
            space = {"bipartite": np.concatenate([u_row, i_row]), "user_sim": u_row, "item_sim": i_row}[name]
            r, c = space[csr.row_of_entries()], space[np.asarray(csr.indices)]
            keep = (r >= 0) & (c >= 0) & (r != c)
            rows.append(r[keep])
            cols.append(c[keep])
            vals.append(np.asarray(csr.weights, np.float64)[keep])
    n = n_user_rows + n_item_rows
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    r, c, w = np.concatenate([r, c]), np.concatenate([c, r]), np.concatenate([w, w])  # symmetric
    key, inv = np.unique(r * n + c, return_inverse=True)
    w = np.bincount(inv, weights=w, minlength=len(key)) if weighted else np.ones(len(key))
    r, c = key // n, key % n
    deg = np.bincount(r, weights=w, minlength=n)
    dinv = np.zeros(n)
    np.divide(1.0, np.sqrt(deg), out=dinv, where=deg > 0)
    val = dinv[r] * w * dinv[c]  # D^-1/2 A D^-1/2
    crow = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=crow[1:])  # keys are sorted by (r, c)
    adj = sparse_csr(torch.from_numpy(crow), torch.from_numpy(c.astype(np.int64)),
                     torch.from_numpy(val.astype(np.float32)), (n, n))
    return IdGraph(adj, n_user_rows, n_item_rows, len(key) // 2, [ctx.day for ctx in chosen], channels)


def _emb_rows(ids: torch.Tensor, offset: int) -> np.ndarray:
    ids = ids.cpu().numpy().astype(np.int64)
    return np.where(ids > 0, ids + offset, -1)


def stack_rows(pair: tuple[nn.Embedding, nn.Embedding]) -> torch.Tensor:
    """``[user rows | item rows]`` of a table pair, ``[N, d]`` (a copy)."""
    return torch.cat([pair[0].weight.detach(), pair[1].weight.detach()], dim=0)
