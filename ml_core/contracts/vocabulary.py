"""The feature vocabulary of a trained model (fitted on its training days, saved with it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from ml_core.contracts.batch import NodeTable, Sequences
from ml_core.graph.csr import lookup
from ml_core.history import MAX_AGE, MAX_SEQUENCE, missing_history
from ml_core.node_features import feature_columns
from ml_core.sorting import sorted_unique

if TYPE_CHECKING:
    from ml_core.contracts.day import DayInputs


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
    def fit(cls, prefix: str, id_col: str, tables: list[pl.DataFrame], extra_ids: list[np.ndarray]) -> SideSpec:
        table = pl.concat(tables, how="diagonal_relaxed")
        cats, nums = feature_columns(table, prefix)
        ids = sorted_unique(np.concatenate([table[id_col].to_numpy(), *extra_ids])).astype(np.int64)
        # each categorical column gets a compact vocabulary of the codes seen in training (row 0 =
        # unknown): raw codes can be sparse and huge (Taobao's category ids reach 5M), and an
        # embedding table sized by the largest code costs memory and optimiser time for nothing
        vocabs = [sorted_unique(table[c].drop_nulls().to_numpy()).astype(np.int64) for c in cats]
        vocabs = [v[v >= 0] for v in vocabs]
        cat_sizes = [len(v) + 1 for v in vocabs]
        mean = [float(table[c].mean() or 0.0) for c in nums]
        std = [float(table[c].std() or 0.0) or 1.0 for c in nums]
        return cls(prefix, ids, cats, cat_sizes, nums, mean, std, vocabs)

    def encode(self, raw_ids: np.ndarray, table: pl.DataFrame, id_col: str) -> NodeTable:
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

    def same_as(self, other: SideSpec) -> bool:
        """Encodes every id and feature as ``other`` does (same columns, scaling, vocabularies)."""
        vocabs = lambda s: s.cat_vocabs if s.cat_vocabs is not None else []
        return (self.to_json() == other.to_json() and np.array_equal(self.ids, other.ids)
                and (self.cat_vocabs is None) == (other.cat_vocabs is None)
                and all(np.array_equal(a, b) for a, b in zip(vocabs(self), vocabs(other), strict=True)))


@dataclass
class PairSpec:
    """Columns and scaling of the pair input (:func:`~ml_core.history.pair_features`), fitted on
    the training days' samples: each column standardised like the numeric node features."""

    columns: list[str]
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, days: list[DayInputs], columns: list[str]) -> PairSpec:
        raw = np.concatenate([d.pair_inputs(columns) for d in days]) if days else np.zeros((0, len(columns)), np.float32)
        mean = raw.mean(axis=0) if len(raw) else np.zeros(raw.shape[1])
        std = raw.std(axis=0, ddof=1) if len(raw) > 1 else np.ones(raw.shape[1])
        return cls(list(columns), [float(m) for m in mean], [float(s) if s > 0 else 1.0 for s in std])

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """``[n, P]`` scaled pair inputs (float32) of the raw ones."""
        if raw.shape[1] != len(self.columns):
            raise ValueError(f"pair inputs have {raw.shape[1]} columns, this model's {len(self.columns)} ({self.columns})")
        return ((raw - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)


@dataclass
class FeatureSpec:
    """What a trained model knows about its inputs: tasks, id vocabularies, feature columns, and
    the pair input's scaling (``pair``; None: the model reads no pair input)."""

    tasks: list[str]
    user: SideSpec
    item: SideSpec
    pair: PairSpec | None = None
    #: N, the events of each user's behaviour sequence the model reads (0: none)
    sequence_length: int = 0

    @classmethod
    def fit(cls, days: list[DayInputs], tasks: list[str], pair: list[str] | None = None,
            sequence_length: int = 0) -> FeatureSpec:
        """Fitted on ``days``; ``pair``: with the pair input of these columns
        (:func:`~ml_core.history.pair_columns`), ``sequence_length``: with each user's last that
        many events (either needs every day's history; the kNN pair columns, its graphs too)."""
        if not 0 <= sequence_length <= MAX_SEQUENCE:
            raise ValueError(f"sequence_length must be in 0..{MAX_SEQUENCE} (the events the history keeps), "
                             f"got {sequence_length}")
        return cls(
            tasks=list(tasks),
            user=SideSpec.fit("u", "user_id", [d.users for d in days], [d.samples["user_id"].to_numpy() for d in days]),
            item=SideSpec.fit("i", "item_id", [d.items for d in days], [d.samples["item_id"].to_numpy() for d in days]),
            pair=PairSpec.fit(days, pair) if pair else None,
            sequence_length=sequence_length,
        )

    def encode_sequences(self, user_raw: np.ndarray, history: dict[str, pl.DataFrame] | None, day: str = "") -> Sequences | None:
        """The last ``sequence_length`` window events of each user of ``user_raw`` (row j = user
        ``user_raw[j]``; a user without events is all padding), items as rows of this spec's item
        vocabulary; None when the spec reads no sequence."""
        n, width = len(user_raw), self.sequence_length
        if width == 0:
            return None
        if history is None:
            raise missing_history(day, "the behaviour sequence", "train.sequence_length = 0")
        seq = (pl.DataFrame({"user_id": np.asarray(user_raw, np.int64), "row": np.arange(n, dtype=np.int64)})
               .join(history["sequences"].filter(pl.col("pos") < width), on="user_id", how="inner"))
        items, behaviors, ages = (np.zeros((n, width), np.int64) for _ in range(3))
        r, p = seq["row"].to_numpy(), seq["pos"].to_numpy()
        items[r, p] = lookup(self.item.ids, seq["item_id"].to_numpy()) + 1  # -1 (unknown) -> 0
        behaviors[r, p] = seq["behavior"].to_numpy()
        ages[r, p] = np.clip(seq["days_ago"].to_numpy(), 0, MAX_AGE)
        return Sequences(torch.from_numpy(items), torch.from_numpy(behaviors), torch.from_numpy(ages))

    def same_as(self, other: FeatureSpec) -> bool:
        """Builds the same day context as ``other`` (:meth:`SideSpec.same_as` on both sides, the
        same pair input)."""
        return (list(self.tasks) == list(other.tasks) and self.user.same_as(other.user)
                and self.item.same_as(other.item) and self.pair == other.pair
                and self.sequence_length == other.sequence_length)

    def save(self, directory: Path) -> None:
        np.save(directory / "user_ids.npy", self.user.ids)
        np.save(directory / "item_ids.npy", self.item.ids)
        for side in (self.user, self.item):
            if side.cat_vocabs is not None:
                np.savez(directory / f"{side.prefix}_cat_vocabs.npz", *side.cat_vocabs)
        pair = None if self.pair is None else self.pair.__dict__
        (directory / "feature_spec.json").write_text(
            json.dumps({"tasks": self.tasks, "user": self.user.to_json(), "item": self.item.to_json(), "pair": pair,
                        "sequence_length": self.sequence_length}, indent=2)
        )

    @classmethod
    def load(cls, directory: Path) -> FeatureSpec:
        raw = json.loads((directory / "feature_spec.json").read_text())
        def vocabs(prefix: str) -> list[np.ndarray] | None:
            f = directory / f"{prefix}_cat_vocabs.npz"
            if not f.exists():
                return None
            with np.load(f) as z:
                return [z[f"arr_{j}"] for j in range(len(z.files))]

        user = SideSpec(ids=np.load(directory / "user_ids.npy"), cat_vocabs=vocabs(raw["user"]["prefix"]), **raw["user"])
        item = SideSpec(ids=np.load(directory / "item_ids.npy"), cat_vocabs=vocabs(raw["item"]["prefix"]), **raw["item"])
        pair = raw.get("pair")  # absent: saved before the pair input existed
        return cls(raw["tasks"], user, item, PairSpec(**pair) if pair else None, raw.get("sequence_length", 0))
