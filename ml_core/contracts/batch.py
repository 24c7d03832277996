"""What every model reads: node inputs, sampled channel subgraphs and the batch.

Every model of the registry takes the same :class:`Batch` and returns per-task logits
``[B, K]``; graph models also read ``batch.channels`` (one sampled subgraph per channel, named
by :data:`CHANNELS`). The bipartite channel uses the homogeneous view ``[users | items]``
(item j is node ``n_users + j``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: the similarity channels a day's graph provides (MoGE's three views of the interactions)
CHANNELS = ("bipartite", "user_sim", "item_sim")


@dataclass
class NodeTable:
    """Model inputs of a set of nodes: id-embedding row, categorical codes, scaled numerics."""

    ids: torch.Tensor  # [n] int64, 0 = unknown id
    cats: torch.Tensor  # [n, C] int64, 0 = unknown value
    nums: torch.Tensor  # [n, F] float32

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> NodeTable:
        return NodeTable(self.ids[idx], self.cats[idx], self.nums[idx])

    def to(self, device: torch.device) -> NodeTable:
        return NodeTable(self.ids.to(device), self.cats.to(device), self.nums.to(device))


@dataclass
class Sequences:
    """Users' behaviour sequences (:mod:`ml_core.history`: last events in the window, newest
    first), one row per user or sample: ``items`` ``[n, N]`` (rows of the model's item id
    vocabulary, 0 = unknown), ``behaviors`` ``[n, N]`` (1..4 in ``BEHAVIORS`` order, 0 = padding),
    ``ages`` ``[n, N]`` (days since the event, clipped)."""

    items: torch.Tensor
    behaviors: torch.Tensor
    ages: torch.Tensor

    def __len__(self) -> int:
        return self.items.shape[0]

    def __getitem__(self, idx) -> Sequences:
        return Sequences(self.items[idx], self.behaviors[idx], self.ages[idx])

    def to(self, device: torch.device) -> Sequences:
        return Sequences(self.items.to(device), self.behaviors.to(device), self.ages.to(device))

    def cat(self, other: Sequences) -> Sequences:
        """These rows followed by ``other``'s."""
        return Sequences(*(torch.cat([a, b]) for a, b in ((self.items, other.items), (self.behaviors, other.behaviors),
                                                           (self.ages, other.ages))))

    @property
    def mask(self) -> torch.Tensor:
        """``[n, N]`` True where an event is (False = padding)."""
        return self.behaviors > 0


@dataclass
class ChannelBatch:
    """One channel's sampled subgraph around the batch's seeds.

    ``edge_index`` is in PyG convention (row 0 = source/neighbour, row 1 = target, local to the
    subgraph's ``num_nodes`` nodes). Node ``user_pos[j]`` carries features ``users[j]`` and node
    ``item_pos[j]`` carries ``items[j]``. ``seed_user[b]`` / ``seed_item[b]`` are the subgraph rows
    of sample b's user / item (``None`` when the channel has no such node type).
    """

    num_nodes: int
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    user_pos: torch.Tensor
    item_pos: torch.Tensor
    users: NodeTable
    items: NodeTable
    seed_user: torch.Tensor | None
    seed_item: torch.Tensor | None
    n_id: torch.Tensor | None = None  # [num_nodes] rows in the day's node space (bipartite: [users | items])

    def to(self, device: torch.device) -> ChannelBatch:
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)
        return ChannelBatch(
            self.num_nodes, mv(self.edge_index), mv(self.edge_weight), mv(self.user_pos), mv(self.item_pos),
            self.users.to(device), self.items.to(device), mv(self.seed_user), mv(self.seed_item), mv(self.n_id),
        )


@dataclass
class Batch:
    labels: torch.Tensor  # [B, K] float32
    user: NodeTable  # [B]
    item: NodeTable  # [B]
    user_index: torch.Tensor  # [B] node-space rows (for per-day graph operators)
    item_index: torch.Tensor  # [B]
    channels: dict[str, ChannelBatch] | None = None
    #: precomputed per-sample node representations (``{"h_u": [B, d], ...}``, from
    #: :meth:`~ml_core.contracts.reps.NodeReps.batch`): a graph model reads them instead of ``channels``
    reps: dict[str, torch.Tensor] | None = None
    #: the pair input ``[B, P]`` (scaled :func:`~ml_core.history.pair_features` of each sample's
    #: user and item, :class:`~ml_core.contracts.vocabulary.PairSpec`); None when the model's
    #: feature spec has none (``train.pair_features = false``, or a model saved before them)
    pair: torch.Tensor | None = None
    #: each sample's user's behaviour sequence (``[B, N]``, :class:`Sequences`); None when the
    #: model's feature spec has none (``train.sequence_length = 0``)
    seq: Sequences | None = None
    #: the day the batch's samples come from (``DayContext.day``; a training state cache is per day)
    day: str | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.labels.to(device), self.user.to(device), self.item.to(device),
            self.user_index.to(device), self.item_index.to(device),
            None if self.channels is None else {k: v.to(device) for k, v in self.channels.items()},
            None if self.reps is None else {k: v.to(device) for k, v in self.reps.items()},
            None if self.pair is None else self.pair.to(device),
            None if self.seq is None else self.seq.to(device), self.day,
        )
