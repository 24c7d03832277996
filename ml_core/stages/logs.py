"""Stage 1, interaction_logs: day D's validated events from the configured source, with the
quarantine of rejected rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from ml_core.config import PipelineConfig
from ml_core.data.sources import read_day
from ml_core.stages.windows import as_date
from ml_core.storage import Lake


@dataclass
class LogsResult:
    """What the stored partition holds: row, user and item counts, rows per behaviour, the
    quarantine (count and rows per reason) and the source's own read statistics."""

    rows: int
    users: int
    items: int
    behaviors: dict = field(default_factory=dict)
    quarantined: int = 0
    quarantine_reasons: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)


def run_interaction_logs(cfg: PipelineConfig, lake: Lake, day) -> LogsResult:
    """Read day ``day`` from ``cfg.source`` and write it (and its quarantine) to the lake."""
    de = read_day(cfg.source, as_date(day))
    lake.write_table("interaction_logs", day, de.events, quarantine=de.quarantine)
    reasons = de.quarantine.group_by("reason").len().sort("len", descending=True) if de.quarantine.height else None
    return LogsResult(
        rows=de.events.height,
        users=de.events["user_id"].n_unique() if de.events.height else 0,
        items=de.events["item_id"].n_unique() if de.events.height else 0,
        behaviors=dict(de.events.group_by("behavior").len().iter_rows()) if de.events.height else {},
        quarantined=de.quarantine.height,
        quarantine_reasons=dict(reasons.iter_rows()) if reasons is not None else {},
        source=de.stats,
    )
