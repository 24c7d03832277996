"""What the server serves, and how it changes: :class:`ServeOptions`, :class:`Served` and
:class:`ModelHolder` (the swap on ``/reload`` and the production-pointer watcher).

A :class:`Served` is immutable: the :class:`~ml_core.serving.scorer.Scorer` of one version and,
with retrieval on, its :class:`~ml_core.serving.retrieval.Retriever`. A request reads
``holder.current`` once, at its start, and uses that object to the end. A reload builds the new
``Served`` completely (weights, snapshot, index) while requests keep being answered by the old
one, then replaces the reference in one assignment: no request waits for the load, none sees a
half-loaded model, and a failed load leaves the old version serving.

Hot reload. With ``watch_s > 0`` (``moge serve --watch 2``) a daemon thread checks the
production pointer every ``watch_s`` seconds (the file's mtime and inode, which the deployment
gate's atomic rename changes; no inotify) and reloads when the version it names differs from
the one served. A version whose load failed is not retried until the pointer moves again.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml_core.config.registry import RegistryConfig
from ml_core.registry.interface import open_bundle_registry
from ml_core.serving.guard import Limits
from ml_core.serving.metrics import Metrics
from ml_core.serving.retrieval import INDEX_KINDS, Retriever, set_index_threads
from ml_core.serving.scorer import Scorer

log = logging.getLogger("moge.serve")


@dataclass(frozen=True)
class ServeOptions:
    """How ``moge serve`` loads and answers (its command-line flags)."""

    #: rows per forward pass
    batch_size: int = 4096
    #: torch CPU threads (0 = torch's default); requests run in the server's thread pool
    threads: int = 0
    #: /recommend without explicit candidates ranks the top ``retrieval`` items of the ANN index
    #: instead of the whole catalogue; 0 = off (rank every item, the exact path)
    retrieval: int = 0
    #: the index: "hnsw" (approximate, sub-linear) or "flat" (exact inner product, linear)
    index: str = "hnsw"
    #: HNSW search breadth (raised to the number of candidates asked when smaller)
    ef_search: int = 128
    #: users whose ranker scores of every item make the user-independent candidate channel
    #: (``retrieval.item_prior``; half the N candidates); 0 = the index alone. Load cost:
    #: ``prior_users * items`` pairs scored once per bundle load
    prior_users: int = 8
    #: seconds between checks of the production pointer; 0 = no watcher (POST /reload only)
    watch_s: float = 0.0
    #: the request limits (:class:`ml_core.serving.guard.Limits`); None = the defaults
    limits: Limits | None = None
    #: the bearer token POST /reload needs ("" = /reload is refused; ``moge serve`` reads it from
    #: ``$MOGE_ADMIN_TOKEN`` or ``--admin-token-file``); never printed
    admin_token: str = field(default="", repr=False)
    #: serve the OpenAPI pages (/docs, /redoc, /openapi.json); off by default: a public server
    #: need not publish its API's shape
    docs: bool = False
    #: serve a ``--bundle`` directory without ``_FILES.json`` unchecked (default: refused)
    allow_unsealed: bool = False
    #: load only bundles with a valid signature (:mod:`ml_core.registry.signing`); ``moge serve`` sets it
    #: when ``$MOGE_BUNDLE_KEY`` is set or with ``--watch`` (unless ``--allow-unsigned``)
    require_signature: bool = False

    def __post_init__(self) -> None:
        if min(self.retrieval, self.prior_users, self.watch_s) < 0 or min(self.ef_search, self.batch_size) < 1:
            raise ValueError(f"retrieval, prior_users, watch_s >= 0 and ef_search, batch_size >= 1 expected, got {self}")
        if self.index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, got {self.index!r}")
        if self.limits is None:
            object.__setattr__(self, "limits", Limits())


@dataclass(frozen=True)
class Served:
    """One loaded version: its scorer, its retriever (None with retrieval off), when it loaded."""

    scorer: Scorer
    retriever: Retriever | None
    loaded_at: float

    @property
    def version(self) -> str:
        return self.scorer.version


class ReloadError(Exception):
    """A reload that could not happen; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def settle_heap() -> None:
    """Collect, then exempt every object alive now from Python's cyclic garbage collector
    (``gc.freeze``): a loaded model brings ~10^6 long-lived objects (torch, pydantic, the
    bundle), and each full collection, triggered by the small objects of request parsing, walked
    them all: /score requests at the ``large`` preset took 95-145 ms at p99 against 7.5 ms at
    p50. Frozen objects are still freed by reference counting; each reload thaws, collects and
    freezes again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def warm_up(scorer: Scorer) -> None:
    """Score a pair of the snapshot and a pair of ids it lacks once, at load: what the first
    request of each kind would do once (the graph layers import torch_geometric on their first
    call, ~0.6 s holding the interpreter lock, /health included, in the middle of serving)."""
    users, items = np.asarray(scorer.graph.user_ids, np.int64), np.asarray(scorer.item_ids, np.int64)  # sorted
    absent = [np.array([ids[-1] + 1 if len(ids) else 1]) for ids in (users, items)]
    scorer.score_pairs(np.concatenate([users[:1], absent[0]]), np.concatenate([items[:1], absent[1]]))


class ModelHolder:
    """The served version, swapped as a whole (see the module docstring).

    Args:
        path (Path): a storage root (follows its production pointer) or a fixed bundle directory.
        options (ServeOptions): loading options.
        metrics (Metrics): where the served version and the reloads are recorded.
        registry (RegistryConfig): the registry whose production model a storage root serves
            (default: the local store under it; the MLflow backend's alias is polled instead of
            a pointer file).
    """

    def __init__(self, path: str | Path, options: ServeOptions, metrics: Metrics, registry: RegistryConfig | None = None):
        self.path, self.options, self.metrics, self.registry = Path(path), options, metrics, registry
        self.fixed = (self.path / "model.pt").exists()
        self.store = None if self.fixed else open_bundle_registry(registry, self.path)
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._failed: str | None = None  # the version whose load failed (not retried until the pointer moves)
        self._failed_at: tuple | None = None  # (that version, the pointer's stamp when it failed)
        self._stamp = self._pointer_stamp()
        self.current = self._load()
        metrics.set_version(self.current.version)
        settle_heap()

    def _load(self) -> Served:
        o = self.options
        if self.fixed:
            scorer = Scorer.from_bundle(self.path, batch_size=o.batch_size, threads=o.threads,
                                        allow_unsealed=o.allow_unsealed, require_signature=o.require_signature)
        else:
            scorer = Scorer.from_registry(self.path, self.registry, batch_size=o.batch_size, threads=o.threads,
                                          require_signature=o.require_signature)
        set_index_threads(o.threads)
        retriever = (Retriever.for_scorer(scorer, o.index, prior_users=o.prior_users, ef_search=o.ef_search)
                     if o.retrieval else None)
        warm_up(scorer)
        return Served(scorer, retriever, time.time())

    def _pointer_stamp(self) -> tuple | None:
        return None if self.store is None else self.store.production_stamp()

    def reload(self) -> dict:
        """Swap to the version the production pointer names, if it is not the one served.
        Raises :class:`ReloadError` (409 fixed bundle, 503 no pointer or a failed load)."""
        if self.fixed:
            raise ReloadError(409, f"serving the fixed bundle {self.path}; start the service "
                                   "with a storage root to follow the production pointer")
        with self._lock:
            old = self.current
            stamp = self._pointer_stamp()
            try:
                prod = self.store.production()
                version = None if prod is None else str(prod["version"])
            except (ValueError, KeyError, TypeError, OSError) as e:  # torn or hand-edited pointer
                raise ReloadError(503, f"the production pointer of {self.store.location} is unreadable "
                                       f"({type(e).__name__}); still serving {old.version}") from None
            if version is None:
                raise ReloadError(503, f"no production pointer in {self.store.location}; still serving {old.version}")
            previous = old.version
            if version == previous:
                return {"version": previous, "previous": previous, "changed": False}
            if (version, stamp) == self._failed_at:  # not loaded (and hashed) again until the pointer moves
                raise ReloadError(503, f"{version} failed to load and the pointer has not moved since; "
                                       f"still serving {old.version}")
            try:
                new = self._load()
            except Exception as e:
                self._failed, self._failed_at = version, (version, stamp)
                self.metrics.reloaded(False)
                raise ReloadError(503, f"reload of {version} failed ({e}); still serving {old.version}") from None
            self.current = new  # the swap: one reference assignment
            self._failed = self._failed_at = None
            self.metrics.set_version(new.version)
            self.metrics.reloaded(True)
            version = new.version
            del old, new  # the old model goes when its last request ends; then one full collection
            settle_heap()
        log.info("serving %s (was %s)", version, previous)
        return {"version": version, "previous": previous, "changed": True}

    # -- the watcher -------------------------------------------------------------------------------
    def poll(self) -> dict | None:
        """One check of the pointer: the reload's result when it moved to another version
        (None when it did not move, or names the served version or the one that failed)."""
        stamp = self._pointer_stamp()
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        prod = self.store.production()
        if prod is None or prod["version"] in (self.current.version, self._failed):
            return None
        try:
            return self.reload()
        except ReloadError as e:
            log.error("hot reload: %s", e)
            return None

    def start_watching(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Start the watcher thread (``options.watch_s`` > 0, a storage root); idempotent."""
        if self.fixed or self.options.watch_s <= 0 or self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.options.watch_s):
                try:
                    self.poll()
                except Exception as e:  # an unreadable pointer mid-write must not end the watcher
                    log.exception("hot reload: pointer check failed")
                    if on_error is not None:
                        on_error(e)

        self._watcher = threading.Thread(target=loop, name="moge-pointer-watch", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
            self._watcher = None
