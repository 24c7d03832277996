"""HTTP serving of the deployed model (FastAPI).

``create_app(path, registry=...)`` serves either the registry's production version (``path`` =
the storage root; ``registry`` = the ``[registry]`` section: the local store under the root by
default, or the shared MLflow registry) or one fixed bundle (``path`` = a bundle directory)::

    GET  /health       liveness + the version being served
    GET  /model        version, model, tasks, training days, metrics (from the manifest)
    POST /score        {"pairs": [[user, item], ...]} or {"user_ids": [...], "item_ids": [...]}
    POST /recommend    {"user_id": u, "k": 10, "task": "purchase", "candidates": null, "exclude_seen": true}
    POST /reload       re-read the production pointer and swap to its version

Hot swap: a request takes the current :class:`Scorer` once, at its start, and uses it to the end;
``/reload`` builds the new scorer completely before replacing the reference, so in-flight
requests finish on the old version and no request sees a half-loaded model. A failed reload
keeps serving the old version.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from ml_core.bundle_registry import open_bundle_registry
from ml_core.registry_config import RegistryConfig
from ml_core.serving.scorer import Scorer

#: Largest request /score accepts (bigger batches: ``moge score``).
MAX_PAIRS = 100_000
#: Largest k of /recommend.
MAX_K = 1000

RawId = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[tuple[RawId, RawId]] | None = Field(None, description="[[user_id, item_id], ...]")
    user_ids: list[RawId] | None = Field(None, description="with item_ids: pair j = (user_ids[j], item_ids[j])")
    item_ids: list[RawId] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ScoreRequest:
        if self.pairs is not None:
            if self.user_ids is not None or self.item_ids is not None:
                raise ValueError("give either 'pairs' or 'user_ids' + 'item_ids', not both")
            n = len(self.pairs)
        else:
            if self.user_ids is None or self.item_ids is None:
                raise ValueError("give 'pairs' ([[user_id, item_id], ...]) or both 'user_ids' and 'item_ids'")
            if len(self.user_ids) != len(self.item_ids):
                raise ValueError(f"'user_ids' has {len(self.user_ids)} entries but 'item_ids' has {len(self.item_ids)}")
            n = len(self.user_ids)
        if n == 0:
            raise ValueError("no pairs to score: the request is empty")
        if n > MAX_PAIRS:
            raise ValueError(f"{n} pairs is more than {MAX_PAIRS} per request; use `moge score` for batch scoring")
        return self

    def columns(self) -> tuple[list[int], list[int]]:
        if self.pairs is not None:
            return [p[0] for p in self.pairs], [p[1] for p in self.pairs]
        return list(self.user_ids), list(self.item_ids)


class ScoreResponse(BaseModel):
    version: str
    tasks: list[str]
    scores: list[list[float]]
    unknown_users: list[int]
    unknown_items: list[int]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: RawId
    k: int = Field(10, ge=1, le=MAX_K, description=f"number of items, 1..{MAX_K}")
    task: str | None = Field(None, description="task to rank by (default: the model's last task)")
    candidates: list[RawId] | None = Field(None, min_length=1, max_length=MAX_PAIRS,
                                           description="items to rank (default: every item of the snapshot)")
    exclude_seen: bool = True


class RecommendedItem(BaseModel):
    rank: int
    item_id: int
    scores: dict[str, float]


class RecommendResponse(BaseModel):
    version: str
    user_id: int
    task: str
    unknown_user: bool
    n_candidates: int
    items: list[RecommendedItem]


class _Current:
    """The scorer being served; replaced as a whole (a reference swap) under ``lock``."""

    def __init__(self, loader, scorer: Scorer):
        self.loader = loader
        self.scorer = scorer
        self.loaded_at = time.time()
        self.lock = threading.Lock()


def create_app(root_or_bundle: str | Path, batch_size: int = 4096, threads: int = 0,
               registry: RegistryConfig | None = None) -> FastAPI:
    """App serving the registry's production model under ``root_or_bundle`` (a storage root)
    or, when the path is a bundle directory (has ``model.pt``), that bundle. ``registry``: the
    ``[registry]`` section (default: the local store under the root).

    ``threads``: torch CPU threads per process (0 = torch's default); requests run concurrently
    in the server's thread pool, so 1-2 is usually best on a shared CPU."""
    path = Path(root_or_bundle)
    fixed = (path / "model.pt").exists()
    if fixed:
        loader = lambda: Scorer.from_bundle(path, batch_size=batch_size, threads=threads)
    else:
        store = open_bundle_registry(registry, path)
        loader = lambda: Scorer.from_registry(path, registry, batch_size=batch_size, threads=threads)
    current = _Current(loader, loader())
    app = FastAPI(title="MoGE recommendation service",
                  description="Multi-task scores and top-k recommendations from the deployed model bundle.")
    app.state.current = current

    @app.get("/health")
    def health() -> dict:
        s = current.scorer
        return {"status": "ok", "version": s.version, "model": s.meta.get("model"), "loaded_at": current.loaded_at}

    @app.get("/model")
    def model() -> dict:
        s = current.scorer
        return {**s.info(), "source": "bundle" if fixed else "registry", "loaded_at": current.loaded_at}

    @app.post("/score", response_model=ScoreResponse)
    def score(req: ScoreRequest) -> ScoreResponse:
        s = current.scorer  # the whole request uses this version
        users, items = req.columns()
        r = s.score_pairs(users, items)
        return ScoreResponse(version=s.version, tasks=s.tasks, scores=r.scores.tolist(),
                             unknown_users=r.unknown_users, unknown_items=r.unknown_items)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> RecommendResponse:
        s = current.scorer
        try:
            t = s.task_index(req.task)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        cand = s.candidates(req.user_id, req.candidates, req.exclude_seen)
        ranked = s.recommend(req.user_id, req.k, s.tasks[t], cand, exclude_seen=False)
        unknown_user = len(s.unknown_ids([req.user_id], [])[0]) > 0
        return RecommendResponse(
            version=s.version, user_id=req.user_id, task=s.tasks[t], unknown_user=unknown_user,
            n_candidates=len(cand),
            items=[RecommendedItem(rank=r + 1, item_id=i, scores=sc) for r, (i, sc) in enumerate(ranked)])

    @app.post("/reload")
    def reload() -> dict:
        if fixed:
            raise HTTPException(status_code=409, detail=f"serving the fixed bundle {path}; start the service "
                                                        "with a storage root to follow the production pointer")
        with current.lock:
            old = current.scorer
            prod = store.production()
            if prod is None:
                raise HTTPException(status_code=503, detail=f"no production pointer in {store.location}; "
                                                            f"still serving {old.version}")
            if prod["version"] == old.version:
                return {"version": old.version, "previous": old.version, "changed": False}
            try:
                new = current.loader()
            except Exception as e:
                raise HTTPException(status_code=503, detail=f"reload of {prod['version']} failed ({e}); "
                                                            f"still serving {old.version}") from None
            current.scorer, current.loaded_at = new, time.time()
        return {"version": new.version, "previous": old.version, "changed": True}

    return app
