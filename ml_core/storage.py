"""The Parquet lake and the file layout of every partition.

Layout under ``root``::

    lake/<asset>/ds=YYYY-MM-DD/part-0.parquet      tables (events, samples, features)
    lake/<asset>/ds=YYYY-MM-DD/*.npy, meta.json    graphs (CSR arrays, memory-mappable)
    registry/versions/<version>/...                model bundles (see ml_core.registry.bundles)

Every write goes to a hidden temp directory beside the target and is renamed into place, so a
crash never leaves a half-written partition that a later run would read as good, and writing a
partition again replaces it (never duplicates it). DuckDB reads the lake in place
(:meth:`Lake.sql`) for ad-hoc queries.

Every partition also records what each of its files holds (``_FILES.json``: size and sha256 per
file): readers check a partition against it before using it (:meth:`Lake.checked_dir`, and every
table read), so a truncated or corrupted file fails the run with a :class:`CorruptPartitionError`
naming the file and how to rebuild the partition, instead of feeding a later stage. A check is
done once per process for a given set of files (path, size, mtime).

A writer killed mid-write (SIGKILL, a machine restart) leaves its hidden ``.tmp-`` directory
behind, or, killed between the two renames of a replacement, the previous partition under
``.old-`` with the target missing. Each hidden name carries its writer (``~<pid>.<start>@<host>``),
and :func:`sweep_stale_writes` clears the ones whose writer is gone: temp directories are deleted
and a stranded ``.old-`` partition is put back (the complete previous version) or deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import polars as pl

from ml_core.integrity import (  # noqa: F401 - content_hash, VOLATILE_FILES: part of the lake's API
    INTEGRITY_FILE,
    VERSION_FILE,
    VOLATILE_FILES,
    CorruptPartitionError,
    content_hash,
    rebuild_hint,
    remember_sealed,
    seal,
    verify_dir,
)
from ml_core.stop import check_stop


def day_str(day: date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()


@contextlib.contextmanager
def atomic_dir(target: Path, finish: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces ``target`` atomically. ``finish`` is called
    with the temp directory once it is sealed, before it is flushed and published (a bundle's
    signature, :func:`ml_core.registry.signing.signer`).

    The old directory (if any) is first renamed aside, the new one renamed in, then the old one
    deleted, so readers see either the complete old or the complete new partition. Every file and
    directory of the new one is flushed to the disk before the renames, and the renames after
    them (:func:`fsync_tree`): after a power cut the partition is the old one or the new one, whole.
    """
    target = Path(target)
    check_stop(f"before writing {target.name}")  # a stopped run publishes nothing more
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / _hidden_name("tmp", target.name)
    tmp.mkdir()
    old = None
    try:
        yield tmp
        seal(tmp)
        if finish is not None:
            finish(tmp)
        fsync_tree(tmp)
        with _publish_lock(target):  # two writers of one partition publish one after the other
            if target.exists():
                old = target.parent / _hidden_name("old", target.name)
                os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                if old is not None:  # put the previous version back
                    os.replace(old, target)
                    old = None
                raise
            fsync_directory(target.parent)  # the renames themselves
            remember_sealed(target)  # hashed by seal() just now: a read in this process need not hash it again
    except OSError as e:
        if e.errno not in _STORAGE_ERRORS:
            raise
        raise OSError(e.errno, f"{e.strerror} while writing partition {target} ({e.filename}): nothing was "
                      "published, the previous version (if any) is kept; fix the storage and re-run") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: Errors of the storage itself (full, over quota, read-only, failing): reported with the partition.
_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


@contextlib.contextmanager
def _publish_lock(target: Path) -> Iterator[None]:
    """An exclusive lock on publishing into ``target``'s directory (``flock`` on the directory
    itself: no lock file), so the two renames of a replacement never interleave with another
    writer's. Held for the renames only."""
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fsync_tree(path: Path) -> None:
    """Flush to the disk every file under ``path`` and every directory's entries (``path``
    included): what a rename then publishes survives a power cut. Only the top-level files were
    flushed before, so a bundle's ``context/`` could come back empty after one."""
    for d, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(d, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_directory(Path(d))


def fsync_directory(path: Path) -> None:
    """Flush ``path``'s entries (the names a rename or a new file put there) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """``path`` replaced by ``text`` atomically and durably: written to a temp file beside it,
    flushed to the disk, renamed over it, and the rename flushed (the production pointer is
    written so: after a power cut it names the old or the new version, complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / _hidden_name("tmp", path.name)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, a file already there, links not supported
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path, ignore=None) -> None:
    """``shutil.copytree(src, dst)`` by hard links where the filesystem allows (copies elsewhere):
    for sealed partitions, whose files are never written in place (a partition is replaced by a
    rename, a file by :func:`atomic_write_text`), so a link shares bytes that do not change."""
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=ignore, copy_function=_link_or_copy)


# -- writers and their leftovers -----------------------------------------------------------

def hostname() -> str:
    return socket.gethostname()[:64] or "localhost"


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None when there is no such live
    process (a zombie counts as gone). With the pid this identifies a process: a pid reused by
    a later process has a later start time."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # another user's live process
        return 0.0


def process_alive(pid: int, started: float | None, host: str | None = None, tolerance: float = 2.0) -> bool | None:
    """Is the process ``pid`` that started at ``started`` (None: at any time) still running?

    None when that cannot be told from here: ``host`` is another machine."""
    if host is not None and host != hostname():
        return None
    now_started = process_start_time(pid)
    if now_started is None:
        return False
    if started is None or now_started == 0.0:
        return True
    return abs(now_started - started) <= tolerance  # otherwise the pid was reused


_SELF: dict[int, str] = {}


def writer_token() -> str:
    """``<pid>.<start>@<host>`` of this process, put into every hidden name it writes."""
    pid = os.getpid()  # per pid: a forked child is another writer
    if pid not in _SELF:
        _SELF[pid] = f"{pid}.{int(process_start_time(pid) or 0.0)}@{hostname()}"
    return _SELF[pid]


def _hidden_name(kind: str, name: str) -> str:
    return f".{kind}-{name}-{uuid.uuid4().hex[:8]}~{writer_token()}"


_HIDDEN = re.compile(r"^\.(tmp|old)-(.+)-[0-9a-f]{8}(?:~(\d+)\.(\d+)@(.+))?$")

#: A leftover whose writer cannot be checked (written by another host, or before names carried
#: their writer) is cleared once it is this old: no write of one partition takes that long.
UNCHECKED_WRITE_AGE_S = 24 * 3600


def sweep_stale_writes(root: str | os.PathLike, unchecked_age_s: float = UNCHECKED_WRITE_AGE_S) -> list[str]:
    """Clear what killed writers left under ``root`` (the lake and the bundle registry).

    ``.tmp-`` entries of a writer that is gone are deleted; a ``.old-`` partition of a writer that
    is gone is renamed back when its target is missing (the writer died between the two renames
    of a replacement: the previous complete version comes back), deleted otherwise. Entries of a
    live writer are kept; those whose writer cannot be checked only past ``unchecked_age_s``.
    Returns one line per action."""
    root = Path(root)
    parents = [root / "registry", root / "registry" / "versions"]
    lake = root / "lake"
    if lake.is_dir():
        parents += [p for p in lake.iterdir() if p.is_dir() and not p.name.startswith(".")]
    done = []
    for parent in parents:
        if not parent.is_dir():
            continue
        for entry in parent.iterdir():
            m = _HIDDEN.match(entry.name)
            if not m:
                continue
            kind, name, pid, started, host = m.groups()
            alive = process_alive(int(pid), float(started), host) if pid else None
            if alive or (alive is None and _age(entry) < unchecked_age_s):
                continue
            target = parent / name
            if kind == "old" and not target.exists():
                try:
                    os.replace(entry, target)
                    done.append(f"restored {target} from {entry.name}")
                    continue
                except OSError:  # a live writer has just put a new version there: keep that one
                    pass
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            done.append(f"removed {entry}")
    return done


def _age(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


class Lake:
    """Day-partitioned storage rooted at ``root`` (the config's ``storage.root``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def partition_dir(self, asset: str, day: date | str) -> Path:
        return self.root / "lake" / asset / f"ds={day_str(day)}"

    def checked_dir(self, asset: str, day: date | str) -> Path:
        """The directory of a stored partition, checked against what was written
        (:func:`verify_dir`): a missing partition raises ``FileNotFoundError``, a corrupt one
        :class:`CorruptPartitionError` naming the file and how to rebuild the partition."""
        d = self.partition_dir(asset, day)
        if not d.is_dir():
            raise FileNotFoundError(f"{asset} partition {day_str(day)} is not materialized ({d} missing): "
                                    "materialize it first")
        return verify_dir(d, f"{asset} partition {day_str(day)}", rebuild_hint(asset, day, d))

    def exists(self, asset: str, day: date | str) -> bool:
        return self.partition_dir(asset, day).is_dir()

    def version(self, asset: str, day: date | str) -> str:
        """Content hash of a stored partition (its data version)."""
        f = self.partition_dir(asset, day) / VERSION_FILE
        if not f.exists():
            raise FileNotFoundError(f"{asset} partition {day_str(day)} is not materialized ({f} missing)")
        return f.read_text().strip()

    def days(self, asset: str) -> list[str]:
        base = self.root / "lake" / asset
        if not base.is_dir():
            return []
        return sorted(p.name[3:] for p in base.iterdir() if p.is_dir() and p.name.startswith("ds="))

    # -- tables ---------------------------------------------------------------------------
    def write_table(self, asset: str, day: date | str, df: pl.DataFrame, **extra: pl.DataFrame) -> Path:
        """Write ``df`` (and optional named side tables, e.g. a quarantine) as the partition."""
        target = self.partition_dir(asset, day)
        with atomic_dir(target) as tmp:
            df.write_parquet(tmp / "part-0.parquet", statistics=True)
            for name, side in extra.items():
                side.write_parquet(tmp / f"{name}.parquet")
        return target

    def read_table(self, asset: str, day: date | str, name: str = "part-0") -> pl.DataFrame:
        path = self.partition_dir(asset, day) / f"{name}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{asset} partition {day_str(day)} has no {name}.parquet at {path}: materialize it first")
        return pl.read_parquet(self.checked_dir(asset, day) / f"{name}.parquet")

    def scan_tables(self, asset: str, days: list[date | str]) -> pl.LazyFrame:
        """Lazy scan over several day partitions (missing days raise, naming them)."""
        paths = [self.partition_dir(asset, d) / "part-0.parquet" for d in days]
        missing = [day_str(d) for d, p in zip(days, paths) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{asset} is missing partitions {missing}: materialize them first")
        if not paths:
            raise ValueError(f"no partitions of {asset} requested")
        for d in days:
            self.checked_dir(asset, d)
        return pl.scan_parquet([str(p) for p in paths])

    # -- directories (graphs, models) -----------------------------------------------------
    @contextlib.contextmanager
    def write_dir(self, asset: str, day: date | str) -> Iterator[Path]:
        with atomic_dir(self.partition_dir(asset, day)) as tmp:
            yield tmp

    def sql(self, query: str):
        """Run DuckDB SQL where ``lake('<asset>')`` names a glob over that asset's parquet files.

        Example: ``lake.sql("select ds, count(*) from lake('interaction_logs') group by ds")``.
        """
        import duckdb

        base = (self.root / "lake").as_posix()
        q = query
        import re

        def repl(m: re.Match) -> str:
            return f"read_parquet('{base}/{m.group(1)}/ds=*/part-0.parquet', hive_partitioning=true)"

        q = re.sub(r"lake\('([a-z_]+)'\)", repl, q)
        with duckdb.connect() as con:
            return con.sql(q).pl()
