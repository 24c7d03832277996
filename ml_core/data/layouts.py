"""Source layouts: how the columns of a file source map to the canonical event schema.

A :class:`SourceLayout` holds everything needed to parse one source kind: the ``taobao`` and
``tmall`` presets (:data:`TAOBAO`, :data:`TMALL`), or one built from a ``table`` source's
``columns`` / ``behavior_map`` / ``ts_format``. :func:`layout_for` builds and validates it;
:func:`date_range` and :func:`expand_path` resolve the source's days and files.
"""

from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ml_core.config import (
    DEFAULT_TIMEZONE,
    SourceConfig,
    TableSource,
    TaobaoSource,
    TmallSource,
)
from ml_core.data.schema import BEHAVIORS

#: Canonical fields a source must map (``category`` is optional).
REQUIRED_FIELDS: tuple[str, ...] = ("user_id", "item_id", "behavior", "ts")
OPTIONAL_FIELDS: tuple[str, ...] = ("category",)

#: Special ``ts_format`` values; anything else must be a strptime format (contain ``%``).
UNIX_FORMATS = {"unix_s": 1_000_000, "unix_ms": 1_000}
MMDD = "mmdd"  # Tmall: month+day without year; the year comes from ``source.year``

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


@dataclass(frozen=True)
class SourceLayout:
    """Everything needed to parse one source kind (a preset, or built from a ``table`` config)."""

    kind: str
    #: canonical field -> source column name
    columns: dict[str, str]
    #: source behaviour value (as text) -> canonical behaviour
    behavior_map: dict[str, str]
    #: ``unix_s``, ``unix_ms``, ``mmdd`` or a strptime format
    ts_format: str
    timezone: str
    #: True: ids must be non-negative integers (else quarantine). False: non-integer ids are
    #: hashed with :func:`stable_id`.
    integer_ids: bool
    #: CSV files carry a header line (True) or have exactly the fields in ``names`` (False).
    has_header: bool = True
    names: tuple[str, ...] | None = None
    year: int = 2014
    #: Field separator of delimited files; empty = by extension (:func:`delimiter_for`).
    separator: str = ""
    #: The canonical behaviour of every row when the source has no behaviour column (a
    #: purchase-only log); empty = read from the ``behavior`` column.
    behavior: str = ""


#: Taobao UserBehavior.csv: no header, ``user_id,item_id,category_id,behavior_type,timestamp``,
#: unix seconds, days cut in Asia/Shanghai.
TAOBAO = SourceLayout(
    kind="taobao",
    columns={
        "user_id": "user_id",
        "item_id": "item_id",
        "category": "category_id",
        "behavior": "behavior_type",
        "ts": "timestamp",
    },
    behavior_map={"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"},
    ts_format="unix_s",
    timezone="Asia/Shanghai",
    integer_ids=True,
    has_header=False,
    names=("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
)

#: Tmall IJCAI-15 user_log_format1.csv: header
#: ``user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type``; time_stamp is MMDD
#: (year from ``source.year``); action 0 click, 1 cart, 2 buy, 3 fav.
TMALL = SourceLayout(
    kind="tmall",
    columns={
        "user_id": "user_id",
        "item_id": "item_id",
        "category": "cat_id",
        "behavior": "action_type",
        "ts": "time_stamp",
    },
    behavior_map={"0": "view", "1": "cart", "2": "buy", "3": "fav"},
    ts_format=MMDD,
    timezone="Asia/Shanghai",
    integer_ids=True,
    has_header=True,
)

PRESETS: dict[str, SourceLayout] = {"taobao": TAOBAO, "tmall": TMALL}


def layout_for(cfg: SourceConfig) -> SourceLayout:
    """The validated :class:`SourceLayout` of ``cfg``; raises ``ValueError`` naming what is wrong.

    ``taobao``/``tmall`` use their preset (timezone: the preset's while ``source.timezone`` is
    left at its default ``"UTC"``; tmall's year from ``source.year``). ``table`` takes everything
    from the config (an empty ``behavior_map`` maps the canonical behaviour names to themselves).
    """
    kind = cfg.kind
    if isinstance(cfg, (TaobaoSource, TmallSource)):
        preset = PRESETS[kind]
        tz = preset.timezone if cfg.timezone == DEFAULT_TIMEZONE else cfg.timezone
        layout = replace(preset, timezone=tz, year=cfg.year if isinstance(cfg, TmallSource) else preset.year,
                         separator=cfg.separator)
    elif isinstance(cfg, TableSource):
        bmap = {str(k): v for k, v in cfg.behavior_map.items()} or {b: b for b in BEHAVIORS}
        layout = SourceLayout(
            kind="table",
            columns=dict(cfg.columns),
            behavior_map=bmap,
            ts_format=cfg.ts_format,
            timezone=cfg.timezone,
            integer_ids=False,
            has_header=not cfg.names,
            names=tuple(cfg.names) or None,
            year=cfg.year,
            separator=cfg.separator,
            behavior=cfg.behavior,
        )
    elif kind == "synthetic":
        raise ValueError("source.kind 'synthetic' has no file to read; use the synthetic generator")
    else:
        raise ValueError(f"unknown source.kind {kind!r}; file readers know 'taobao', 'tmall', 'table'")

    if layout.behavior:
        if layout.behavior not in BEHAVIORS:
            raise ValueError(f"source.behavior {layout.behavior!r} is not a known behaviour; known: {list(BEHAVIORS)}")
        if "behavior" in layout.columns:
            raise ValueError("source.behavior (one behaviour for every row) and source.columns.behavior (a "
                             "behaviour column) are both set; keep one")
    required = [f for f in REQUIRED_FIELDS if not (f == "behavior" and layout.behavior)]
    missing = [f for f in required if not layout.columns.get(f)]
    if missing:
        raise ValueError(
            f"source.columns is missing the mapping for {missing} (source kind {kind!r}); "
            f"required: {required}, optional: {list(OPTIONAL_FIELDS)}, got {layout.columns}"
            + (" (a log without a behaviour column: set source.behavior, e.g. 'buy')" if "behavior" in missing else "")
        )
    if layout.names is not None and len(set(layout.names)) != len(layout.names):
        raise ValueError(f"source.names {list(layout.names)} repeats a name")
    unknown = sorted(set(layout.columns) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(
            f"source.columns has unknown canonical fields {unknown}; "
            f"known: {list(REQUIRED_FIELDS + OPTIONAL_FIELDS)}"
        )
    bad = sorted({v for v in layout.behavior_map.values() if v not in BEHAVIORS})
    if bad:
        raise ValueError(f"source.behavior_map maps to unknown behaviours {bad}; known: {list(BEHAVIORS)}")
    fmt = layout.ts_format
    if fmt not in UNIX_FORMATS and fmt != MMDD and "%" not in fmt:
        raise ValueError(
            f"source.ts_format {fmt!r} must be 'unix_s', 'unix_ms', 'mmdd' or a strptime format like '%Y-%m-%d %H'"
        )
    try:
        ZoneInfo(layout.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"source.timezone {layout.timezone!r} is not a known IANA timezone") from exc
    return layout


def delimiter_for(file: str, separator: str = "") -> str:
    """The field separator of a delimited file: ``separator`` when given (whatever the
    extension), else tab for ``.tsv`` / ``.tab`` and comma for anything else."""
    if separator:
        return separator
    return "\t" if file.lower().endswith((".tsv", ".tab")) else ","


def date_range(cfg: SourceConfig) -> tuple[date, date | None]:
    """``(start_date, end_date or None)`` of the source, checked."""
    try:
        start = date.fromisoformat(cfg.start_date)
        end = date.fromisoformat(cfg.end_date) if cfg.end_date else None
    except ValueError as exc:
        raise ValueError(f"source.start_date/end_date must be YYYY-MM-DD: {exc}") from exc
    if end is not None and end < start:
        raise ValueError(f"source.end_date {end} is before source.start_date {start}")
    return start, end


def expand_path(path: str) -> list[str]:
    """The files of ``source.path`` (a file, a directory or a glob), sorted; all CSV or all Parquet."""
    if not path:
        raise ValueError("source.path is empty: file sources need a file or glob")
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
    elif p.is_file():
        files = [str(p)]
    elif _glob.has_magic(path):
        files = sorted(f for f in _glob.glob(str(p)) if os.path.isfile(f))
    else:
        files = []
    if not files:
        raise FileNotFoundError(f"source.path {path!r}: no such file (or the glob/directory matched no files)")
    kinds = {f.lower().endswith(PARQUET_SUFFIXES) for f in files}
    if len(kinds) > 1:
        raise ValueError(f"source.path {path!r} matches both Parquet and CSV files; point it at one format")
    return files

