"""What a stored partition holds, checked: its data version (the content hash) and the size and
sha256 of each of its files, recorded when it is written (:func:`ml_core.storage.atomic_dir`) and
checked before it is read (:func:`verify_dir`)."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from ml_core.catalog import MATERIALIZED_BY

VERSION_FILE = "_VERSION"
#: Size and sha256 of every file of a partition (and its data version), written beside it.
INTEGRITY_FILE = "_FILES.json"
#: A model bundle's signature of its records (:mod:`ml_core.registry.signing`), written after them.
SIGNATURE_FILE = "_SIGNATURE"
#: The files that describe a partition rather than belong to it: never in its records.
RECORD_FILES = (VERSION_FILE, INTEGRITY_FILE, SIGNATURE_FILE)


#: Bytes read (and hashed) at a time.
_CHUNK = 4 << 20

#: Files that describe how a partition was built (timings, run ids, input versions), not what it holds.
#: ``history.json`` is a model's training curve with its throughput (samples/s): the same weights
#: trained twice (day by day, or in a backfill's range) are the same data version.
VOLATILE_FILES = ("stats.json", "state.json", "inputs.json", "history.json")


def content_hash(directory: Path, exclude: tuple[str, ...] = (VERSION_FILE, INTEGRITY_FILE, "manifest.json")) -> str:
    """sha256 over every file's relative path and bytes: the data version of a partition.

    Files named in :data:`VOLATILE_FILES` (anywhere in the tree) do not count."""
    return digests(directory, exclude)[0]


def digests(directory: Path, exclude: tuple[str, ...] = (VERSION_FILE, INTEGRITY_FILE, "manifest.json"),
            whole_hash: bool = True) -> tuple[str, dict[str, list]]:
    """(:func:`content_hash`, ``{relative path: [size, sha256]}`` of every file but the top-level
    :data:`RECORD_FILES`), reading each file once."""
    whole, files = hashlib.sha256(), {}
    # a counted file's bytes feed two sha256 streams: the file's runs on a second thread
    # (hashlib releases the GIL), so a large bundle is hashed at one stream's speed
    with ThreadPoolExecutor(1) as pool:
        for f in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
            rel = f.relative_to(directory).as_posix()
            if rel in RECORD_FILES:
                continue
            counted = whole_hash and rel not in exclude and f.name not in VOLATILE_FILES
            if counted:
                whole.update(rel.encode())
            h, size = hashlib.sha256(), 0
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    size += len(chunk)
                    if counted:
                        pending = pool.submit(h.update, chunk)
                        whole.update(chunk)
                        pending.result()
                    else:
                        h.update(chunk)
            files[rel] = [size, h.hexdigest()]
    return whole.hexdigest(), files


def seal(directory: Path) -> str:
    """Record what ``directory`` holds now: its data version (``_VERSION``) and each file's size and
    sha256 (``_FILES.json``). Returns the version."""
    version, files = digests(directory)
    (directory / VERSION_FILE).write_text(version)
    (directory / INTEGRITY_FILE).write_text(json.dumps({"version": version, "files": files}, sort_keys=True))
    return version


class CorruptPartitionError(RuntimeError):
    """A stored partition (or bundle) whose files are not what was written: truncated, changed,
    missing or added since."""


#: Directories checked in this process: path -> the (file, size, mtime) listing they were checked with.
_VERIFIED: dict[str, tuple] = {}


def _listing(directory: Path) -> tuple:
    out = []
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        st = f.stat()
        out.append((f.relative_to(directory).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def remember_sealed(directory: Path) -> None:
    """Record ``directory`` as checked: this process has just sealed its files (hashing every
    byte) and published them by renaming the directory. A later :func:`verify_dir` in this
    process re-hashes only if a file's path, size or mtime differs (publishing a ``large``
    bundle otherwise hashed its 1.3 GB three times: 2 s each)."""
    directory = Path(directory)
    _VERIFIED[str(directory)] = _listing(directory)


def verify_dir(directory: Path, what: str, fix: str, require_files: bool = False) -> Path:
    """Check ``directory`` against its ``_FILES.json`` (a partition written before that file
    existed: against ``_VERSION``, unless ``require_files``) and return it; raise
    :class:`CorruptPartitionError` naming ``what`` (e.g. "bipartite_graph partition 2026-01-03"),
    the file and ``fix`` (how to rebuild it) otherwise. Repeated checks of unchanged files (same
    paths, sizes and mtimes) are free. ``_VERSION`` alone does not cover ``manifest.json``: model
    bundles are checked with ``require_files``."""
    directory = Path(directory)
    listing = _listing(directory)
    if _VERIFIED.get(str(directory)) == listing:
        return directory

    def corrupt(problem: str) -> CorruptPartitionError:
        return CorruptPartitionError(f"{what} at {directory} is corrupt: {problem}. {fix}")

    if require_files and not (directory / INTEGRITY_FILE).is_file():
        raise corrupt(f"it has no {INTEGRITY_FILE}, so its files (manifest.json included) cannot be checked")

    if (directory / INTEGRITY_FILE).is_file():
        try:
            recorded = json.loads((directory / INTEGRITY_FILE).read_text())
            expected, files = recorded["version"], recorded["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise corrupt(f"its {INTEGRITY_FILE} is unreadable ({e})") from None
        sizes = {rel: size for rel, size, _ in listing if rel not in RECORD_FILES}
        missing = sorted(set(files) - set(sizes))
        if missing:
            raise corrupt(f"file(s) {missing} missing")
        for rel, size in sizes.items():  # from the listing: a truncated file is found before any hashing
            if rel not in files:
                raise corrupt(f"file {rel} was not written with it")
            if size != files[rel][0]:
                raise corrupt(f"file {rel} has {size} bytes, {files[rel][0]} were written (truncated or overwritten)")
        _, actual = digests(directory, whole_hash=False)  # the files as recorded = the version as recorded
        for rel, (size, digest) in actual.items():
            if rel not in files or size != files[rel][0]:
                raise corrupt(f"file {rel} changed while it was checked")
            if digest != files[rel][1]:
                raise corrupt(f"file {rel} does not match its recorded sha256 (changed on disk)")
        stored = (directory / VERSION_FILE).read_text().strip() if (directory / VERSION_FILE).is_file() else None
        if stored != expected:
            raise corrupt(f"its {VERSION_FILE} ({stored}) is not the version it was written with ({expected})")
    elif (directory / VERSION_FILE).is_file():
        if content_hash(directory) != (directory / VERSION_FILE).read_text().strip():
            raise corrupt(f"its content hash differs from {VERSION_FILE} (a file was truncated or changed)")
    else:
        raise corrupt(f"neither {INTEGRITY_FILE} nor {VERSION_FILE} is there (not a complete partition)")
    _VERIFIED[str(directory)] = listing
    return directory


def rebuild_hint(asset: str, day: date | str, directory: Path) -> str:
    """How to rebuild a bad partition of ``asset``: what an error about it tells the reader."""
    step = MATERIALIZED_BY.get(asset, asset)  # the graph assets are materialized together, by one multi-asset
    select = ",".join(k for k, v in MATERIALIZED_BY.items() if v == step) or asset
    return (f"Rebuild it: re-materialize {step} for partition {_day(day)} (`dagster asset materialize -m "
            f"orchestration.definitions --select {select} --partition {_day(day)}`, or Materialize on that "
            f"partition in the UI), or delete {directory} and run the day's job again")


def _day(day: date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()
