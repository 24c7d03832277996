"""Compressed sparse row adjacency and the two graph kinds of the flow.

A :class:`CSR` stores row ``r``'s neighbours in ``indices[indptr[r]:indptr[r+1]]`` with their
``weights``. Files are one ``.npy`` per array (memory-mappable) plus ``meta.json``; they are
written by :mod:`ml_core.storage` into a temp directory that is renamed into place.

Node identity: ``user_ids`` / ``item_ids`` / ``node_ids`` are sorted raw int64 ids; the row of id
``x`` is ``searchsorted(ids, x)`` (:func:`lookup`, -1 for an absent id). Ids are stable across days (they are the raw ids).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit, prange


@dataclass
class CSR:
    """Row-compressed sparse matrix with ``n_rows`` rows and ``n_cols`` columns.

    Args:
        indptr (np.ndarray): int64 ``[n_rows + 1]`` row offsets.
        indices (np.ndarray): int64 ``[nnz]`` column of each entry, sorted within a row unless
            the producer says otherwise (similarity graphs sort by descending weight).
        weights (np.ndarray): float32 ``[nnz]`` value of each entry.
        n_cols (int): number of columns.
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_of_entries(self) -> np.ndarray:
        """The row index of every stored entry, int64 ``[nnz]``."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.degrees())

    def entries_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(owner, pos)`` of the stored entries of ``rows`` (repeats allowed): each one's index in ``rows`` and in ``indices``."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.indptr)[rows]
        deg = np.asarray(self.indptr)[rows + 1] - starts
        owner = np.repeat(np.arange(len(rows), dtype=np.int64), deg)
        first = np.cumsum(deg) - deg  # where each row's entries start in the flattened output
        return owner, np.arange(len(owner), dtype=np.int64) - first[owner] + starts[owner]

    @classmethod
    def from_coo(
        cls,
        rows: np.ndarray,
        cols: np.ndarray,
        weights: np.ndarray | None,
        n_rows: int,
        n_cols: int,
        sum_duplicates: bool = True,
    ) -> CSR:
        """Build from coordinates; duplicate ``(row, col)`` pairs are summed."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows or cols.min() < 0 or cols.max() >= n_cols):
            raise ValueError(f"COO entries out of range for a {n_rows}x{n_cols} matrix")
        from ml_core.sorting import row_col_order  # numba: loaded when a matrix is built

        order = row_col_order(rows, cols, n_rows, n_cols)  # = np.lexsort((cols, rows)), in linear time
        rows, cols, w = rows[order], cols[order], w[order]
        if sum_duplicates and len(rows):
            key_change = np.empty(len(rows), dtype=bool)
            key_change[0] = True
            key_change[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
            starts = np.flatnonzero(key_change)
            w = np.add.reduceat(w, starts).astype(np.float32)
            rows, cols = rows[starts], cols[starts]
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return cls(indptr, cols, w, n_cols)

    def transpose(self) -> CSR:
        return CSR.from_coo(self.indices, self.row_of_entries(), self.weights, self.n_cols, self.n_rows)

    def to_scipy(self):
        import scipy.sparse as sp

        return sp.csr_matrix((self.weights, self.indices, self.indptr), shape=(self.n_rows, self.n_cols))

    @classmethod
    def from_scipy(cls, m) -> CSR:
        m = m.tocsr()
        m.sort_indices()
        return cls(m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data.astype(np.float32), m.shape[1])

    def equals(self, other: CSR, atol: float = 1e-6) -> bool:
        return (
            self.n_cols == other.n_cols
            and np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
            and np.allclose(self.weights, other.weights, atol=atol)
        )

    # -- files ---------------------------------------------------------------------------
    def save(self, directory: Path, name: str) -> None:
        for part in ("indptr", "indices", "weights"):
            np.save(directory / f"{name}.{part}.npy", getattr(self, part))

    @classmethod
    def load(cls, directory: Path, name: str, n_cols: int, mmap: bool = True) -> CSR:
        mode = "r" if mmap else None
        arrays = [np.load(directory / f"{name}.{p}.npy", mmap_mode=mode) for p in ("indptr", "indices", "weights")]
        return cls(*arrays, n_cols=n_cols)


def _write_meta(directory: Path, meta: dict) -> None:
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def _read_meta(directory: Path) -> dict:
    return json.loads((directory / "meta.json").read_text())


@dataclass
class BipartiteGraph:
    """User-item graph of one day's window.

    Args:
        user_ids (np.ndarray): sorted int64 raw user ids, row order of ``ui``.
        item_ids (np.ndarray): sorted int64 raw item ids, row order of ``iu``.
        ui (CSR): users x items, weight = sum of behaviour weights of the pair's events.
        counts (dict[str, np.ndarray]): per behaviour, float32 ``[nnz]`` event counts aligned
            with ``ui.indices`` (task-specific graphs, e.g. MGOE's, read these).
        days (list[str]): the days of logs that went in.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    ui: CSR
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    days: list[str] = field(default_factory=list)
    _iu: CSR | None = field(default=None, repr=False)
    _rows_sorted: bool = field(default=False, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def iu(self) -> CSR:
        """Items x users (the transpose), computed once."""
        if self._iu is None:
            self._iu = self.ui.transpose()
        return self._iu

    def check_rows_sorted(self) -> None:
        """ValueError unless the columns of each row of ``ui`` are ascending (binary searches need it; checked once)."""
        if not self._rows_sorted:
            ind, first = np.asarray(self.ui.indices), np.asarray(self.ui.indptr)[1:-1]
            rising = np.diff(ind) > 0
            rising[first[(first > 0) & (first < len(ind))] - 1] = True  # a new row may start lower
            if not rising.all():
                raise ValueError("pair searches need the columns of each row of ui sorted ascending")
            self._rows_sorted = True

    def pair_weights(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """w(u, i) of each (user row, item row) pair (rows >= 0), 0.0 without an edge; float64; a binary search per pair."""
        self.check_rows_sorted()
        args = (np.asarray(self.ui.indptr), np.asarray(self.ui.indices), np.asarray(user_rows, np.int64),
                np.asarray(item_rows, np.int64))
        if len(user_rows) >= _PARALLEL_MIN_PAIRS:
            return _pair_weights(*args[:2], np.asarray(self.ui.weights), *args[2:])
        pos = entry_positions(*args)
        out = np.zeros(len(pos), np.float64)
        out[pos >= 0] = np.asarray(self.ui.weights)[pos[pos >= 0]]
        return out

    def user_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Row of each raw user id, -1 where the user is not in this graph."""
        return lookup(self.user_ids, raw_ids)

    def item_index(self, raw_ids: np.ndarray) -> np.ndarray:
        return lookup(self.item_ids, raw_ids)

    def combined(self) -> CSR:
        """Symmetric adjacency over ``[users | items]`` (item j is node ``n_users + j``).

        The bipartite channel's sampler and message passing run on this homogeneous view.
        """
        r = self.ui.row_of_entries()
        c = self.ui.indices + self.n_users
        n = self.n_users + self.n_items
        rows = np.concatenate([r, c])
        cols = np.concatenate([c, r])
        w = np.concatenate([self.ui.weights, self.ui.weights])
        return CSR.from_coo(rows, cols, w, n, n, sum_duplicates=False)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "user_ids.npy", self.user_ids)
        np.save(directory / "item_ids.npy", self.item_ids)
        self.ui.save(directory, "ui")
        for b, arr in self.counts.items():
            np.save(directory / f"count_{b}.npy", arr)
        _write_meta(
            directory,
            {"kind": "bipartite", "n_users": self.n_users, "n_items": self.n_items, "nnz": self.ui.nnz,
             "behaviors": sorted(self.counts), "days": self.days},
        )

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> BipartiteGraph:
        meta = _read_meta(directory)
        mode = "r" if mmap else None
        counts = {b: np.load(directory / f"count_{b}.npy", mmap_mode=mode) for b in meta["behaviors"]}
        return cls(
            user_ids=np.load(directory / "user_ids.npy", mmap_mode=mode),
            item_ids=np.load(directory / "item_ids.npy", mmap_mode=mode),
            ui=CSR.load(directory, "ui", n_cols=meta["n_items"], mmap=mmap),
            counts=counts,
            days=meta["days"],
        )


@dataclass
class SimilarityGraph:
    """Top-k similarity graph over one node type (users or items).

    Args:
        node_ids (np.ndarray): sorted int64 raw ids (equal to the bipartite graph's
            ``user_ids`` or ``item_ids`` of the same day), row order of ``adj``.
        adj (CSR): n x n; row r holds r's top-k most similar nodes (never r itself), sorted by
            descending similarity, weight = similarity.
        kind (str): ``user`` or ``item``.
        stats (dict): build statistics (time, memory, hub handling) for metadata.
    """

    node_ids: np.ndarray
    adj: CSR
    kind: str
    stats: dict = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "node_ids.npy", self.node_ids)
        self.adj.save(directory, "adj")
        _write_meta(directory, {"kind": self.kind, "n": len(self.node_ids), "nnz": self.adj.nnz})
        # build statistics (timings) vary run to run: kept beside the data, out of its version hash
        (directory / "stats.json").write_text(json.dumps(self.stats, indent=2, sort_keys=True, default=float))

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> SimilarityGraph:
        meta = _read_meta(directory)
        mode = "r" if mmap else None
        node_ids = np.load(directory / "node_ids.npy", mmap_mode=mode)
        stats_file = directory / "stats.json"
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        return cls(node_ids, CSR.load(directory, "adj", n_cols=meta["n"], mmap=mmap), meta["kind"], stats)


#: :func:`lookup` uses a direct-address table for at least this many ids, over an id range
#: below ``_DENSE_SPAN_PER_ID`` x (ids + table entries) and ``_DENSE_MAX_SPAN`` (256 MB of int64).
_DENSE_MIN = 65_536
_DENSE_SPAN_PER_ID = 8
_DENSE_MAX_SPAN = 1 << 25


#: Pair searches run serially below this many pairs (a request's 10k pairs, 2 busy cores: 11.8 ms in parallel, 0.19 ms serial).
_PARALLEL_MIN_PAIRS = 1 << 17


@njit(cache=True, nogil=True)
def _entry_position(indptr, indices, row, col):
    """The position of entry ``(row, col)`` in ``indices``, -1 if absent (columns sorted per row)."""
    lo, hi = indptr[row], indptr[row + 1]
    while lo < hi:  # the first position in the row whose column is >= col
        mid = (lo + hi) // 2
        if indices[mid] < col:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < indptr[row + 1] and indices[lo] == col else -1


@njit(cache=True, nogil=True, parallel=True)
def _pair_weights(indptr, indices, weights, rows, cols):
    out = np.zeros(len(rows), np.float64)
    for t in prange(len(rows)):
        pos = _entry_position(indptr, indices, rows[t], cols[t])
        if pos >= 0:
            out[t] = weights[pos]
    return out


@njit(cache=True, nogil=True)
def _entry_positions(indptr, indices, rows, cols):
    out = np.full(len(rows), -1, np.int64)
    for t in range(len(rows)):
        if rows[t] >= 0 and cols[t] >= 0:
            out[t] = _entry_position(indptr, indices, rows[t], cols[t])
    return out


def entry_positions(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The position in ``indices`` of each entry ``(rows[t], cols[t])`` of a CSR layout whose
    columns are sorted within each row; -1 where it has no such entry, or where ``rows[t]`` or
    ``cols[t]`` is -1 (int64 ``[m]``; a binary search within one row per entry, serial)."""
    return _entry_positions(np.asarray(indptr), np.asarray(indices), np.asarray(rows, np.int64), np.asarray(cols, np.int64))


@njit(cache=True, nogil=True, parallel=True)
def _dense_table(sorted_ids, lo, span):
    table = np.full(span, -1, np.int64)
    for i in prange(len(sorted_ids)):
        table[sorted_ids[i] - lo] = i
    return table


@njit(cache=True, nogil=True)
def _table_rows(table, raw_ids, lo):
    out = np.empty(len(raw_ids), np.int64)
    span = len(table)
    for j in range(len(raw_ids)):
        v = raw_ids[j] - lo
        out[j] = table[v] if 0 <= v < span else -1
    return out


def _compact_span(sorted_ids: np.ndarray, entries: int) -> tuple[int, int] | None:
    """``(lo, span)`` of the sorted ids when a direct-address table over them is worth building
    for ``entries`` (ids + lookups): a span below ``_DENSE_SPAN_PER_ID`` x entries and
    ``_DENSE_MAX_SPAN``; else None."""
    lo = int(sorted_ids[0])
    span = int(sorted_ids[-1]) - lo + 1
    return (lo, span) if span <= min(_DENSE_SPAN_PER_ID * entries, _DENSE_MAX_SPAN) else None


class IdIndex:
    """:func:`lookup` in fixed sorted ids, repeated (a server's snapshot and vocabularies): the
    direct-address table is built once when the id range is compact (:func:`_compact_span` of
    the ids alone), and each call costs O(m) where a
    binary search costs O(m log n) in cache misses (1,000 ids in 370k: 0.13 ms -> 0.01 ms)."""

    def __init__(self, sorted_ids: np.ndarray):
        self.ids = np.asarray(sorted_ids, np.int64)
        self._table, self._lo = None, 0
        compact = _compact_span(self.ids, len(self.ids)) if len(self.ids) else None
        if compact is not None:
            self._lo = compact[0]
            self._table = _dense_table(self.ids, *compact)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, raw_ids) -> np.ndarray:
        """:func:`lookup` ``(self.ids, raw_ids)``."""
        if self._table is None:
            return lookup(self.ids, raw_ids)
        return _table_rows(self._table, np.asarray(raw_ids, dtype=np.int64).reshape(-1), self._lo)


def lookup(sorted_ids: np.ndarray, raw_ids: np.ndarray) -> np.ndarray:
    """Row of each raw id in ``sorted_ids``, -1 where the id is absent.

    Args:
        sorted_ids (np.ndarray): int64 ``[n]`` ascending, unique raw ids (a graph's
            ``user_ids`` / ``item_ids`` / ``node_ids``, a vocabulary).
        raw_ids (np.ndarray): ``[m]`` raw ids to place (any order, repeats allowed).

    Returns:
        np.ndarray: int64 ``[m]``, ``sorted_ids[out[j]] == raw_ids[j]`` where ``out[j] >= 0``
        (one binary search per id, ``O(m log n)``; many ids over a compact id range, e.g. a day's
        3M samples placed in 360k graph users: a direct-address table over the range, ``O(n +
        m + range)``, 10x faster).
    """
    raw_ids = np.asarray(raw_ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(raw_ids), -1, dtype=np.int64)
    n, m = len(sorted_ids), len(raw_ids)
    compact = _compact_span(sorted_ids, n + m) if m >= _DENSE_MIN and 4 * m >= n else None
    if compact is not None:
        return _table_rows(_dense_table(np.asarray(sorted_ids, np.int64), *compact), raw_ids, compact[0])
    pos = np.searchsorted(sorted_ids, raw_ids)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos_c] == raw_ids, pos_c, -1).astype(np.int64)
