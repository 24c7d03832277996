"""The ``[source]`` section of the configuration (:mod:`ml_core.config`): a tagged union on
``source.kind``, one dataclass per kind holding the common fields plus only its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ml_core.typed import ConfigError, build

#: ``source.timezone`` default. ``taobao`` / ``tmall`` read it as "use the preset's zone".
DEFAULT_TIMEZONE = "UTC"


@dataclass
class SourceBase:
    """Fields every source has (see README "Point it at your own logs").

    ``source.kind`` picks the dataclass of the ``[source]`` section: :class:`SyntheticSource`,
    :class:`TaobaoSource`, :class:`TmallSource` or :class:`TableSource`. Each holds these common
    fields plus only its own; a field of another kind is a configuration error.
    """

    kind: str = "synthetic"
    #: First partition day (the DailyPartitionsDefinition start). Synthetic day 0.
    start_date: str = "2026-01-01"
    #: Last day with data, inclusive (file sources); empty = open-ended.
    end_date: str = ""
    #: Timezone in which calendar days (partitions) are cut. Taobao/Tmall: left at ``"UTC"``,
    #: the preset's Asia/Shanghai is used (set e.g. ``"Etc/UTC"`` to force UTC).
    timezone: str = DEFAULT_TIMEZONE


@dataclass
class SyntheticSource(SourceBase):
    """The embedded synthetic traffic (ml_core/data/synthetic.py)."""

    kind: Literal["synthetic"] = "synthetic"
    #: Size preset (ml_core.data.synthetic_spec.PRESETS) and seed.
    preset: Literal["small", "medium", "large"] = "small"
    seed: int = 7


@dataclass
class TaobaoSource(SourceBase):
    """Taobao UserBehavior.csv (no header; unix seconds; days cut in Asia/Shanghai)."""

    kind: Literal["taobao"] = "taobao"
    #: File, glob or directory.
    path: str = ""


@dataclass
class TmallSource(SourceBase):
    """Tmall IJCAI-15 user_log_format1.csv (time_stamp is MMDD without a year)."""

    kind: Literal["tmall"] = "tmall"
    #: File, glob or directory.
    path: str = ""
    #: The year to put in front of the MMDD time stamps.
    year: int = 2014


@dataclass
class TableSource(SourceBase):
    """Any CSV/Parquet table, described by a column mapping."""

    kind: Literal["table"] = "table"
    #: File, glob or directory.
    path: str = ""
    #: Canonical column -> source column, e.g. {user_id = "uid", ...}; user_id, item_id,
    #: behavior and ts are required, category is optional.
    columns: dict[str, str] = field(default_factory=dict)
    #: Source behaviour value -> canonical behaviour (view/cart/fav/buy); empty = identity.
    behavior_map: dict[str, str] = field(default_factory=dict)
    #: ``unix_s``, ``unix_ms``, ``mmdd`` or a strptime format such as "%Y-%m-%d %H".
    ts_format: str = "unix_s"
    #: With ``ts_format = "mmdd"``: the year to put in front.
    year: int = 2014


#: ``source.kind`` -> the dataclass of the ``[source]`` section.
SOURCE_KINDS: dict[str, type[SourceBase]] = {
    "synthetic": SyntheticSource,
    "taobao": TaobaoSource,
    "tmall": TmallSource,
    "table": TableSource,
}

#: The ``[source]`` section: one of the per-kind dataclasses (a tagged union on ``kind``).
SourceConfig = SyntheticSource | TaobaoSource | TmallSource | TableSource
#: The sources read from files (ml_core/data/readers.py).
FileSourceConfig = TaobaoSource | TmallSource | TableSource


def build_source(values: Mapping[str, Any] | None, where: str = "source") -> SourceConfig:
    """The source dataclass selected by ``values["kind"]`` (default ``synthetic``), keys and types
    checked; a field that belongs to another kind is a :class:`ConfigError` naming it."""
    values = dict(values or {})
    kind = values.get("kind", "synthetic")
    cls = SOURCE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"{where}.kind = {kind!r}: expected one of {list(SOURCE_KINDS)}")
    own = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(values) - own):
        owners = [k for k, c in SOURCE_KINDS.items() if key in {f.name for f in dataclasses.fields(c)}]
        if owners:
            raise ConfigError(
                f"{where}.{key} = {values[key]!r} is not a field of a {kind!r} source (it belongs to "
                f"kind {' / '.join(repr(o) for o in owners)}); {kind!r} sources take: {sorted(own)}"
            )
    return build(cls, values, where)


def source_config(**values: Any) -> SourceConfig:
    """Keyword form of :func:`build_source`: ``source_config(kind="taobao", path=...)``."""
    return build_source(values)
