"""Field parsing of file sources: polars expressions that turn source columns into the canonical
``user_id``, ``item_id``, ``behavior``, ``ts`` / ``ds`` and ``category`` columns, each with a
``__r_<field>`` column holding the reason a value was rejected (or null).

Every field is parsed with ``strict=False`` casts; a value that is missing or fails to parse
gives the row a reason. Expressions are applied in stages (one ``with_columns`` per level, see
:class:`Stages`) so every intermediate value is computed once; nesting them would make polars
re-evaluate shared parts.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from ml_core.data.layouts import MMDD, UNIX_FORMATS, SourceLayout
from ml_core.data.lines import CONTROL_CHARS, LINE_SEPARATOR, lines_holding
from ml_core.data.schema import stable_id

#: Largest |unix seconds| accepted (9999-12-31T23:59:59Z); beyond that the value is garbage.
_MAX_UNIX_S = 253_402_300_799
_REASON_VALUE_CHARS = 40  # unknown behaviour values are quoted in the reason, cut to this length

NULL_STR = pl.lit(None, dtype=pl.Utf8)


class Stages:
    """Expressions grouped by level; :meth:`apply` adds each level with one ``with_columns``."""

    def __init__(self) -> None:
        self.levels: dict[int, list[pl.Expr]] = {}

    def add(self, level: int, *exprs: pl.Expr) -> None:
        self.levels.setdefault(level, []).extend(exprs)

    def apply(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        for level in sorted(self.levels):
            lf = lf.with_columns(self.levels[level])
        return lf


def _c(name: str) -> pl.Expr:
    return pl.col(name)


def _text(st: Stages, f: str, src: str) -> str:
    """Levels 0-2: ``__{f}_t`` = the source value as stripped, unquoted text (empty -> null)."""
    s, t = f"__{f}_s", f"__{f}_t"
    st.add(0, _c(src).cast(pl.Utf8).str.strip_chars().alias(s))
    st.add(1, unquote(_c(s)).alias(t))
    st.add(2, pl.when(_c(t) == "").then(None).otherwise(_c(t)).alias(t))
    return t


def unquote(s: pl.Expr) -> pl.Expr:
    """A stripped text field without its enclosing CSV quotes (doubled quotes inside become one),
    stripped again."""
    quoted = s.str.starts_with('"') & s.str.ends_with('"') & (s.str.len_bytes() >= 2)
    inner = s.str.slice(1, s.str.len_chars() - 2).str.replace_all('""', '"', literal=True).str.strip_chars()
    return pl.when(quoted).then(inner).otherwise(s)


def _hash_strings(s: pl.Series) -> pl.Series:
    """stable_id of each non-null string (computed once per distinct value)."""
    uniq = s.drop_nulls().unique()
    if uniq.len() == 0:
        return pl.Series(s.name, [None] * s.len(), dtype=pl.Int64)
    mapping = {v: stable_id(v) for v in uniq.to_list()}
    return s.replace_strict(mapping, default=None, return_dtype=pl.Int64)


def id_field(st: Stages, f: str, src: str, dtype: pl.DataType, integer_ids: bool, optional: bool = False) -> None:
    """Defines column ``f`` (Int64) and ``__r_{f}`` (reason or null), at level <= 6."""
    if dtype.is_integer():
        st.add(5, _c(src).cast(pl.Int64, strict=False).alias(f))
        missing = _c(src).is_null()
    elif dtype.is_float():
        integral = _c(src).is_finite() & (_c(src) == _c(src).round(0))
        st.add(5, pl.when(integral).then(_c(src).cast(pl.Int64, strict=False)).alias(f))
        missing = _c(src).is_null() | _c(src).is_nan()
    else:
        t = _text(st, f, src)
        st.add(3, _c(t).cast(pl.Int64, strict=False).alias(f"__{f}_i"))
        if integer_ids:
            st.add(5, _c(f"__{f}_i").alias(f))
        else:
            non_int = pl.when(_c(f"__{f}_i").is_null()).then(_c(t))
            st.add(4, non_int.map_batches(_hash_strings, return_dtype=pl.Int64, is_elementwise=True).alias(f"__{f}_h"))
            st.add(5, pl.coalesce(_c(f"__{f}_i"), _c(f"__{f}_h")).alias(f))
        missing = _c(t).is_null()
    bad = f"bad {f}" + (" (not a non-negative integer)" if integer_ids else " (negative)")
    reason = pl.when(missing).then(None if optional else pl.lit(f"missing {f}"))
    reason = reason.when(_c(f).is_null() | (_c(f) < 0)).then(pl.lit(bad)).otherwise(NULL_STR)
    st.add(6, reason.cast(pl.Utf8).alias(f"__r_{f}"))


def behavior_field(st: Stages, src: str, dtype: pl.DataType, bmap: dict[str, str]) -> None:
    col = src
    if dtype.is_float():  # 1.0 -> "1"
        e = _c(src)
        st.add(-1, pl.when(e == e.round(0)).then(e.cast(pl.Int64, strict=False).cast(pl.Utf8))
               .otherwise(e.cast(pl.Utf8)).alias("__behavior_src"))
        col = "__behavior_src"
    t = _text(st, "behavior", col)
    # a when/then chain, not replace_strict: replace_strict makes the streaming engine
    # materialise the whole file (measured), and behaviour maps are small
    mapped: Any = pl
    for k, v in bmap.items():
        mapped = mapped.when(_c(t) == k).then(pl.lit(v))
    st.add(5, mapped.otherwise(NULL_STR).alias("behavior") if bmap else NULL_STR.alias("behavior"))
    reason = (
        pl.when(_c(t).is_null())
        .then(pl.lit("missing behavior"))
        .when(_c("behavior").is_null())
        .then(pl.format("unknown behavior '{}'", _c(t).str.slice(0, _REASON_VALUE_CHARS)))
        .otherwise(NULL_STR)
    )
    st.add(6, reason.alias("__r_behavior"))


def ts_field(st: Stages, src: str, dtype: pl.DataType, layout: SourceLayout) -> None:
    """Defines ``ts`` (Datetime(us, UTC)), ``ds`` (Date in the source timezone), ``__r_ts``."""
    tz, fmt = layout.timezone, layout.ts_format
    local = {"ambiguous": "earliest", "non_existent": "null"}
    ds_from_ts = True
    if isinstance(dtype, pl.Datetime):
        e = _c(src).dt.cast_time_unit("us")
        ts = e.dt.convert_time_zone("UTC") if dtype.time_zone else e.dt.replace_time_zone(tz, **local)
        st.add(4, ts.dt.convert_time_zone("UTC").alias("ts"))
        missing = _c(src).is_null()
    elif isinstance(dtype, pl.Date):
        ts = _c(src).cast(pl.Datetime("us")).dt.replace_time_zone(tz, **local).dt.convert_time_zone("UTC")
        st.add(4, ts.alias("ts"))
        missing = _c(src).is_null()
    elif (dtype.is_integer() or dtype.is_float()) and fmt in UNIX_FORMATS:
        st.add(3, _c(src).cast(pl.Int64, strict=False).alias("__ts_i"), _c(src).cast(pl.Float64).alias("__ts_f"))
        _unix_to_ts(st, UNIX_FORMATS[fmt])
        missing = _c(src).is_null()
    else:
        t = _text(st, "ts", src)
        missing = _c(t).is_null()
        if fmt in UNIX_FORMATS:
            st.add(3, _c(t).cast(pl.Int64, strict=False).alias("__ts_i"),
                   _c(t).cast(pl.Float64, strict=False).alias("__ts_f"))
            _unix_to_ts(st, UNIX_FORMATS[fmt])
        elif fmt == MMDD:
            ok = _c(t).str.contains(r"^\d{3,4}$")
            d = (pl.lit(f"{layout.year:04d}") + _c(t).str.zfill(4)).str.strptime(pl.Date, "%Y%m%d", strict=False)
            st.add(3, pl.when(ok).then(d).alias("__ts_d"))
            st.add(4, _c("__ts_d").cast(pl.Datetime("us")).dt.replace_time_zone(tz, **local)
                   .dt.convert_time_zone("UTC").alias("ts"))
            st.add(5, _c("__ts_d").alias("ds"))
            ds_from_ts = False
        elif "%z" in fmt or "%:z" in fmt:  # the text carries its own UTC offset
            st.add(4, _c(t).str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False).alias("ts"))
        else:
            s = _c(t)
            # polars refuses an hour without minutes ("%Y-%m-%d %H"): append ":00" to both sides.
            if re.search(r"%[HIk]", fmt) and not re.search(r"%[MRTcs]", fmt):
                s, fmt = s + ":00", fmt + ":%M"
            if re.search(r"%[HIklMSTRcsf]", fmt):
                naive = s.str.strptime(pl.Datetime("us"), fmt, strict=False)
            else:
                naive = s.str.strptime(pl.Date, fmt, strict=False).cast(pl.Datetime("us"))
            st.add(3, naive.alias("__ts_naive"))
            st.add(4, _c("__ts_naive").dt.replace_time_zone(tz, **local).dt.convert_time_zone("UTC").alias("ts"))
            st.add(5, pl.when(_c("ts").is_not_null()).then(_c("__ts_naive").dt.date()).alias("ds"))
            ds_from_ts = False
    if ds_from_ts:
        st.add(5, _c("ts").dt.convert_time_zone(tz).dt.date().alias("ds"))
    reason = (
        pl.when(missing)
        .then(pl.lit("missing timestamp"))
        .when(_c("ts").is_null())
        .then(pl.lit("bad timestamp"))
        .otherwise(NULL_STR)
    )
    st.add(6, reason.alias("__r_ts"))


def _unix_to_ts(st: Stages, per_unit_us: int) -> None:
    """Levels 4-5 from ``__ts_i`` (Int64 or null) and ``__ts_f`` (Float64): ``ts``."""
    limit = _MAX_UNIX_S * (1_000_000 // per_unit_us)
    i, f = _c("__ts_i"), _c("__ts_f")
    f_ok = f.is_finite() & (f.abs() <= limit)
    from_f = pl.when(f_ok).then((f * per_unit_us).round(0).cast(pl.Int64, strict=False))
    us = pl.when(i.is_not_null() & (i.abs() <= limit)).then(i * per_unit_us).otherwise(from_f)
    st.add(4, us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts"))


# ------------------------------------------------------------------------ delimited text lines


def split_lines(file: str, sep: str, fields: dict[str, int], skip_header: bool) -> pl.LazyFrame:
    """The lines of a delimited text file split into fields: ``source_row`` (1-based line
    number), ``raw`` (the line), ``blank``, ``__nf`` (its number of fields), ``__src_<key>`` (the
    field at index ``fields[key]``, null when the line is shorter) and what :func:`line_problem`
    reads: ``__cut`` (the line holds the scan's separator byte, so it was read cut short),
    ``__ctrl`` (it holds a control character, :data:`~ml_core.data.lines.CONTROL_CHARS`; a tab is
    allowed as the separator) and ``__badquote`` (text outside a quoted field). Lines containing
    a quote character are split quote-aware (the quotes stay in the field; :func:`unquote`
    strips them). Used by the readers and the attribute tables."""
    lines = pl.scan_csv(
        file,
        has_header=False,
        separator=LINE_SEPARATOR,  # one column = the whole line, up to a 0x1F it may hold
        quote_char=None,
        schema={"line": pl.Utf8},
        extra_columns="ignore",  # a first line holding a 0x1F (the rest of such lines: truncated)
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
        raise_if_empty=False,
        glob=False,
    ).with_row_index("source_row", offset=1)
    cut = lines_holding(file, LINE_SEPARATOR.encode())  # lines read cut short at that byte
    if skip_header:
        lines = lines.filter(pl.col("source_row") > 1)

    line = pl.col("line").str.strip_prefix("\ufeff")
    esc = re.escape(sep)
    quoted_split = (pl.lit(sep) + pl.col("raw")).str.extract_all(f'{esc}(?:"(?:[^"]|"")*"|[^{esc}]*)')
    controls = CONTROL_CHARS.replace(r"\x00-\x09", r"\x00-\x08") if sep == "\t" else CONTROL_CHARS
    lf = lines.select(
        pl.col("source_row").cast(pl.Int64),
        pl.when(pl.col("source_row").is_in(cut)).then(line.fill_null("")).otherwise(line).alias("raw"),
        pl.col("source_row").is_in(cut).alias("__cut"),
    ).with_columns(
        (~pl.col("__cut") & (pl.col("raw").is_null() | (pl.col("raw").str.strip_chars() == ""))).alias("blank"),
        pl.col("raw").str.contains('"', literal=True).alias("__q"),
        pl.col("raw").str.contains(controls).fill_null(False).alias("__ctrl"),
    ).with_columns(
        # lines with a quote character use the quote-aware regex split (each field keeps its
        # leading separator, stripped below); the others a plain split
        pl.when(pl.col("__q")).then(quoted_split).otherwise(pl.col("raw").str.split(sep)).alias("__fields"),
    )
    sel = []
    for key, i in fields.items():
        f = pl.col("__fields").list.get(i, null_on_oob=True)
        sel.append(pl.when(pl.col("__q")).then(f.str.strip_prefix(sep)).otherwise(f).alias(f"__src_{key}"))
    # the quote-aware split's fields, each with its leading separator, cover the whole line
    # exactly when no text sits outside a quoted field (`"1"2` lost its 2 before)
    joined = pl.col("__fields").list.eval(pl.element().str.len_bytes()).list.sum()
    bad_quote = pl.col("__q") & (joined != pl.col("raw").str.len_bytes() + 1)
    return lf.with_columns(*sel, pl.col("__fields").list.len().alias("__nf"),
                           bad_quote.fill_null(False).alias("__badquote")).drop("__fields", "__q")


def line_problem(n_expected: int) -> pl.Expr:
    """Why a line of :func:`split_lines` is quarantined before its fields are read (a control
    character that ends or corrupts a field, malformed quoting, another number of fields than
    ``n_expected``), or null."""
    return (
        pl.when(pl.col("__cut") | pl.col("__ctrl"))
        .then(pl.lit("control character in the line (U+0000-U+001F other than the separator, or U+007F): "
                     "it ends or corrupts a field"))
        .when(pl.col("__badquote"))
        .then(pl.lit("malformed quoting: text outside a quoted field"))
        .when(pl.col("__nf") != n_expected)
        .then(pl.format("wrong number of fields (got {}, expected {})", pl.col("__nf"), pl.lit(n_expected)))
        .otherwise(NULL_STR)
    )
