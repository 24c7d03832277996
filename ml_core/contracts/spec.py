"""The sizes a model is built from, derived from the fitted FeatureSpec (saved with the model)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SideShape:
    n_ids: int
    cat_sizes: list[int]
    n_nums: int
    cat_names: list[str] = field(default_factory=list)  # FeatureSpec column names of cat_sizes (may be empty)


@dataclass
class ModelSpec:
    """Sizes a model needs, derived from the fitted FeatureSpec (saved with the model)."""

    tasks: list[str]
    user: SideShape
    item: SideShape
    dim: int = 64
    fanouts: list[int] = field(default_factory=lambda: [10, 5])

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @classmethod
    def from_feature_spec(cls, fs, dim: int, fanouts: list[int]) -> ModelSpec:
        side = lambda s: SideShape(s.n_ids, list(s.cat_sizes), len(s.nums), list(s.cats))
        return cls(list(fs.tasks), side(fs.user), side(fs.item), dim, list(fanouts))
