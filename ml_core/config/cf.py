"""The ``[cf]`` section of the configuration (:mod:`ml_core.config`): the classical
collaborative-filtering scorers every evaluation and comparison scores beside the sanity rules
(:mod:`ml_core.cf`), and the deployment gate requires a candidate to beat::

    [cf]
    scorers = ["item_knn", "user_knn", "ease"]   # [] = none (then the gate asks for none)
    ease_max_dim = 5000
    ease_lambda = 500.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ml_core.typed import ConfigError

#: The classical CF scorers, in the order they are reported.
CF_SCORERS: tuple[str, ...] = ("item_knn", "user_knn", "ease")


@dataclass
class CFConfig:
    #: Which of :data:`CF_SCORERS` are scored. Each one listed is a floor of the gate, like the
    #: sanity scorers; an empty list scores none (the evaluation records ``cf = {}``).
    scorers: list[str] = field(default_factory=lambda: list(CF_SCORERS))
    #: The largest dense matrix EASE inverts, N x N with N <= this cap: the window's items, or
    #: its users when they are fewer (the same closed form in user space, exact over every
    #: item), or else the cap's number of most connected items, every other item scoring 0
    #: (ml_core/cf.py). 8 N^2 bytes float64 (200 MB at 5000, its inverse as much again) and
    #: ~N^3 flops (seconds at 5000 on 2 cores), so the cap, not the catalogue, bounds the cost.
    ease_max_dim: int = 5000
    #: EASE's L2 weight lambda on B (P = (X^T X + lambda I)^-1). 500 is Steck's (2019) value for
    #: MovieLens-20M and Netflix; docs/evaluation.md says what it gave here.
    ease_lambda: float = 500.0

    def __post_init__(self) -> None:
        bad = sorted(set(self.scorers) - set(CF_SCORERS))
        if bad:
            raise ConfigError(f"cf.scorers has unknown scorers {bad}; known: {list(CF_SCORERS)}")
        if len(set(self.scorers)) != len(self.scorers):
            raise ConfigError(f"cf.scorers = {self.scorers}: a scorer is listed twice")
        if self.ease_max_dim < 1 or not self.ease_lambda > 0:
            raise ConfigError(f"cf: ease_max_dim >= 1 and ease_lambda > 0 (got {self.ease_max_dim}, {self.ease_lambda})")
