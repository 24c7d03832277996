"""Stage 3, node_features: user and item feature tables of day D (profile columns when the
source has profiles, a file source's optional user/item attribute tables joined by id, plus
behavioural aggregates over the logs of days D-W .. D-1), and the users' history over the same
days (:mod:`ml_core.history`: per pair and per user-category counts and recency, each user's
last events), the tables the models' pair and sequence inputs are computed from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml_core.catalog import NODE_FEATURES
from ml_core.config import PipelineConfig
from ml_core.data.sources import attributes, profiles
from ml_core.history import build_history
from ml_core.node_features import build_node_features
from ml_core.stages.inputs import scan_logs
from ml_core.storage import Lake


@dataclass
class FeaturesResult:
    """The window the aggregates cover and the two tables' sizes and columns."""

    window_days: list[str]
    users: int
    items: int
    user_columns: list[str]
    item_columns: list[str]
    #: Per attribute table read (``user`` / ``item``): rows read and kept, and what could not be
    #: used with counts (ml_core/data/attributes.py); empty without attribute tables.
    attribute_tables: dict[str, Any]


def run_node_features(cfg: PipelineConfig, lake: Lake, day, log_days: list[str]) -> FeaturesResult:
    """Build day ``day``'s feature tables from the logs of ``log_days`` and write them."""
    up, ip = profiles(cfg.source)
    reports: dict[str, Any] = {}
    ua, ia = attributes(cfg.source, reports)  # static side tables, joined by id (no new nodes)
    window = scan_logs(lake, log_days).collect()  # read once: the aggregates and the history
    users, items = build_node_features(window, up, ip, ua, ia)
    history = build_history(window, day)  # the pair input and behaviour sequences (ml_core/history.py)
    lake.write_table(NODE_FEATURES, day, users, items=items, **history)
    return FeaturesResult(window_days=log_days, users=users.height, items=items.height,
                          user_columns=users.columns, item_columns=items.columns, attribute_tables=reports)
