"""Optional static attribute tables of a file source (``source.user_attributes`` /
``source.item_attributes``, :class:`ml_core.config.AttributeTable`).

:func:`read_attributes` reads one table into ``<side>_id`` plus ``u_cat_<name>`` /
``u_num_<name>`` (``i_`` for items) columns; :func:`ml_core.node_features.build_node_features` joins
it by id onto the node features (left join: only the users / items present in the window or the
profiles, a node absent from the table gets the unknown value). :func:`check_attributes` checks a
table without reading its rows (ml_core.preflight runs it when the configuration loads).

Values: ids are parsed like the events' ids (integer text as is, other text hashed with
:func:`~ml_core.data.schema.stable_id`), so they match the events of any source kind. A
categorical value that is a non-negative integral number ("6" or "6.0") keeps that code, a
negative one ("-1", the usual "unknown" of published tables) is the unknown code, other text is
hashed; an empty value is null (the unknown code -1 after the join). Numeric values are floats;
empty or unparsable ones are null (0 after the join). Duplicate ids: the first row wins.

A ``multi_hot`` column holds a list in one field (``1,6,4,8``; ``table.list_separator``): it
becomes one Float32 0/1 column ``<p>_num_<name>_<value>`` per distinct value of the table (the
:data:`MAX_MULTI_HOT` most frequent ones; values are lower-cased, other characters than
``[a-z0-9]`` become ``_``), ``<p>_num_<name>__other`` = how many of the row's values are rarer
ones (only when there are such values) and ``<p>_num_<name>__n`` = the number of values in the
list. Numeric columns, so a node absent from the table or with an empty list gets 0 everywhere.

An item table's ``category`` column can stand in for a log without a category column
(:func:`item_categories`; ml_core/data/sources.py joins it onto each day's events).

A headerless file (``table.names``) names its columns by position. :func:`load_attributes` also
reports what it could not use, with counts: rows without a readable id, duplicate ids, rows with
the wrong number of fields (their values are still read where present), numbers that do not
parse; the node_features stage puts that report in its metadata.

The tables are static side information, the same for every partition day: they must not hold
anything known only after a day (no leakage; docs/own-logs.md).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from typing import Any, Literal

import polars as pl

from ml_core.config import AttributeTable
from ml_core.data.layouts import PARQUET_SUFFIXES, delimiter_for, expand_path
from ml_core.data.parsing import line_problem, split_lines, unquote
from ml_core.data.schema import stable_id

__all__ = ["MAX_MULTI_HOT", "check_attributes", "item_categories", "load_attributes", "read_attributes"]

Side = Literal["user", "item"]

#: A ``multi_hot`` column gets a 0/1 column for at most this many of its most frequent values.
MAX_MULTI_HOT = 32


def _key(side: Side) -> str:
    return f"source.{side}_attributes"


def _files(table: AttributeTable, side: Side) -> list[str]:
    if not table.id:
        raise ValueError(f"{_key(side)}.id is empty: name the column holding the {side} id")
    if not table.columns:
        raise ValueError(f"{_key(side)}.columns is empty: map at least one column to 'categorical', 'numeric' or "
                         "'multi_hot'")
    if table.id in table.columns:
        raise ValueError(f"{_key(side)}.columns names the id column {table.id!r}")
    if len(set(table.names)) != len(table.names):
        raise ValueError(f"{_key(side)}.names {table.names} repeats a name")
    try:
        files = expand_path(table.path)
    except (ValueError, OSError) as exc:
        raise type(exc)(f"{_key(side)}.path {table.path!r}: {exc}") from exc
    return files


def _header(file: str, table: AttributeTable) -> list[str]:
    if file.lower().endswith(PARQUET_SUFFIXES):
        return list(pl.scan_parquet(file, glob=False).collect_schema())
    if table.names:
        return list(table.names)
    with open(file, "rb") as fh:
        line = fh.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    if not line.strip():
        return []
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter_for(file, table.separator)))]


def check_attributes(table: AttributeTable, side: Side) -> list[str]:
    """The table's files; ``ValueError`` / ``OSError`` naming the problem (empty id or columns, a
    path that matches no file, a file that cannot be opened, the id or a mapped column absent
    from a file's header / Parquet schema / ``names``)."""
    files = _files(table, side)
    for f in files:
        with open(f, "rb") as fh:  # readable (PermissionError otherwise)
            fh.read(1)
        header = _header(f, table)
        missing = [c for c in [table.id, *table.columns, *([table.category] if table.category else [])]
                   if c not in header]
        if missing:
            sep = delimiter_for(f, table.separator)
            where = f"{_key(side)}.names" if table.names and not f.lower().endswith(PARQUET_SUFFIXES) else \
                f"the header of {f}"
            raise ValueError(
                f"{_key(side)}: column(s) {missing} not in {where} {header} "
                f"(separator {sep!r}; set {_key(side)}.separator if the file is not {sep!r}-separated)"
            )
    return files


def _read_file(file: str, table: AttributeTable) -> tuple[pl.DataFrame, int]:
    """The id and mapped columns as stripped text (empty -> null), and how many of the file's
    non-blank rows have another number of fields than its header / ``names``."""
    cols = [table.id, *table.columns]
    if file.lower().endswith(PARQUET_SUFFIXES):
        df = pl.read_parquet(file, columns=cols)
        return df.select([pl.col(c).cast(pl.Utf8).str.strip_chars().replace("", None) for c in cols]), 0
    header = _header(file, table)
    if not header:
        return pl.DataFrame({c: [] for c in cols}, schema=dict.fromkeys(cols, pl.Utf8)), 0
    index = {c: header.index(c) for c in cols}
    lf = split_lines(file, delimiter_for(file, table.separator), index, skip_header=not table.names)
    df = lf.filter(~pl.col("blank")).with_columns(line_problem(len(header)).alias("__bad")).collect()
    text = [unquote(pl.col(f"__src_{c}").str.strip_chars()).replace("", None).alias(c) for c in cols]
    return df.select(text), int(df["__bad"].is_not_null().sum())


def _codes(s: pl.Series) -> pl.Series:
    """Non-negative integral numbers keep their value, negative ones are null (unknown), other
    text is hashed, null stays null."""
    num = s.cast(pl.Float64, strict=False)
    integral = (num.is_finite() & (num == num.round(0)) & (num < 2.0**62)).fill_null(False)
    uniq = s.filter(~integral).drop_nulls().unique()
    hashed = s.replace_strict({v: stable_id(v) for v in uniq.to_list()}, default=None, return_dtype=pl.Int64)
    code = pl.when(integral & (num >= 0)).then(num.cast(pl.Int64, strict=False)).when(~integral).then(hashed)
    return pl.select(code).to_series()


def _multi_hot(s: pl.Series, prefix: str, sep: str) -> list[pl.Series]:
    """``<prefix>_<value>`` 0/1 per frequent value, ``<prefix>__other`` (when rarer values exist)
    and ``<prefix>__n`` (list length), all Float32, 0 for an empty or null list."""
    name = pl.element().str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "_").str.strip_chars("_")
    values = s.str.split(sep).list.eval(
        pl.when(name == "").then(pl.lit("_")).otherwise(name).filter(pl.element().str.strip_chars() != "")
    ).list.unique(maintain_order=True).fill_null([])
    freq = values.explode().drop_nulls().value_counts(sort=False)
    ranked = sorted(zip(freq[freq.columns[0]].to_list(), freq["count"].to_list()), key=lambda vc: (-vc[1], vc[0]))
    kept = sorted((v for v, _ in ranked[:MAX_MULTI_HOT]), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    out = [values.list.contains(v).cast(pl.Float32).alias(f"{prefix}_{v}") for v in kept]
    n = values.list.len().cast(pl.Float32)
    if len(ranked) > MAX_MULTI_HOT:
        out.append((n - sum(o for o in out)).alias(f"{prefix}__other") if out else n.alias(f"{prefix}__other"))
    return [*out, n.alias(f"{prefix}__n")]


def load_attributes(table: AttributeTable, side: Side) -> tuple[pl.DataFrame, dict[str, Any]]:
    """:func:`read_attributes` and its report: ``rows_read`` (non-blank data rows), ``rows_kept``
    (one per id) and ``problems`` (``{what: count}``): rows without a readable id and duplicate ids
    (dropped), rows with the wrong number of fields (read where their fields are present) and
    numeric values that do not parse (unknown = 0)."""
    check_attributes(table, side)
    parts = [_read_file(f, table) for f in expand_path(table.path)]
    df = pl.concat([d for d, _ in parts], how="vertical")
    problems: dict[str, int] = {"wrong number of fields (read where present)": sum(n for _, n in parts)}
    ids = df[table.id]
    id_int = ids.cast(pl.Int64, strict=False)
    other = ids.filter(id_int.is_null()).drop_nulls().unique()
    hashed = ids.replace_strict({v: stable_id(v) for v in other.to_list()}, default=None, return_dtype=pl.Int64)
    out = [id_int.fill_null(hashed).alias(f"{side}_id")]
    prefix = side[0]
    for name, kind in table.columns.items():
        if kind == "categorical":
            out.append(_codes(df[name]).alias(f"{prefix}_cat_{name}"))
        elif kind == "numeric":
            num = df[name].cast(pl.Float32, strict=False)
            problems[f"bad numeric {name} (unknown)"] = int((num.is_null() & df[name].is_not_null()).sum())
            out.append(num.alias(f"{prefix}_num_{name}"))
        else:
            out.extend(_multi_hot(df[name], f"{prefix}_num_{name}", table.list_separator))
    res = pl.DataFrame(out)
    with_id = res.filter(pl.col(f"{side}_id").is_not_null())
    problems["missing id (dropped)"] = res.height - with_id.height
    res = with_id.unique(subset=f"{side}_id", keep="first", maintain_order=True)
    problems["duplicate id (first row kept)"] = with_id.height - res.height
    report = {"rows_read": df.height, "rows_kept": res.height, "problems": {k: n for k, n in problems.items() if n}}
    return res, report


def item_categories(table: AttributeTable) -> pl.DataFrame:
    """``item_id`` and ``category`` (Int64 codes as a ``categorical`` column's, null = unknown) of
    an item table's ``category`` column (``source.item_attributes.category``)."""
    if not table.category:
        raise ValueError("source.item_attributes.category is empty: no category column to read")
    cats = read_attributes(replace(table, columns={table.category: "categorical"}), "item")
    return cats.rename({f"i_cat_{table.category}": "category"})


def read_attributes(table: AttributeTable, side: Side) -> pl.DataFrame:
    """``<side>_id`` (Int64, unique) plus one ``u_cat_*`` (Int64) / ``u_num_*`` (Float32) column per
    mapped attribute (``i_`` for items; several per ``multi_hot`` attribute), read from the
    table's files."""
    return load_attributes(table, side)[0]
