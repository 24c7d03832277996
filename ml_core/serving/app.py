"""HTTP serving of the deployed model (FastAPI).

``create_app(path, registry=...)`` serves either the registry's production version (``path`` =
the storage root; ``registry`` = the ``[registry]`` section: the local store under the root by
default, or the shared MLflow registry) or one fixed bundle (``path`` = a bundle directory)::

    GET  /health       liveness + the version being served
    GET  /model        version, model, tasks, training days, metrics (from the manifest)
    POST /score        {"pairs": [[user, item], ...]} or {"user_ids": [...], "item_ids": [...]}
    POST /recommend    {"user_id": u, "k": 10, "task": "purchase", "candidates": null, "exclude_seen": true}
    POST /reload       re-read the production pointer and swap to its version
    GET  /metrics      Prometheus text format (:mod:`ml_core.serving.metrics`)

Hot swap (:mod:`ml_core.serving.state`): a request takes the current version (scorer and index)
once, at its start, and uses it to the end; a reload, by ``/reload`` or by the pointer watcher
(``ServeOptions.watch_s``), builds the new version completely before replacing the reference, so
in-flight requests finish on the old version and no request sees a half-loaded model. A failed
reload keeps serving the old version.

Retrieval (:mod:`ml_core.serving.retrieval`, ``ServeOptions.retrieval = N``): /recommend without
explicit candidates ranks the ``N`` items an ANN index retrieves for the user instead of every
item of the snapshot; a request may ask for the exact path with ``"retrieval": false``.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic_core import to_json

from ml_core.config.registry import RegistryConfig
from ml_core.serving.guard import Rejected, RequestGuard, check_admin
from ml_core.serving.metrics import CONTENT_TYPE, Metrics
from ml_core.serving.requests import (
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    ScoreRequest,
    ScoreResponse,
    body_schema,
    parse_request,
    score_columns,
    short_errors,
)
from ml_core.serving.state import ModelHolder, ReloadError, ServeOptions


class MetricsMiddleware:
    """ASGI middleware: every HTTP request's route, status and latency into ``metrics``
    (paths no route serves count as ``other``); an exception counts as status 500."""

    def __init__(self, app, metrics: Metrics, paths: set[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.observe(path, status, time.perf_counter() - t0)


#: A /score of at least this many pairs hands the heap's free memory back to the system after it.
TRIM_AFTER_PAIRS = 20_000


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing):
    a 100,000-pair request frees its ~0.6 GB, but glibc kept it, and the server's resident memory
    stayed at its peak after a burst of large requests."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

#: Score rows serialised at a time by :func:`score_json`.
SCORE_CHUNK = 4096


def score_json(version: str, tasks: list[str], scores: np.ndarray, unknown_users, unknown_items) -> bytes:
    """The :class:`ScoreResponse` JSON of the scorer's own values, written here rather than
    validated: validating 1,000 rows (twice, as FastAPI would) took longer than scoring's lookups.
    Rows are converted :data:`SCORE_CHUNK` at a time (float64: float32's ``.tolist()`` is 4x
    slower for the same numbers) and serialised by pydantic's encoder: 100,000 rows in one piece
    held the interpreter lock for ~60 ms, during which no other request of the process, /health
    included, could run; a chunk holds it ~2 ms."""
    scores = np.asarray(scores, np.float64)
    rows = b",".join(to_json(scores[a:a + SCORE_CHUNK].tolist())[1:-1] for a in range(0, len(scores), SCORE_CHUNK))
    head = to_json({"version": version, "tasks": list(tasks)})[:-1]
    users, items = (to_json(np.asarray(x, np.int64).tolist()) for x in (unknown_users, unknown_items))
    return b"".join([head, b',"scores":[', rows, b'],"unknown_users":', users, b',"unknown_items":', items, b"}"])


async def request_body(request: Request) -> bytes:
    """The request's body (read within the limits by :class:`RequestGuard`)."""
    return await request.body()


def create_app(root_or_bundle: str | Path, batch_size: int = 4096, threads: int = 0,
               options: ServeOptions | None = None, registry: RegistryConfig | None = None) -> FastAPI:
    """App serving the registry's production model under ``root_or_bundle`` (a storage root)
    or, when the path is a bundle directory (has ``model.pt``), that bundle. ``registry``: the
    ``[registry]`` section (default: the local store under the root).

    ``threads``: torch CPU threads per process (0 = torch's default); requests run concurrently
    in the server's thread pool, so 1-2 is usually best on a shared CPU. ``options`` (retrieval,
    the pointer watcher, the limits, the admin token) replaces ``batch_size`` and ``threads``
    when given."""
    options = options or ServeOptions(batch_size=batch_size, threads=threads)
    metrics = Metrics()
    holder = ModelHolder(root_or_bundle, options, metrics, registry=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        holder.start_watching()
        try:
            yield
        finally:
            holder.stop_watching()

    docs = {} if options.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="MoGE recommendation service", lifespan=lifespan, **docs,
                  description="Multi-task scores and top-k recommendations from the deployed model bundle.")
    app.state.holder = holder
    app.state.metrics = metrics

    @app.exception_handler(Rejected)
    async def rejected(request: Request, r: Rejected) -> JSONResponse:
        metrics.rejected(r.reason)
        return JSONResponse({"detail": r.message}, status_code=r.status, headers=r.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:  # query or path parameters
        metrics.rejected("validation")
        return JSONResponse({"detail": short_errors(list(e.errors()))}, status_code=422)

    @app.get("/health")
    async def health() -> dict:  # on the event loop: no hand-over to a worker thread (each waits for the GIL)
        c = holder.current
        return {"status": "ok", "version": c.version, "model": c.scorer.meta.get("model"), "loaded_at": c.loaded_at}

    @app.get("/model")
    def model() -> dict:
        c = holder.current
        retrieval = {"candidates": options.retrieval, "index": options.index} if c.retriever is not None else None
        return {**c.scorer.info(), "source": "bundle" if holder.fixed else "registry", "loaded_at": c.loaded_at,
                "retrieval": retrieval, "watch_s": options.watch_s}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/score", response_model=ScoreResponse, openapi_extra=body_schema(ScoreRequest))
    def score(body: bytes = Depends(request_body)) -> Response:
        users, items = score_columns(body)
        s = holder.current.scorer  # the whole request uses this version
        r = s.score_pairs(users, items)
        if len(users) >= TRIM_AFTER_PAIRS:
            release_free_memory()
        return Response(score_json(s.version, s.tasks, r.scores, r.unknown_users, r.unknown_items),
                        media_type="application/json")

    @app.post("/recommend", response_model=RecommendResponse, openapi_extra=body_schema(RecommendRequest))
    def recommend(body: bytes = Depends(request_body)) -> RecommendResponse:
        req = parse_request(RecommendRequest, body)
        c = holder.current  # the whole request uses this version (scorer and index)
        s = c.scorer
        try:
            t = s.task_index(req.task)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        retrieve = c.retriever is not None if req.retrieval is None else req.retrieval
        if retrieve and req.candidates is not None:
            raise HTTPException(status_code=422, detail="'retrieval': true retrieves candidates from the catalogue; "
                                                        "give either 'candidates' or 'retrieval', not both")
        if retrieve and req.candidates is None:
            if c.retriever is None:
                raise HTTPException(status_code=409, detail="retrieval is off on this server; start it with "
                                                            "`moge serve --retrieval N` or leave 'retrieval' out")
            exclude = s.seen_items(req.user_id) if req.exclude_seen else None
            cand = c.retriever.candidates(req.user_id, options.retrieval, exclude)
        else:
            retrieve = False
            cand = s.candidates(req.user_id, req.candidates, req.exclude_seen)
        ranked = s.recommend(req.user_id, req.k, s.tasks[t], cand, exclude_seen=False)
        unknown_user = len(s.unknown_ids([req.user_id], [])[0]) > 0
        return RecommendResponse(
            version=s.version, user_id=req.user_id, task=s.tasks[t], unknown_user=unknown_user,
            n_candidates=len(cand), retrieved=retrieve,
            items=[RecommendedItem(rank=r + 1, item_id=i, scores=sc) for r, (i, sc) in enumerate(ranked)])

    @app.post("/reload")
    def reload(request: Request) -> dict:
        check_admin(request.headers, options.admin_token)
        try:
            return holder.reload()
        except ReloadError as e:
            raise HTTPException(status_code=e.status, detail=str(e)) from None

    paths = {r.path for r in app.routes}
    app.add_middleware(RequestGuard, limits=options.limits, metrics=metrics, work_paths={"/score", "/recommend"})
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=paths)  # outermost: refusals are counted too
    return app
