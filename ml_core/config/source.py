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
    """Fields every source has (docs/own-logs.md).

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
class AttributeTable:
    """An optional side table of node attributes (``source.user_attributes`` /
    ``source.item_attributes``): one row per user or item id, joined by id onto the node features
    (ml_core/data/attributes.py). Example::

        user_attributes = { path = "user_info.csv", id = "user_id",
                            columns = { age_range = "categorical", gender = "categorical" } }

    A ``categorical`` column becomes ``u_cat_<name>`` / ``i_cat_<name>`` (integer codes the
    models embed: non-negative integral values as they are, negative ones such as ``-1`` = the
    unknown code, other text hashed), a ``numeric`` one ``u_num_<name>`` / ``i_num_<name>``
    (float). A ``multi_hot`` column holds a list of values in one field (``1,6,4`` split on
    ``list_separator``): it becomes one 0/1 column ``u_num_<name>_<value>`` per distinct value
    (the :data:`ml_core.data.attributes.MAX_MULTI_HOT` most frequent; rarer values are counted
    in ``u_num_<name>__other``) and ``u_num_<name>__n``, the number of values in the list. Nodes
    absent from the table, or with an empty value, get the unknown value (code -1 -> the unknown
    bucket; numeric and multi-hot 0). Duplicate ids: the first row wins.

    A headerless file names its columns by position in ``names`` (``id`` and ``columns`` use
    those names), e.g. ``names = ["user_id", "gender", "age", "stage"]``.

    No leakage: the table is static side information, the same for every day; it must not hold
    anything known only after a partition day (later purchases, counts over the whole log...).
    """

    #: One CSV/delimited or Parquet file (or a glob / directory of them).
    path: str = ""
    #: The column holding the user / item id (same ids as the events: integer text as is,
    #: other text hashed like a ``table`` source's ids).
    id: str = ""
    #: Attribute column -> ``"categorical"``, ``"numeric"`` or ``"multi_hot"``.
    columns: dict[str, Literal["categorical", "numeric", "multi_hot"]] = field(default_factory=dict)
    #: Field separator of a delimited file; empty = by extension (tab for .tsv/.tab, else comma).
    separator: str = ""
    #: The column names of a headerless delimited file, in order; empty = the first line is the
    #: header.
    names: list[str] = field(default_factory=list)
    #: Separator of the values inside a ``multi_hot`` field, one character.
    list_separator: str = ","
    #: ``item_attributes`` only: the column holding the item's category, for a log without a
    #: category column: it becomes the events' ``category``, used like a log's own (the item
    #: features' ``category``, the users' category counts; codes as a ``categorical`` column).
    #: Empty = none.
    category: str = ""


@dataclass
class FileSource(SourceBase):
    """Fields every file source (``taobao``, ``tmall``, ``table``) has."""

    #: File, glob or directory.
    path: str = ""
    #: Field separator of delimited text files, one character (e.g. "\t"); empty = by the
    #: file's extension (tab for .tsv/.tab, comma otherwise). An explicit value wins whatever
    #: the extension (a tab-separated ``.inter`` or ``.dat`` file needs ``separator = "\t"``).
    separator: str = ""
    #: Optional static user / item attribute tables joined onto the node features.
    user_attributes: AttributeTable | None = None
    item_attributes: AttributeTable | None = None


@dataclass
class TaobaoSource(FileSource):
    """Taobao UserBehavior.csv (no header; unix seconds; days cut in Asia/Shanghai)."""

    kind: Literal["taobao"] = "taobao"


@dataclass
class TmallSource(FileSource):
    """Tmall IJCAI-15 user_log_format1.csv (time_stamp is MMDD without a year)."""

    kind: Literal["tmall"] = "tmall"
    #: The year to put in front of the MMDD time stamps.
    year: int = 2014


@dataclass
class TableSource(FileSource):
    """Any CSV/Parquet table, described by a column mapping."""

    kind: Literal["table"] = "table"
    #: Canonical column -> source column, e.g. {user_id = "uid", ...}; user_id, item_id,
    #: behavior and ts are required (behavior unless ``behavior`` is set), category is optional.
    columns: dict[str, str] = field(default_factory=dict)
    #: The column names of a headerless delimited file, in order (``columns`` maps onto them);
    #: empty = the first line is the header.
    names: list[str] = field(default_factory=list)
    #: Source behaviour value -> canonical behaviour (view/cart/fav/buy); empty = identity.
    #: Integer codes are matched as text: ``{ "1" = "view", "4" = "buy" }``.
    behavior_map: dict[str, str] = field(default_factory=dict)
    #: The canonical behaviour of every row of a log without a behaviour column (a purchase-only
    #: transaction log: ``behavior = "buy"``); ``columns`` then maps no ``behavior``.
    behavior: str = ""
    #: ``unix_s``, ``unix_ms``, ``mmdd`` or a strptime format such as "%Y-%m-%d %H" (a date
    #: without a time, e.g. "%Y%m%d" for 20190616, is midnight of that day in ``timezone``).
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
    cfg = build(cls, values, where)
    if isinstance(cfg, FileSource):
        _check_separators(cfg, where)
    return cfg


def _check_separators(cfg: FileSource, where: str) -> None:
    seps = {f"{where}.separator": cfg.separator}
    for side in ("user_attributes", "item_attributes"):
        table = getattr(cfg, side)
        if table is not None:
            seps[f"{where}.{side}.separator"] = table.separator
            if len(table.list_separator) != 1:
                raise ConfigError(f"{where}.{side}.list_separator = {table.list_separator!r}: expected one character")
            if side == "user_attributes" and table.category:
                raise ConfigError(f"{where}.user_attributes.category = {table.category!r}: only an item table gives "
                                  "the items' category (source.item_attributes.category)")
    for key, sep in seps.items():
        if len(sep) > 1 or sep in ("\n", "\r", '"'):
            raise ConfigError(f"{key} = {sep!r}: expected one character (e.g. ',' or '\\t'), or empty for "
                              "'by the file extension'")


def source_config(**values: Any) -> SourceConfig:
    """Keyword form of :func:`build_source`: ``source_config(kind="taobao", path=...)``."""
    return build_source(values)
