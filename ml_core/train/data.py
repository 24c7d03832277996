"""From stored partitions to model inputs: the feature vocabulary, one day's context and batches.

Every model of the registry takes the same :class:`Batch` and returns per-task logits
``[B, K]``; graph models also read ``batch.channels`` (one sampled subgraph per channel).

Node spaces: a day's context indexes users as ``graph users ++ users only seen in the day's
samples`` (and the same for items), so graph rows keep their CSR positions and nodes that are
new that day are isolated (no neighbours) but still carry features. The bipartite channel uses
the homogeneous view ``[users | items]`` (item j is node ``n_users + j``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ml_core.features import feature_columns
from ml_core.graph.csr import CSR, BipartiteGraph, SimilarityGraph, lookup
from ml_core.sampling.samples import label_columns

CHANNELS = ("bipartite", "user_sim", "item_sim")


@dataclass
class DayInputs:
    """Everything stored for one day that a model trains or is evaluated on."""

    day: str
    samples: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame
    graph: BipartiteGraph | None = None
    user_sim: SimilarityGraph | None = None
    item_sim: SimilarityGraph | None = None


# -- feature vocabulary -------------------------------------------------------------------------
@dataclass
class SideSpec:
    """Vocabulary and scaling of one node type's features (fitted on training days only)."""

    prefix: str
    ids: np.ndarray  # sorted raw ids known to the model; row 0 of the id embedding = unknown
    cats: list[str]
    cat_sizes: list[int]  # embedding rows per categorical column, incl. the unknown bucket 0
    nums: list[str]
    num_mean: list[float]
    num_std: list[float]
    #: per categorical column, the sorted raw codes known to the model (code ``vocab[j]`` -> row
    #: ``j + 1``); None = rows are raw code + 1 (bundles saved before vocabularies existed)
    cat_vocabs: list[np.ndarray] | None = None

    @property
    def n_ids(self) -> int:
        return len(self.ids) + 1

    @classmethod
    def fit(cls, prefix: str, id_col: str, tables: list[pl.DataFrame], extra_ids: list[np.ndarray]) -> "SideSpec":
        table = pl.concat(tables, how="diagonal_relaxed")
        cats, nums = feature_columns(table, prefix)
        ids = np.unique(np.concatenate([table[id_col].to_numpy(), *extra_ids])).astype(np.int64)
        # each categorical column gets a compact vocabulary of the codes seen in training (row 0 =
        # unknown): raw codes can be sparse and huge (Taobao's category ids reach 5M), and an
        # embedding table sized by the largest code costs memory and optimiser time for nothing
        vocabs = [np.unique(table[c].drop_nulls().to_numpy()).astype(np.int64) for c in cats]
        vocabs = [v[v >= 0] for v in vocabs]
        cat_sizes = [len(v) + 1 for v in vocabs]
        mean = [float(table[c].mean() or 0.0) for c in nums]
        std = [float(table[c].std() or 0.0) or 1.0 for c in nums]
        return cls(prefix, ids, cats, cat_sizes, nums, mean, std, vocabs)

    def encode(self, raw_ids: np.ndarray, table: pl.DataFrame, id_col: str) -> "NodeTable":
        """NodeTable rows for ``raw_ids`` (features looked up in ``table``; absent = unknown)."""
        raw_ids = np.asarray(raw_ids, dtype=np.int64)
        id_idx = lookup(self.ids, raw_ids) + 1  # -1 (unknown) -> 0
        frame = pl.DataFrame({id_col: raw_ids}).join(table, on=id_col, how="left", maintain_order="left")
        cats = np.zeros((len(raw_ids), len(self.cats)), dtype=np.int64)
        for j, (c, size) in enumerate(zip(self.cats, self.cat_sizes)):
            if c in frame.columns:
                raw = frame[c].fill_null(-1).to_numpy().astype(np.int64)
                if self.cat_vocabs is not None:
                    cats[:, j] = lookup(self.cat_vocabs[j], raw) + 1  # unseen / null -> 0 (unknown)
                else:
                    v = raw + 1  # -1 -> 0 (unknown)
                    cats[:, j] = np.where((v >= 0) & (v < size), v, 0)
        nums = np.zeros((len(raw_ids), len(self.nums)), dtype=np.float32)
        for j, (c, m, s) in enumerate(zip(self.nums, self.num_mean, self.num_std)):
            if c in frame.columns:
                nums[:, j] = (frame[c].fill_null(m).to_numpy().astype(np.float32) - m) / s
        return NodeTable(torch.from_numpy(id_idx), torch.from_numpy(cats), torch.from_numpy(nums))

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("ids", "cat_vocabs")}


@dataclass
class FeatureSpec:
    """What a trained model knows about its inputs: tasks, id vocabularies, feature columns."""

    tasks: list[str]
    user: SideSpec
    item: SideSpec

    @classmethod
    def fit(cls, days: list[DayInputs], tasks: list[str]) -> "FeatureSpec":
        return cls(
            tasks=list(tasks),
            user=SideSpec.fit("u", "user_id", [d.users for d in days], [d.samples["user_id"].to_numpy() for d in days]),
            item=SideSpec.fit("i", "item_id", [d.items for d in days], [d.samples["item_id"].to_numpy() for d in days]),
        )

    def save(self, directory: Path) -> None:
        np.save(directory / "user_ids.npy", self.user.ids)
        np.save(directory / "item_ids.npy", self.item.ids)
        for side in (self.user, self.item):
            if side.cat_vocabs is not None:
                np.savez(directory / f"{side.prefix}_cat_vocabs.npz", *side.cat_vocabs)
        (directory / "feature_spec.json").write_text(
            json.dumps({"tasks": self.tasks, "user": self.user.to_json(), "item": self.item.to_json()}, indent=2)
        )

    @classmethod
    def load(cls, directory: Path) -> "FeatureSpec":
        raw = json.loads((directory / "feature_spec.json").read_text())
        def vocabs(prefix: str) -> list[np.ndarray] | None:
            f = directory / f"{prefix}_cat_vocabs.npz"
            if not f.exists():
                return None
            with np.load(f) as z:
                return [z[f"arr_{j}"] for j in range(len(z.files))]

        user = SideSpec(ids=np.load(directory / "user_ids.npy"), cat_vocabs=vocabs(raw["user"]["prefix"]), **raw["user"])
        item = SideSpec(ids=np.load(directory / "item_ids.npy"), cat_vocabs=vocabs(raw["item"]["prefix"]), **raw["item"])
        return cls(raw["tasks"], user, item)


# -- tensors ------------------------------------------------------------------------------------
@dataclass
class NodeTable:
    """Model inputs of a set of nodes: id-embedding row, categorical codes, scaled numerics."""

    ids: torch.Tensor  # [n] int64, 0 = unknown id
    cats: torch.Tensor  # [n, C] int64, 0 = unknown value
    nums: torch.Tensor  # [n, F] float32

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> "NodeTable":
        return NodeTable(self.ids[idx], self.cats[idx], self.nums[idx])

    def to(self, device: torch.device) -> "NodeTable":
        return NodeTable(self.ids.to(device), self.cats.to(device), self.nums.to(device))


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

    def to(self, device: torch.device) -> "ChannelBatch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
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

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> "Batch":
        return Batch(
            self.labels.to(device), self.user.to(device), self.item.to(device),
            self.user_index.to(device), self.item_index.to(device),
            None if self.channels is None else {k: v.to(device) for k, v in self.channels.items()},
        )


# -- one day's context ----------------------------------------------------------------------------
def _extend_rows(csr: CSR, n_rows: int, n_cols: int) -> CSR:
    """Append empty rows (and widen columns) so new nodes exist but have no neighbours."""
    extra = n_rows - csr.n_rows
    indptr = np.concatenate([np.asarray(csr.indptr), np.full(extra, csr.indptr[-1], dtype=np.int64)])
    return CSR(indptr, np.asarray(csr.indices), np.asarray(csr.weights), n_cols)


@dataclass
class DayContext:
    """A day's node spaces, node inputs, channel adjacencies and encoded samples."""

    day: str
    user_raw: np.ndarray
    item_raw: np.ndarray
    users: NodeTable
    items: NodeTable
    sample_user: np.ndarray  # [n] node-space rows
    sample_item: np.ndarray
    sample_user_raw: np.ndarray  # [n] raw ids (GAUC groups)
    labels: np.ndarray  # [n, K] float32
    channels: dict[str, CSR] = field(default_factory=dict)
    n_graph_users: int = 0
    n_graph_items: int = 0

    @property
    def n_samples(self) -> int:
        return len(self.sample_user)

    @classmethod
    def build(cls, inputs: DayInputs, spec: FeatureSpec, with_graph: bool) -> "DayContext":
        s = inputs.samples
        g = inputs.graph
        g_users = g.user_ids if g is not None else np.zeros(0, np.int64)
        g_items = g.item_ids if g is not None else np.zeros(0, np.int64)
        s_users = np.unique(s["user_id"].to_numpy())
        s_items = np.unique(s["item_id"].to_numpy())
        new_users = np.setdiff1d(s_users, g_users)
        new_items = np.setdiff1d(s_items, g_items)
        user_raw = np.concatenate([g_users, new_users]).astype(np.int64)
        item_raw = np.concatenate([g_items, new_items]).astype(np.int64)
        # node-space row of each raw id: graph ids are sorted, new ids are sorted after them
        user_row = _space_lookup(g_users, new_users, s["user_id"].to_numpy())
        item_row = _space_lookup(g_items, new_items, s["item_id"].to_numpy())
        labels = s.select(label_columns(spec.tasks)).to_numpy().astype(np.float32)
        ctx = cls(
            day=inputs.day,
            user_raw=user_raw,
            item_raw=item_raw,
            users=spec.user.encode(user_raw, inputs.users, "user_id"),
            items=spec.item.encode(item_raw, inputs.items, "item_id"),
            sample_user=user_row,
            sample_item=item_row,
            sample_user_raw=s["user_id"].to_numpy().astype(np.int64),
            labels=labels,
            n_graph_users=len(g_users),
            n_graph_items=len(g_items),
        )
        if with_graph:
            ctx.channels = ctx._channel_adjacency(inputs)
        return ctx

    def _channel_adjacency(self, inputs: DayInputs) -> dict[str, CSR]:
        nu, ni = len(self.user_raw), len(self.item_raw)
        g = inputs.graph
        if g is None:
            raise ValueError(f"day {self.day}: graph model needs the bipartite graph, none was given")
        # bipartite channel over [users | items] with new nodes appended to each side
        ui = g.ui
        r = ui.row_of_entries()
        c = np.asarray(ui.indices) + nu
        rows = np.concatenate([r, c])
        cols = np.concatenate([c, r])
        w = np.concatenate([ui.weights, ui.weights])
        out = {"bipartite": CSR.from_coo(rows, cols, w, nu + ni, nu + ni, sum_duplicates=False)}
        for name, sim, n, ids in (("user_sim", inputs.user_sim, nu, g.user_ids), ("item_sim", inputs.item_sim, ni, g.item_ids)):
            if sim is None:
                raise ValueError(f"day {self.day}: graph model needs the {name} graph, none was given")
            if len(sim.node_ids) != len(ids) or not np.array_equal(sim.node_ids, ids):
                raise ValueError(f"day {self.day}: {name} graph nodes differ from the bipartite graph's")
            out[name] = _extend_rows(sim.adj, n, n)
        return out


def _space_lookup(graph_ids: np.ndarray, new_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    in_graph = lookup(graph_ids, raw)
    in_new = lookup(new_ids, raw) + len(graph_ids)
    row = np.where(in_graph >= 0, in_graph, in_new)
    if (row < 0).any():
        raise AssertionError("sample id missing from the day's node space")
    return row.astype(np.int64)
