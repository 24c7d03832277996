"""Content versions of a source's days: what changes when a day's data arrives or changes.

:func:`ml_core.data.sources.day_versions` is the public entry point (the orchestration layer's
observable source asset uses it as the per-partition data version); this module computes it.

File sources (``taobao``, ``tmall``, ``table``)
-----------------------------------------------
One streaming scan of the file(s) for all requested days (:func:`file_day_versions`), through
the readers' own parsing (:func:`ml_core.data.readers.parse_source`), so a day's rows are exactly
the rows :func:`~ml_core.data.readers.read_file_source` returns for that day, events and
quarantine together: the non-blank rows whose partition day (``pday``) is the day, i.e. the rows
dated that day in the source timezone, plus, for ``start_date``, the quarantined rows that have
no partition day of their own. Blank lines and readable rows outside ``[start_date, end_date]``
belong to no day and count nowhere.

What is hashed, per row: the row's text as the reader sees it (``raw``: a CSV line without the
UTF-8 BOM, invalid UTF-8 bytes read as U+FFFD; for Parquet the JSON of the mapped columns),
without its file name (moving a row to another file of the source, or renaming a file, changes
nothing). Its line number is not hashed. Each row's text gets a 64-bit hash that does not depend
on the polars version (FNV-1a 64 of its UTF-8 bytes, mixed with its length and finalised with
splitmix64; a numba kernel over the Arrow buffers); a day's version combines
its row count and the sums of the row hashes (a multiset hash: **order-independent**, so
reordering rows, within a file or across files, keeps every version; a duplicated row counts
twice) with the source's layout (kind, column mapping, behaviour codes, timestamp format, timezone,
year, separator, header, a constant behaviour; with ``item_attributes.category`` the item
table's categories too: a change in how the rows are read changes the versions of the days
that have rows). Format: ``"<rows>-<20 hex digits>"``.

* A requested day with no row that is on or before the last day that has a row (the largest
  ``pday``) is an **empty day**: :data:`EMPTY_VERSION`, whatever the layout (an empty day reads
  as an empty partition whatever the layout).
* A day after that last day: ``None`` (its data has not arrived). The last day itself may still
  be incomplete: its version changes as its rows arrive. (With no ``end_date``, one row dated far
  in the future makes every day up to it an empty day; set ``end_date`` or fix the row.)
* A day outside ``[start_date, end_date]``: ``None``; so is every day of a source with no rows.

Synthetic sources
-----------------
The generator is deterministic: a day's version hashes the preset, seed, start date, the day
and the source code of the generator (``synthetic.py`` and ``synthetic_world.py``), without
generating anything. Every day in ``[start_date, end_date]`` (no end: open-ended) has one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from ml_core.config import FileSourceConfig, SyntheticSource
from ml_core.data.layouts import SourceLayout, date_range
from ml_core.data.readers import parse_source
from ml_core.mixing import GOLDEN, splitmix64

__all__ = ["EMPTY_VERSION", "file_day_versions", "row_hashes", "synthetic_day_versions"]

#: The version of an empty day (the hash of no rows).
EMPTY_VERSION = "empty-v1"
#: Bump when what is hashed or how changes (every version then changes once).
_SCHEME = "day-rows-v1"
_SYNTHETIC_CODE = ("synthetic.py", "synthetic_world.py")

_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


@njit(cache=True, nogil=True)
def _hash_rows(data: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """FNV-1a 64 of each row's bytes ``data[offsets[i]:offsets[i+1]]``, its length mixed in and
    finalised with splitmix64 (all arithmetic mod 2**64)."""
    for i in range(out.shape[0]):
        h = _FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        out[i] = splitmix64((h ^ (np.uint64(offsets[i + 1] - offsets[i]) * GOLDEN)) + GOLDEN)


def row_hashes(s: pl.Series) -> pl.Series:
    """A 64-bit hash of each string's UTF-8 bytes, the same with every polars version (null in,
    null out): FNV-1a over the Arrow buffers in a numba kernel (no Python loop over rows)."""
    arr = s.cast(pl.Utf8).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    if n:
        bufs = arr.buffers()
        offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
        _hash_rows(data, offsets, out)
    res = pl.Series(s.name, out, dtype=pl.UInt64)
    if arr.null_count:
        res = res.zip_with(s.is_not_null(), pl.Series(s.name, [None] * n, dtype=pl.UInt64))
    return res


#: The layout fields that decide how a row's text is read (named, so that a new field of
#: SourceLayout does not silently change every version).
_LAYOUT_FIELDS = ("kind", "columns", "behavior_map", "ts_format", "timezone", "integer_ids", "has_header", "names",
                  "year", "separator")


#: Layout fields added later: in the key only when set, so that versions of layouts without them
#: stay what they were.
_LAYOUT_FIELDS_IF_SET = ("behavior",)


def _layout_key(layout: SourceLayout) -> str:
    key = {f: getattr(layout, f) for f in _LAYOUT_FIELDS}
    key.update({f: getattr(layout, f) for f in _LAYOUT_FIELDS_IF_SET if getattr(layout, f)})
    return json.dumps(key, sort_keys=True, default=list)


def _item_category_key(cfg: FileSourceConfig) -> str:
    """With ``item_attributes.category`` (the events' category from the item table,
    ml_core/data/sources.py): the column and a hash of the table's (item, category) pairs, so a
    changed table changes every day's version; else empty (versions as without it)."""
    table = cfg.item_attributes
    if table is None or not table.category:
        return ""
    from ml_core.data.attributes import item_categories

    pairs = item_categories(table).sort("item_id")
    digest = hashlib.sha256(pairs.write_csv().encode()).hexdigest()[:20]
    return f"|item_category={table.category}:{digest}"


def _version(layout_key: str, rows: int, lo_sum: int, hi_sum: int) -> str:
    h = hashlib.sha256(f"{_SCHEME}|{layout_key}|{rows}|{lo_sum}|{hi_sum}".encode()).hexdigest()
    return f"{rows}-{h[:20]}"


def _in_range(day: date, start: date, end: date | None) -> bool:
    return day >= start and (end is None or day <= end)


def file_day_versions(cfg: FileSourceConfig, days: list[date]) -> dict[str, str | None]:
    """``{day: version or None}`` of a file source (module docstring), one scan for all days."""
    lf, layout, _files, start, end = parse_source(cfg, label_files=False)
    out: dict[str, str | None] = {d.isoformat(): None for d in days}
    wanted = sorted({d for d in days if _in_range(d, start, end)})
    if lf is None or not wanted:
        return out
    # rows read_file_source returns for their pday (events + quarantine); only the wanted days'
    # rows are hashed, every day's rows are counted (the last day with rows)
    kept = lf.filter(pl.col("cls").is_in(["in_range", "quarantined"]))
    text = pl.when(pl.col("pday").is_in(wanted)).then(pl.col("raw"))
    h = text.map_batches(row_hashes, return_dtype=pl.UInt64, is_elementwise=True)
    per_day = (
        kept.select("pday", h.alias("__h"))
        .group_by("pday")
        .agg(
            pl.len().alias("rows"),
            # two 32-bit halves summed in 64 bits: exact below 2**32 rows a day, no overflow
            (pl.col("__h") % (1 << 32)).sum().alias("lo"),
            (pl.col("__h") // (1 << 32)).sum().alias("hi"),
        )
        .collect(engine="streaming")
    )
    if per_day.height == 0:
        return out
    last = per_day["pday"].max()
    found = {r["pday"]: r for r in per_day.iter_rows(named=True)}
    key = _layout_key(layout) + _item_category_key(cfg)
    for d in wanted:
        r = found.get(d)
        if r is not None:
            out[d.isoformat()] = _version(key, r["rows"], r["lo"], r["hi"])
        elif d <= last:
            out[d.isoformat()] = EMPTY_VERSION
    return out


@lru_cache(maxsize=1)
def _synthetic_code_hash() -> str:
    h = hashlib.sha256()
    for name in _SYNTHETIC_CODE:
        h.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def synthetic_day_versions(cfg: SyntheticSource, days: list[date]) -> dict[str, str | None]:
    """``{day: version or None}`` of the synthetic source: a hash of what determines the day's
    events (preset, seed, start date, day, generator code); ``None`` outside the date range."""
    start, end = date_range(cfg)
    code = _synthetic_code_hash()
    out: dict[str, str | None] = {}
    for d in days:
        if not _in_range(d, start, end):
            out[d.isoformat()] = None
            continue
        key = f"synthetic-v1|{cfg.preset}|{cfg.seed}|{start.isoformat()}|{d.isoformat()}|{code}"
        out[d.isoformat()] = "synthetic-" + hashlib.sha256(key.encode()).hexdigest()[:20]
    return out
