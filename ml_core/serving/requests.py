"""The bodies of ``/score`` and ``/recommend``: their schemas, and how they are parsed without
holding the interpreter for long.

Every body is parsed in the request's worker thread (:func:`parse_request`), but pydantic's
parser holds the interpreter lock (GIL) for the whole body: a 100,000-pair ``{"pairs": ...}``
body (3.8 MB) took 80-130 ms on the shared 2-core machine, during which no other thread of the
server, ``/health`` included, could run. So a large body of one of the two shapes
``{"pairs": [...]}`` and ``{"user_ids": [...], "item_ids": [...]}`` is validated in pieces
(:func:`score_columns`): each array is cut after an item (a pair at a ``],``, an id at a ``,``)
into pieces of about :data:`PIECE_BYTES`, each validated on its own (a few ms), and other threads
run between two pieces. Pieces of a valid array are valid arrays, and valid pieces joined by
commas are a valid array, so the pieces accept the bodies the whole schema accepts, and only
those but one: a body with a key twice, which they refuse (the whole schema took the last);
tests/unit/serving/test_requests.py compares the two. A body in another shape (other keys or
key order, whitespace between ``]`` and ``,``) is validated whole. Per-id range checks are done once over the list (``min``/``max``), not per
element: the per-element constraint tripled the cost of an id list.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError, model_validator

from ml_core.serving.guard import Rejected

#: Largest request /score accepts (bigger batches: ``moge score``).
MAX_PAIRS = 100_000
#: Largest k of /recommend.
MAX_K = 1000
#: Longest task name /recommend accepts (the model's task names are short words).
MAX_TASK_CHARS = 64
#: Validation errors a 422 lists (the rest are counted), and the longest message of each.
MAX_ERRORS, MAX_ERROR_CHARS = 5, 160
#: Raw ids are 64-bit signed integers.
ID_MIN, ID_MAX = -(2**63), 2**63 - 1
#: A ``pairs`` body larger than this is validated in pieces of about this size (~3,000 pairs, ~2 ms each).
PIECE_BYTES = 64 << 10


def ids_in_range(ids: list[int]) -> list[int]:
    if ids and (min(ids) < ID_MIN or max(ids) > ID_MAX):
        raise ValueError(f"ids must be 64-bit signed integers ({ID_MIN} .. {ID_MAX})")
    return ids


def pairs_in_range(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ids_in_range(list(itertools.chain.from_iterable(pairs)))
    return pairs


RawId = Annotated[StrictInt, Field(ge=ID_MIN, le=ID_MAX)]
IdList = Annotated[list[StrictInt], AfterValidator(ids_in_range)]
PairList = Annotated[list[tuple[StrictInt, StrictInt]], AfterValidator(pairs_in_range)]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: PairList | None = Field(None, max_length=MAX_PAIRS, description="[[user_id, item_id], ...]")
    user_ids: IdList | None = Field(None, max_length=MAX_PAIRS, description="with item_ids: pair j = (user_ids[j], item_ids[j])")
    item_ids: IdList | None = Field(None, max_length=MAX_PAIRS)

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
        return self

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """The requested user and item ids, pair by pair (int64)."""
        if self.pairs is not None:
            flat = np.fromiter(itertools.chain.from_iterable(self.pairs), np.int64, count=2 * len(self.pairs))
            return flat[0::2], flat[1::2]
        return np.asarray(self.user_ids, np.int64), np.asarray(self.item_ids, np.int64)


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
    task: str | None = Field(None, max_length=MAX_TASK_CHARS, description="task to rank by (default: the model's last task)")
    candidates: IdList | None = Field(None, min_length=1, max_length=MAX_PAIRS,
                                      description="items to rank (default: every item of the snapshot)")
    exclude_seen: bool = True
    retrieval: bool | None = Field(None, description="rank the ANN index's candidates (true) or every item (false); "
                                                     "default: the server's setting (moge serve --retrieval N)")


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
    retrieved: bool
    items: list[RecommendedItem]


Req = TypeVar("Req", bound=BaseModel)


def short_errors(errors: list[dict]) -> list[dict]:
    """At most :data:`MAX_ERRORS` validation errors as ``{loc, msg, type}``, each part cut short:
    a 422 never repeats the input (a 100 MB field came back whole before)."""
    out = [{"loc": [x if isinstance(x, int) else str(x)[:MAX_TASK_CHARS] for x in e["loc"]][:8],
            "msg": str(e["msg"])[:MAX_ERROR_CHARS], "type": e["type"]} for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append({"loc": [], "msg": f"and {len(errors) - MAX_ERRORS} more errors", "type": "truncated"})
    return out


def rejection(e: ValidationError, loc_of=lambda loc: loc) -> Rejected:
    """The 422 of a validation error: reason ``non_finite``, ``invalid_json`` or ``validation``
    with :func:`short_errors` (``loc_of`` maps each error's location)."""
    errors = [{**x, "loc": loc_of(tuple(x["loc"]))} for x in e.errors(include_url=False, include_context=False)]
    # pydantic's JSON parser reads NaN, Infinity and 1e400 as non-finite floats, which no field
    # accepts: the error's input says so (the input itself is never answered)
    if any(isinstance(x.get("input"), float) and not math.isfinite(x["input"]) for x in errors):
        return Rejected(422, "non_finite", "NaN, Infinity and numbers beyond float range are not accepted")
    return Rejected(422, "invalid_json" if errors[0]["type"] == "json_invalid" else "validation", short_errors(errors))


def parse_request(model: type[Req], body: bytes) -> Req:
    """``body`` (JSON bytes) validated as ``model``; otherwise :class:`Rejected` (:func:`rejection`).
    Called in the request's worker thread, so a large body is parsed off the event loop."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise rejection(e) from None


def body_schema(model: type[BaseModel]) -> dict:
    """The OpenAPI ``requestBody`` of a route that parses its body with :func:`parse_request`."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


_WS = rb"[ \t\n\r]*"  # JSON's whitespace (not regex's \s, which also matches \x0b and \x0c)


def _key(name: bytes) -> bytes:
    return _WS + rb'"' + name + rb'"' + _WS + rb":" + _WS + rb"\["


_PAIRS_HEAD = re.compile(_WS + rb"\{" + _key(b"pairs"))
_COLUMNS_HEAD = re.compile(_WS + rb"\{" + _key(b"user_ids"))
_COLUMNS_MIDDLE = re.compile(rb"\]" + _WS + rb"," + _key(b"item_ids"))
_TAIL = re.compile(rb"\]" + _WS + rb"\}" + _WS + rb"\Z")
#: (how a piece is validated, the separator it is cut at, the bytes of the separator it keeps, ids per item)
_PAIRS = (TypeAdapter(PairList), b"],", 1, 2)
_IDS = (TypeAdapter(IdList), b",", 0, 1)


def _cut(body: bytes, start: int, end: int, sep: bytes, keep: int) -> list[memoryview]:
    """``body[start:end]`` (an array's items) cut at a ``sep`` after every :data:`PIECE_BYTES`."""
    view, pieces = memoryview(body), []
    while start < end:
        cut = body.find(sep, min(start + PIECE_BYTES, end), end)
        stop = end if cut < 0 else cut + keep
        pieces.append(view[start:stop])
        start = stop + len(sep) - keep
    return pieces


def body_pieces(body: bytes) -> dict[str, tuple[list[memoryview], tuple]] | None:
    """The arrays of a /score body larger than :data:`PIECE_BYTES`, ``{"pairs": [...]}`` or
    ``{"user_ids": [...], "item_ids": [...]}`` (in that order), cut into pieces of about that
    size: ``{key: (pieces, how they are validated)}``; None for any other shape, or a small body."""
    if len(body) <= PIECE_BYTES or (tail := _TAIL.search(body, max(0, len(body) - 64))) is None:
        return None
    if (head := _PAIRS_HEAD.match(body)) is not None and head.end() <= tail.start():
        return {"pairs": (_cut(body, head.end(), tail.start(), *_PAIRS[1:3]), _PAIRS)}
    head = _COLUMNS_HEAD.match(body)
    middle = _COLUMNS_MIDDLE.search(body, head.end(), tail.start() + 1) if head is not None else None
    if middle is None:  # (the first "], "item_ids": [": a valid user_ids array holds no "]")
        return None
    return {"user_ids": (_cut(body, head.end(), middle.start(), *_IDS[1:3]), _IDS),
            "item_ids": (_cut(body, middle.end(), tail.start(), *_IDS[1:3]), _IDS)}


def _validated(key: str, pieces: list[memoryview], how: tuple) -> np.ndarray:
    """The ids of the array ``key`` validated piece by piece (``[n * width]`` int64)."""
    adapter, _, _, width = how
    flat, n = [], 0
    for piece in pieces:
        try:
            items = adapter.validate_json(b"[" + piece + b"]")
        except ValidationError as e:
            raise rejection(e, lambda loc, n=n: (key, loc[0] + n, *loc[1:]) if loc and isinstance(loc[0], int)
                            else (key, *loc)) from None
        if not items and len(pieces) > 1:  # whitespace after a comma: "[1, 2], ]"
            raise Rejected(422, "invalid_json", [{"loc": [key], "msg": f"Invalid JSON: a trailing comma in '{key}'",
                                                  "type": "json_invalid"}])
        n += len(items)
        if n > MAX_PAIRS:
            raise Rejected(422, "validation", [{"loc": [key], "msg": f"List should have at most {MAX_PAIRS} items "
                                                "after validation", "type": "too_long"}])
        ids = itertools.chain.from_iterable(items) if width > 1 else items
        flat.append(np.fromiter(ids, np.int64, count=width * len(items)))
    return np.concatenate(flat) if flat else np.zeros(0, np.int64)


def score_columns(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The user and item ids of a /score ``body`` (int64 arrays, pair by pair), validated as
    :class:`ScoreRequest` (a large body in pieces: see the module docstring); otherwise
    :class:`Rejected` 422."""
    arrays = body_pieces(body)
    if arrays is None:
        return parse_request(ScoreRequest, body).columns()
    ids = {key: _validated(key, pieces, how) for key, (pieces, how) in arrays.items()}
    if "pairs" in ids:
        users, items = ids["pairs"][0::2].copy(), ids["pairs"][1::2].copy()
    else:
        users, items = ids["user_ids"], ids["item_ids"]
    if len(users) == 0 or len(users) != len(items):  # the whole schema's own message
        return parse_request(ScoreRequest, body).columns()
    return users, items
