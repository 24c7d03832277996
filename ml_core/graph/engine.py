"""Where the top-k similarity kernel walks its rows: in this process or on a Dask cluster.

``graph.engine`` picks it (docs/scaling.md, "Graph stage on Dask"):

* ``local`` (default): :meth:`PreparedMatrix.run <ml_core.graph.similarity.PreparedMatrix.run>`
  in this process, numba threads over cost-balanced blocks.
* ``dask``: the rows are cut into ``graph.engine_blocks`` contiguous blocks of about equal work
  (the rows' 2-hop walk lengths, :func:`~ml_core.graph.similarity.balanced_blocks`; 0 = four
  per worker), the prepared matrix is sent once to every worker (``scatter(broadcast=True)``),
  each block is one task that runs the same kernel on its rows, and the blocks' outputs are
  concatenated in row order. With ``graph.engine_address = ""`` a local cluster of
  ``graph.engine_workers`` processes is started for the build and closed after it (tests, one
  machine); ``"tcp://host:8786"`` connects to a running scheduler (a cluster).

Why the result is bit for bit the single-machine one
----------------------------------------------------
A row's top-k is a function of that row alone: its float64 sums run over its own columns in
ascending order and its ties break by id, whatever rows share its block, thread or process
(``tests/unit/graph/test_engine.py`` checks the arrays are equal). Candidates emitted by the
incremental refresh are per row too; :func:`~ml_core.graph.similarity_state.refresh_similarity_state`
sorts them before merging, so the order in which blocks return them does not matter.

Each worker holds a full copy of the prepared matrix (about 20 bytes per edge: int64 + float32
by row, int32 + float32 by column): run one worker process per machine and let numba use its
cores (``dask worker ADDRESS --nworkers 1 --nthreads 1``); a local cluster gives each of its
workers ``cpus // workers`` numba threads. Workers need this package importable (same image).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from ml_core.graph.similarity import PreparedMatrix, balanced_blocks

ENGINES = ("local", "dask")


class LocalEngine:
    """The rows are walked in this process (what ``engine=None`` means everywhere)."""

    name = "local"

    def run(self, prep: PreparedMatrix, rows: np.ndarray, k: int, chunk_rows: int = 4096, emit: dict | None = None):
        return prep.run(rows, k, chunk_rows, emit)

    def close(self) -> None:
        pass


def warm_up() -> None:
    """Load the kernels (numba's on-disk cache) in this process with a walk of a 2-row matrix, so
    the first real walk does not pay for it (a new worker runs this when the engine starts)."""
    from ml_core.graph.csr import CSR

    tiny = CSR(np.array([0, 1, 2]), np.array([0, 0]), np.ones(2, np.float32), 1)
    PreparedMatrix(tiny, "cosine", 0).run(np.arange(2), 1)


def walk_block(prep: PreparedMatrix, rows: np.ndarray, k: int, chunk_rows: int, emit: dict | None, threads: int):
    """One Dask task: the kernel on one row block of ``prep`` with ``threads`` numba threads (0 =
    numba's default). Returns ``(run output, emission blocks re-run, process id)``."""
    import numba

    if threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    before = prep.emit_reruns
    out = prep.run(rows, k, chunk_rows, emit)
    return out, prep.emit_reruns - before, os.getpid()


class DaskEngine:
    """The rows are walked by the workers of a Dask cluster, one task per row block.

    Args:
        address (str): scheduler address (``tls://host:8786``, ``tcp://`` on a trusted network),
            or ``""`` to start a local cluster of ``workers`` processes on 127.0.0.1, its dashboard
            on 127.0.0.1 too (closed by :meth:`close`). (default: ``""``)
        workers (int): processes of the local cluster. (default: ``2``)
        blocks (int): row blocks per walk; 0 = four per worker. (default: ``0``)
        security (distributed.Security): TLS for ``address`` (:func:`engine_security`); a
            ``tcp://`` address with it is refused. (default: ``None``)

    ``last_run`` describes the latest walk: its blocks and the process ids that ran them.
    """

    name = "dask"

    def __init__(self, address: str = "", workers: int = 2, blocks: int = 0, security=None):
        import logging

        from distributed import Client, LocalCluster

        self.cluster = None
        if address:
            if security is not None and not address.startswith("tls://"):
                raise ValueError(f"graph.engine_address = {address!r} with TLS settings: expected a tls:// address")
            self.client = Client(address, security=security) if security is not None else Client(address)
            self.threads = 0  # a cluster's worker uses its machine's cores
        else:
            if workers < 1:
                raise ValueError(f"workers must be >= 1, got {workers}")
            # logs: a task's error reaches us as its exception; shut-down heartbeat races are noise
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
            self.client = Client(self.cluster)
            self.threads = max(1, (os.cpu_count() or 1) // workers)
        workers_info = self.client.scheduler_info()["workers"]
        self.n_workers = len(workers_info)
        threaded = sorted(w for w, info in workers_info.items() if info.get("nthreads", 1) > 1)
        if self.n_workers < 1 or threaded:
            self.close()
            raise RuntimeError(f"the Dask cluster at {address or 'local'} has no worker" if not threaded else
                               f"Dask workers {threaded[:3]} run several task threads: the numba kernel needs one task "
                               "thread per worker process (`dask worker ADDRESS --nthreads 1`) and uses the cores itself")
        self.client.run(warm_up)
        self.blocks = blocks if blocks > 0 else 4 * self.n_workers
        self.last_run: dict = {}
        self._shared: tuple | None = None  # (prep, its future on every worker)

    def _on_workers(self, prep: PreparedMatrix):
        """``prep`` sent once to every worker, reused while the same matrix is walked again."""
        if self._shared is None or self._shared[0] is not prep:
            self._shared = None  # drops the previous matrix's future: the workers free it
            self._shared = (prep, self.client.scatter([prep], broadcast=True, hash=False)[0])
        return self._shared[1]

    def run(self, prep: PreparedMatrix, rows: np.ndarray, k: int, chunk_rows: int = 4096, emit: dict | None = None):
        """What ``prep.run(rows, k, chunk_rows, emit)`` returns, computed block by block on the workers."""
        rows = np.asarray(rows, np.int64)
        bounds = balanced_blocks(prep.row_cost[rows], self.blocks)
        on_workers = self._on_workers(prep)
        em = None if emit is None else self.client.scatter([emit], broadcast=True, hash=False)[0]
        futures = [self.client.submit(walk_block, on_workers, rows[lo:hi], k, chunk_rows, em, self.threads, pure=False)
                   for lo, hi in zip(bounds[:-1], bounds[1:])]
        results = self.client.gather(futures)
        del em
        prep.emit_reruns += sum(r[1] for r in results)
        self.last_run = {"blocks": len(futures), "rows": len(rows), "pids": sorted({r[2] for r in results})}
        if not results:  # no row to walk: the local call gives the empty shapes
            return prep.run(rows, k, chunk_rows, emit)
        outs = [r[0] for r in results]
        walked = tuple(np.concatenate([o[i] for o in outs]) for i in range(4))
        if emit is None:
            return walked
        return (*walked, tuple(np.concatenate([o[4][i] for o in outs]) for i in range(3)))

    def close(self) -> None:
        self._shared = None
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def open_engine(cfg):
    """The engine ``cfg`` (a ``GraphConfig``) asks for; the caller closes it."""
    if cfg.engine == "local":
        return LocalEngine()
    if cfg.engine == "dask":
        return DaskEngine(cfg.engine_address, cfg.engine_workers, cfg.engine_blocks, engine_security(cfg))
    raise ValueError(f"graph.engine must be one of {ENGINES}, got {cfg.engine!r}")


def engine_security(cfg):
    """The ``distributed.Security`` of ``cfg``'s ``engine_tls_*`` files (encryption required),
    or None when none is set; ValueError when only some are."""
    files = {"engine_tls_ca_file": cfg.engine_tls_ca_file, "engine_tls_cert": cfg.engine_tls_cert,
             "engine_tls_key": cfg.engine_tls_key}
    if not any(files.values()):
        return None
    if not all(files.values()):
        raise ValueError(f"graph: set all of {sorted(files)} for TLS to the Dask scheduler, or none; "
                         f"missing {sorted(k for k, v in files.items() if not v)}")
    from distributed.security import Security

    return Security(tls_ca_file=files["engine_tls_ca_file"], tls_client_cert=files["engine_tls_cert"],
                    tls_client_key=files["engine_tls_key"], require_encryption=True)


@contextmanager
def engine_for(cfg, engine=None):
    """``engine`` when given (its owner closes it), else one opened from ``cfg`` for the block."""
    if engine is not None:
        yield engine
        return
    engine = open_engine(cfg)
    try:
        yield engine
    finally:
        engine.close()
