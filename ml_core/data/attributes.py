"""Optional static attribute tables of a file source (``source.user_attributes`` /
``source.item_attributes``, :class:`ml_core.config.AttributeTable`).

:func:`read_attributes` reads one table into ``<side>_id`` plus ``u_cat_<name>`` /
``u_num_<name>`` (``i_`` for items) columns; :func:`ml_core.features.build_node_features` joins
it by id onto the node features (left join: only the users / items present in the window or the
profiles, a node absent from the table gets the unknown value). :func:`check_attributes` checks a
table without reading its rows (ml_core.checks runs it when the configuration loads).

Values: ids are parsed like the events' ids (integer text as is, other text hashed with
:func:`~ml_core.data.schema.stable_id`), so they match the events of any source kind. A
categorical value that is an integral number ("6" or "6.0") keeps that code, other text is
hashed; an empty value is null (the unknown code -1 after the join). Numeric values are floats;
empty or unparsable ones are null (0 after the join). Duplicate ids: the first row wins.

The tables are static side information, the same for every partition day: they must not hold
anything known only after a day (no leakage; see README "Point it at your own logs").
"""

from __future__ import annotations

import csv
from typing import Literal

import polars as pl

from ml_core.config import AttributeTable
from ml_core.data.layouts import PARQUET_SUFFIXES, delimiter_for, expand_path
from ml_core.data.schema import stable_id

__all__ = ["check_attributes", "read_attributes"]

Side = Literal["user", "item"]


def _key(side: Side) -> str:
    return f"source.{side}_attributes"


def _files(table: AttributeTable, side: Side) -> list[str]:
    if not table.id:
        raise ValueError(f"{_key(side)}.id is empty: name the column holding the {side} id")
    if not table.columns:
        raise ValueError(f"{_key(side)}.columns is empty: map at least one column to 'categorical' or 'numeric'")
    if table.id in table.columns:
        raise ValueError(f"{_key(side)}.columns names the id column {table.id!r}")
    try:
        files = expand_path(table.path)
    except (ValueError, OSError) as exc:
        raise type(exc)(f"{_key(side)}.path {table.path!r}: {exc}") from exc
    return files


def _header(file: str, table: AttributeTable) -> list[str]:
    if file.lower().endswith(PARQUET_SUFFIXES):
        return list(pl.scan_parquet(file, glob=False).collect_schema())
    with open(file, "rb") as fh:
        line = fh.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    if not line.strip():
        return []
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter_for(file, table.separator)))]


def check_attributes(table: AttributeTable, side: Side) -> list[str]:
    """The table's files; ``ValueError`` / ``OSError`` naming the problem (empty id or columns, a
    path that matches no file, a file that cannot be opened, the id or a mapped column absent
    from a file's header / Parquet schema)."""
    files = _files(table, side)
    for f in files:
        header = _header(f, table)
        missing = [c for c in [table.id, *table.columns] if c not in header]
        if missing:
            sep = delimiter_for(f, table.separator)
            raise ValueError(
                f"{_key(side)}: column(s) {missing} not in the header of {f} {header} "
                f"(separator {sep!r}; set {_key(side)}.separator if the file is not {sep!r}-separated)"
            )
    return files


def _read_file(file: str, table: AttributeTable) -> pl.DataFrame:
    cols = [table.id, *table.columns]
    if file.lower().endswith(PARQUET_SUFFIXES):
        df = pl.read_parquet(file, columns=cols)
    else:
        df = pl.read_csv(file, separator=delimiter_for(file, table.separator), columns=cols, infer_schema=False,
                         quote_char='"', encoding="utf8-lossy", truncate_ragged_lines=True)
    return df.select([pl.col(c).cast(pl.Utf8).str.strip_chars().replace("", None) for c in cols])


def _codes(s: pl.Series) -> pl.Series:
    """Integral numbers keep their value, other text is hashed, null stays null."""
    num = s.cast(pl.Float64, strict=False)
    integral = num.is_finite() & (num == num.round(0)) & (num >= 0) & (num < 2.0**62)
    uniq = s.filter(~integral.fill_null(False)).drop_nulls().unique()
    hashed = s.replace_strict({v: stable_id(v) for v in uniq.to_list()}, default=None, return_dtype=pl.Int64)
    return pl.select(pl.when(integral).then(num.cast(pl.Int64, strict=False)).otherwise(hashed)).to_series()


def read_attributes(table: AttributeTable, side: Side) -> pl.DataFrame:
    """``<side>_id`` (Int64, unique) plus one ``u_cat_*`` (Int64) / ``u_num_*`` (Float32) column per
    mapped attribute (``i_`` for items), read from the table's files."""
    check_attributes(table, side)
    df = pl.concat([_read_file(f, table) for f in expand_path(table.path)], how="vertical")
    ids = df[table.id]
    id_int = ids.cast(pl.Int64, strict=False)
    other = ids.filter(id_int.is_null()).drop_nulls().unique()
    hashed = ids.replace_strict({v: stable_id(v) for v in other.to_list()}, default=None, return_dtype=pl.Int64)
    out = [id_int.fill_null(hashed).alias(f"{side}_id")]
    prefix = side[0]
    for name, kind in table.columns.items():
        if kind == "categorical":
            out.append(_codes(df[name]).alias(f"{prefix}_cat_{name}"))
        else:
            out.append(df[name].cast(pl.Float32, strict=False).alias(f"{prefix}_num_{name}"))
    res = pl.DataFrame(out).filter(pl.col(f"{side}_id").is_not_null())
    return res.unique(subset=f"{side}_id", keep="first", maintain_order=True)
