"""The deployment gate: whether a candidate's metrics may replace production's. Pure: no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ml_core.config import DeployConfig


@dataclass
class Decision:
    """The gate's verdict: ``promote`` and, when refused, every reason."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def gate(candidate: dict[str, dict], production: dict[str, dict] | None, deploy: DeployConfig) -> Decision:
    """Refuse when any task's GAUC is NaN or below ``deploy.min_gauc``, or is worse than the
    production model's GAUC *measured on the same day* by more than ``deploy.gauc_tolerance``.

    ``candidate`` / ``production``: metrics per task (``{"click": {"gauc": ...}, ...}``);
    ``production`` is ``None`` when nothing is in production.
    """
    tolerance, min_gauc = deploy.gauc_tolerance, deploy.min_gauc
    reasons = []
    for task, m in candidate.items():
        g = m.get("gauc", float("nan"))
        if math.isnan(g):
            reasons.append(f"{task}: GAUC is NaN (no user with both classes?)")
        elif g < min_gauc:
            reasons.append(f"{task}: GAUC {g:.4f} < floor {min_gauc}")
        if production is not None and task in production:
            p = production[task].get("gauc", float("nan"))
            if not math.isnan(p) and not math.isnan(g) and g < p - tolerance:
                reasons.append(f"{task}: GAUC {g:.4f} < production {p:.4f} - tolerance {tolerance}")
    return Decision(promote=not reasons, reasons=reasons)
