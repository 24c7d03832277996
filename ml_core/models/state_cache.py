"""Training MGNN from cached layer states: one-hop subgraphs instead of L-hop ones.

The exact per-batch path (:meth:`~ml_core.models.mgnn.MGNN.propagate`) runs every layer over
the batch's sampled L-hop subgraph: at the ``large`` preset 27,000 nodes a batch of 256, whose
feature encoders, L2 term and optimizer rows cost more than the graph layers themselves
(``benchmarks/bench_moge.py --profile``). With a cache, each training day keeps every node's
states of layers ``1 .. L-1`` per channel (no gradient), and a batch samples one hop: layer
``l`` of a seed reads its sampled neighbours' cached layer-``l`` states and the seed's own fresh
one, so gradients reach every layer's weights through the seeds. Equations per seed ``v``:

.. math::
    h^{1}_v = f\\big(h^0_v, \\sigma(W^0 \\textstyle\\sum_j \\alpha_{v \\leftarrow j} h^0_j)\\big), \\qquad
    h^{l+1}_v = f\\big(h^l_v, \\sigma(W^l \\textstyle\\sum_j \\alpha_{v \\leftarrow j} \\bar h^l_j)\\big)

with ``bar h^l_j`` the cached state (the seed's own fresh one where ``j`` is a seed of the
batch). This is the historical-embedding approximation of GNNAutoScale (Fey et al., ICML 2021)
and VR-GCN (Chen et al., ICML 2018): the cached states lag the weights. They are recomputed
over each training day's whole graph every ``refresh`` steps (and at the first step), and each
step writes its seeds' fresh states back. Inference never reads the cache: evaluation and
serving encode every node layer by layer with the trained weights, as without it.
"""

from __future__ import annotations

import torch

from ml_core.batching import layer_edges


class LayerStateCache:
    """Per training day (``DayContext.day``): ``{channel: [h^1 .. h^{L-1}]}``, each ``[N_c, d]``
    over the channel's node space, recomputed every ``refresh`` steps by ``mgnn.layer_states``
    over the day's graph sampled with ``fanouts`` (seeded by the step)."""

    def __init__(self, refresh: int, fanouts: list[int]):
        if refresh < 1:
            raise ValueError(f"refresh must be >= 1 step, got {refresh}")
        self.refresh, self.fanouts = int(refresh), list(fanouts)
        self.contexts: dict[str, object] = {}
        self.states: dict[str, dict[str, list[torch.Tensor]]] = {}
        self.step, self._refreshed_at = 0, -1
        self.refreshes = 0  # how many times (for the tests and the metadata)

    def prepare(self, contexts) -> None:
        """The training days (the trainer's hook before step 1); nothing cached yet."""
        self.contexts = {c.day: c for c in contexts}
        self.states, self.step, self._refreshed_at = {}, 0, -1

    def of(self, mgnn, day: str | None) -> dict[str, list[torch.Tensor]]:
        """Day ``day``'s cached states (recomputed for every day when a refresh is due)."""
        if day not in self.contexts:
            raise ValueError(f"the state cache has no training day {day!r} (days: {sorted(self.contexts)}): "
                             "the trainer calls model.prepare(contexts) before the first step")
        if self.step % self.refresh == 0 and self._refreshed_at != self.step:
            self._refresh_all(mgnn)
        return self.states[day]

    @torch.no_grad()
    def _refresh_all(self, mgnn) -> None:
        for day, ctx in self.contexts.items():
            # the first L - 1 layers only (layer l samples fanouts[L - 1 - l], as layer_edges does for all L)
            edges = layer_edges(ctx, mgnn.channels, mgnn.n_layers - 1, self.fanouts[1:], seed=self.step)
            device = next(mgnn.parameters()).device
            self.states[day] = mgnn.layer_states(ctx.users.to(device), ctx.items.to(device), edges)
        self._refreshed_at = self.step
        self.refreshes += 1

    def advance(self) -> None:
        """One training step done."""
        self.step += 1
