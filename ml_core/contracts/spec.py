"""The sizes a model is built from, derived from the fitted FeatureSpec (saved with the model)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class SideShape:
    n_ids: int
    cat_sizes: list[int]
    n_nums: int
    cat_names: list[str] = field(default_factory=list)  # FeatureSpec column names of cat_sizes (may be empty)
    #: ``"user"`` or ``"item"``: whose vocabularies the id and categorical embedding rows index
    #: (set by :class:`ModelSpec`; a warm start maps rows by it, :mod:`ml_core.train.warm`)
    side: str = ""


@dataclass
class ModelSpec:
    """Sizes a model needs, derived from the fitted FeatureSpec (saved with the model)."""

    tasks: list[str]
    user: SideShape
    item: SideShape
    dim: int = 64
    fanouts: list[int] = field(default_factory=lambda: [10, 5])
    #: P, the pair input's size (``FeatureSpec.pair``; 0 = the model reads no pair input)
    n_pair: int = 0
    #: N, the behaviour sequence's length (``FeatureSpec.sequence_length``; 0 = no sequence input)
    seq_len: int = 0

    def __post_init__(self) -> None:
        # a side shape built without its side (tests, bundles saved before it existed) gets it here
        for name in ("user", "item"):
            if getattr(self, name).side != name:
                setattr(self, name, replace(getattr(self, name), side=name))

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @classmethod
    def from_feature_spec(cls, fs, dim: int, fanouts: list[int]) -> ModelSpec:
        side = lambda s: SideShape(s.n_ids, list(s.cat_sizes), len(s.nums), list(s.cats))
        return cls(list(fs.tasks), side(fs.user), side(fs.item), dim, list(fanouts),
                   len(fs.pair.columns) if fs.pair is not None else 0, fs.sequence_length)
