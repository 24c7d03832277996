"""Node representations of a day: what a model scores pairs from, computed once per node.

The representations MoGE's experts read (``h_u, s_u`` of a user, ``h_i, s_i`` of an item after L
layers) depend on the node and the day's graphs, not on the pair: a model's
:meth:`~ml_core.models.base.RecModel.encode_nodes` computes them layer by layer over every node
of a :class:`~ml_core.contracts.day.DayContext` (PyG's layer-wise GraphSAGE/GAT inference), and
:meth:`~ml_core.models.base.RecModel.score_encoded` scores any (user row, item row) pair from
them. :class:`NodeReps` holds them with the node inputs (``users``, ``items``: the trivial
representation of a model that reads no graph), in the context's node spaces (row = node-space
row). :meth:`NodeReps.batch` hands a model a :class:`~ml_core.contracts.batch.Batch` whose
``reps`` carry each sample's precomputed vectors, so a model's ``forward`` reads them instead of
sampled subgraphs.

On disk (a deployed bundle's ``node_reps.npz``): :meth:`NodeReps.to_arrays` /
:meth:`NodeReps.from_arrays`, one array per table column and representation, plus the
node-space raw ids (``user_raw``, ``item_raw``) and how the graph part was computed
(``neighbours``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ml_core.contracts.batch import Batch, NodeTable

#: how representations computed from no graph are labelled (``NodeReps.neighbours``)
NO_GRAPH = "none"


def neighbourhood_label(fanouts: list[int] | None, seed: int) -> str:
    """``"full"`` (every neighbour) or ``"sampled [5, 10] seed 0"`` (per-layer fan-outs, first layer first)."""
    return "full" if fanouts is None else f"sampled {list(fanouts)} seed {seed}"


def _table_arrays(prefix: str, t: NodeTable) -> dict[str, np.ndarray]:
    return {f"{prefix}.ids": t.ids.numpy(), f"{prefix}.cats": t.cats.numpy(), f"{prefix}.nums": t.nums.numpy()}


def _table(prefix: str, arrays) -> NodeTable:
    return NodeTable(*(torch.from_numpy(np.asarray(arrays[f"{prefix}.{k}"])) for k in ("ids", "cats", "nums")))


@dataclass
class NodeReps:
    """Every node's inputs and representations of one day's node spaces.

    ``users`` / ``items``: the node inputs (:class:`NodeTable`, ``[n_users]`` / ``[n_items]``);
    ``user_reps`` / ``item_reps``: named tensors with one row per node (``{"h_u": [n_users, d],
    ...}``; names distinct across the two sides); ``neighbours``: how the graph part was computed
    (:func:`neighbourhood_label`, or :data:`NO_GRAPH`).
    """

    users: NodeTable
    items: NodeTable
    user_reps: dict[str, torch.Tensor] = field(default_factory=dict)
    item_reps: dict[str, torch.Tensor] = field(default_factory=dict)
    neighbours: str = NO_GRAPH

    def __post_init__(self) -> None:
        for side, table, reps in (("user", self.users, self.user_reps), ("item", self.items, self.item_reps)):
            bad = {k: tuple(v.shape) for k, v in reps.items() if v.shape[0] != len(table)}
            if bad:
                raise ValueError(f"{side} representations {bad} do not have one row per {side} ({len(table)})")
        both = set(self.user_reps) & set(self.item_reps)
        if both:
            raise ValueError(f"representation names {sorted(both)} are on both sides; they must be distinct")

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def batch(self, user_rows: torch.Tensor, item_rows: torch.Tensor, labels: torch.Tensor | None = None,
              pair: torch.Tensor | None = None, seq=None) -> Batch:
        """The :class:`Batch` of pairs ``(user_rows[b], item_rows[b])`` (node-space rows), with
        ``reps`` = each side's representations at those rows and ``pair`` the pairs' pair input
        (``[B, P]``, None for a model without one), ``seq`` their users' behaviour sequences
        (:class:`~ml_core.contracts.batch.Sequences` ``[B, N]`` or None); ``labels`` default to zeros."""
        u = torch.as_tensor(user_rows, dtype=torch.long)
        i = torch.as_tensor(item_rows, dtype=torch.long)
        if labels is None:
            labels = torch.zeros(len(u), 0, device=u.device)
        reps = {k: v.index_select(0, u) for k, v in self.user_reps.items()}
        reps.update({k: v.index_select(0, i) for k, v in self.item_reps.items()})
        return Batch(labels, self.users[u], self.items[i], u, i, reps=reps, pair=pair, seq=seq)

    def to(self, device: torch.device | str) -> NodeReps:
        return NodeReps(self.users.to(device), self.items.to(device), {k: v.to(device) for k, v in self.user_reps.items()},
                        {k: v.to(device) for k, v in self.item_reps.items()}, self.neighbours)

    def take(self, user_rows: np.ndarray, item_rows: np.ndarray) -> NodeReps:
        """The nodes ``user_rows`` / ``item_rows`` only, in that order."""
        u = torch.as_tensor(np.asarray(user_rows), dtype=torch.long, device=self.users.ids.device)
        i = torch.as_tensor(np.asarray(item_rows), dtype=torch.long, device=self.items.ids.device)
        return NodeReps(self.users[u], self.items[i], {k: v.index_select(0, u) for k, v in self.user_reps.items()},
                        {k: v.index_select(0, i) for k, v in self.item_reps.items()}, self.neighbours)

    def cat(self, other: NodeReps) -> NodeReps:
        """These nodes followed by ``other``'s (same representation names), e.g. a snapshot's
        nodes and the isolated nodes a request adds after them."""
        if set(other.user_reps) != set(self.user_reps) or set(other.item_reps) != set(self.item_reps):
            raise ValueError("cannot concatenate node representations with different names")
        tables = lambda a, b: NodeTable(*(torch.cat([x, y]) for x, y in ((a.ids, b.ids), (a.cats, b.cats), (a.nums, b.nums))))
        return NodeReps(tables(self.users, other.users), tables(self.items, other.items),
                        {k: torch.cat([v, other.user_reps[k]]) for k, v in self.user_reps.items()},
                        {k: torch.cat([v, other.item_reps[k]]) for k, v in self.item_reps.items()}, self.neighbours)

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(U [n_users, D_u], I [n_items, D_i])``: each side's representations flattened per
        node and concatenated in name order (float32), e.g. for an approximate nearest-neighbour
        index; a side without representations gives ``[n, 0]``."""
        def side(reps: dict[str, torch.Tensor], n: int) -> np.ndarray:
            parts = [reps[k].reshape(n, -1).float() for k in sorted(reps)]
            return torch.cat(parts, dim=1).numpy() if parts else np.zeros((n, 0), np.float32)
        return side(self.user_reps, self.n_users), side(self.item_reps, self.n_items)

    @property
    def nbytes(self) -> int:
        tensors = [*self.user_reps.values(), *self.item_reps.values()]
        tensors += [t for tab in (self.users, self.items) for t in (tab.ids, tab.cats, tab.nums)]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def to_arrays(self, user_raw: np.ndarray, item_raw: np.ndarray) -> dict[str, np.ndarray]:
        """Named arrays for ``np.savez`` (``user_raw`` / ``item_raw``: the node spaces' raw ids)."""
        if len(user_raw) != self.n_users or len(item_raw) != self.n_items:
            raise ValueError(f"raw ids ({len(user_raw)} users, {len(item_raw)} items) do not match the "
                             f"representations' node spaces ({self.n_users}, {self.n_items})")
        out = {"user_raw": np.asarray(user_raw, np.int64), "item_raw": np.asarray(item_raw, np.int64),
               "neighbours": np.array(self.neighbours), **_table_arrays("users", self.users),
               **_table_arrays("items", self.items)}
        out.update({f"user_reps.{k}": v.detach().cpu().numpy() for k, v in self.user_reps.items()})
        out.update({f"item_reps.{k}": v.detach().cpu().numpy() for k, v in self.item_reps.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays) -> tuple[NodeReps, np.ndarray, np.ndarray]:
        """``(reps, user_raw, item_raw)`` from :meth:`to_arrays`'s arrays (e.g. an opened npz)."""
        names = list(arrays.keys()) if hasattr(arrays, "keys") else list(arrays)
        side = lambda p: {k.split(".", 1)[1]: torch.from_numpy(np.asarray(arrays[k])) for k in names if k.startswith(p)}
        reps = cls(_table("users", arrays), _table("items", arrays), side("user_reps."), side("item_reps."),
                   str(arrays["neighbours"]))
        return reps, np.asarray(arrays["user_raw"]), np.asarray(arrays["item_raw"])
