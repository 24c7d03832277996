"""Turn rows of a :class:`DayContext` into :class:`Batch` objects.

For graph models every batch samples, per channel, one L-hop subgraph around the union of the
batch's distinct users and items (MoGE section 4.4: representations are computed once per batch
over the union of the sampled neighbourhoods, not once per sample).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ml_core.contracts.batch import Batch, ChannelBatch, NodeTable
from ml_core.contracts.day import DayContext


def _empty_table(like: NodeTable) -> NodeTable:
    idx = torch.zeros(0, dtype=torch.long)
    return like[idx]


class BatchMaker:
    """Builds batches of one day.

    Args:
        ctx (DayContext): the day.
        fanouts (list[int]): per-hop neighbour fan-outs (L = len(fanouts)); used by graph models.
        need_graph (bool): sample channel subgraphs (graph models) or not (feature-only models).
        weighted (bool): weight-proportional neighbour sampling instead of uniform.
        mask_target_edges (bool): hide each sample's own (user, item) edge from the bipartite
            channel's sampling. Day D's graph holds only days before D, so the day's own events
            are never in it; this option also hides older edges of the same pair.
    """

    def __init__(self, ctx: DayContext, fanouts: list[int], need_graph: bool, weighted: bool = False,
                 mask_target_edges: bool = False):
        self.ctx = ctx
        self.need_graph = need_graph
        self.mask_target_edges = mask_target_edges
        self.samplers = {}
        if need_graph:
            from ml_core.graph.sampler import NeighborSampler

            if not ctx.channels:
                raise ValueError(f"day {ctx.day}: a graph model needs channel graphs; build the context with_graph=True")
            self.samplers = {name: NeighborSampler(csr, list(fanouts), weighted=weighted) for name, csr in ctx.channels.items()}
        self.labels = torch.from_numpy(ctx.labels)
        self.sample_user = torch.from_numpy(ctx.sample_user)
        self.sample_item = torch.from_numpy(ctx.sample_item)
        self.n_users = len(ctx.user_raw)
        self.pairs = None if ctx.pairs is None else torch.from_numpy(ctx.pairs)

    def make(self, rows: np.ndarray, generator: torch.Generator | None = None) -> Batch:
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        u = self.sample_user[rows_t]
        i = self.sample_item[rows_t]
        batch = Batch(self.labels[rows_t], self.ctx.users[u], self.ctx.items[i], u, i,
                      pair=None if self.pairs is None else self.pairs[rows_t],
                      seq=None if self.ctx.user_seq is None else self.ctx.user_seq[u], day=self.ctx.day)
        if self.need_graph:
            batch.channels = self._channels(u, i, generator)
        return batch

    def _channels(self, u: torch.Tensor, i: torch.Tensor, generator) -> dict[str, ChannelBatch]:
        out = {}
        # bipartite: seeds are the distinct users and items of the batch in the [users | items] space
        uniq_u, inv_u = torch.unique(u, return_inverse=True)
        uniq_i, inv_i = torch.unique(i, return_inverse=True)
        seeds = torch.cat([uniq_u, uniq_i + self.n_users])
        exclude = None
        if self.mask_target_edges:
            # both directions of each (user, item) pair of the batch
            src = torch.cat([u, i + self.n_users])
            dst = torch.cat([i + self.n_users, u])
            exclude = torch.stack([src, dst])
        sub = self.samplers["bipartite"].sample(seeds, generator=generator, exclude_edges=exclude)
        is_item = sub.n_id >= self.n_users
        user_pos = torch.nonzero(~is_item).flatten()
        item_pos = torch.nonzero(is_item).flatten()
        out["bipartite"] = ChannelBatch(
            num_nodes=len(sub.n_id), edge_index=sub.edge_index, edge_weight=sub.edge_weight,
            user_pos=user_pos, item_pos=item_pos,
            users=self.ctx.users[sub.n_id[user_pos]], items=self.ctx.items[sub.n_id[item_pos] - self.n_users],
            seed_user=inv_u, seed_item=inv_i + len(uniq_u), n_id=sub.n_id,
        )
        for name, uniq, inv, is_user in (("user_sim", uniq_u, inv_u, True), ("item_sim", uniq_i, inv_i, False)):
            sub = self.samplers[name].sample(uniq, generator=generator)
            pos = torch.arange(len(sub.n_id))
            none = torch.zeros(0, dtype=torch.long)
            out[name] = ChannelBatch(
                num_nodes=len(sub.n_id), edge_index=sub.edge_index, edge_weight=sub.edge_weight,
                user_pos=pos if is_user else none, item_pos=none if is_user else pos,
                users=self.ctx.users[sub.n_id] if is_user else _empty_table(self.ctx.users),
                items=_empty_table(self.ctx.items) if is_user else self.ctx.items[sub.n_id],
                seed_user=inv if is_user else None, seed_item=None if is_user else inv, n_id=sub.n_id,
            )
        return out


def batch_plan(contexts: list[DayContext], batch_size: int, shuffle: bool, rng: np.random.Generator | None) -> list[tuple[int, np.ndarray]]:
    """(context index, sample rows) of every batch of an epoch; batches stay within a day."""
    plan = []
    for c, ctx in enumerate(contexts):
        rows = rng.permutation(ctx.n_samples) if shuffle else np.arange(ctx.n_samples)
        plan.extend((c, rows[s : s + batch_size]) for s in range(0, len(rows), batch_size))
    if shuffle:
        order = rng.permutation(len(plan))
        plan = [plan[j] for j in order]
    return plan


def iterate(makers: list[BatchMaker], plan: list[tuple[int, np.ndarray]], generator: torch.Generator | None,
            prefetch: int = 0) -> Iterator[Batch]:
    """Batches of ``plan`` in order. ``prefetch > 0`` builds up to that many batches ahead in a
    background thread (sampling overlaps the model's compute; torch releases the GIL in its ops).
    The batches and their order are the same either way: one thread consumes ``generator``."""
    if prefetch <= 0:
        for c, rows in plan:
            yield makers[c].make(rows, generator)
        return
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for c, rows in plan:
                if stop.is_set():
                    return
                q.put(makers[c].make(rows, generator))
            q.put(done)
        except BaseException as e:
            q.put(e)

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def layer_edges(ctx: DayContext, channels: tuple[str, ...], n_layers: int, fanouts: list[int] | None = None,
                seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per layer ``l = 0..n_layers-1``, each channel's edges over the whole day: ``[2, E]``
    (row 0 = neighbour, row 1 = the node it updates, both node-space rows of the channel;
    grouped by target) for layer-wise inference over every node (:mod:`ml_core.contracts.reps`).

    ``fanouts=None``: every neighbour, the same edges at every layer. Otherwise each node draws
    its neighbours afresh per layer with the per-pair path's sampler (uniform, without
    replacement, :class:`~ml_core.graph.sampler.NeighborSampler`): layer ``l`` takes
    ``fanouts[n_layers - 1 - l]``, the fan-out the per-pair path uses for the nodes that layer
    updates (the last layer updates the seeds from their hop-1 sample, ``fanouts[0]``; layer 0 of
    a two-layer model updates the hop-1 nodes from their hop-2 sample, ``fanouts[1]``), seeded by
    ``seed`` (the same seed, the same edges).
    """
    from ml_core.graph.sampler import NeighborSampler

    missing = [c for c in channels if c not in ctx.channels]
    if missing:
        raise ValueError(f"day {ctx.day}: layer-wise inference needs the channel graphs {missing}; "
                         "build the context with_graph=True")
    if fanouts is not None and len(fanouts) < n_layers:
        raise ValueError(f"{n_layers} layers need {n_layers} fan-outs, got {list(fanouts)}")
    if fanouts is None:
        full = {}
        for c in channels:
            csr = ctx.channels[c]
            full[c] = torch.stack([torch.as_tensor(np.asarray(csr.indices), dtype=torch.long),
                                   torch.as_tensor(csr.row_of_entries(), dtype=torch.long)])
        return [full] * n_layers
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layer in range(n_layers):
        f = int(fanouts[n_layers - 1 - layer])
        edges = {}
        for c in channels:
            csr = ctx.channels[c]
            # every node is a seed, listed in order: the subgraph's local ids are the node-space rows
            edges[c] = NeighborSampler(csr, [f]).sample(torch.arange(csr.n_rows), generator=gen).edge_index
        out.append(edges)
    return out
