"""Request bodies (ml_core/serving/requests.py): a large /score body validated in pieces (both
forms: pairs, and user_ids + item_ids) accepts exactly what the whole schema accepts, with the
same reasons for what it refuses."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ml_core.serving import requests as R
from ml_core.serving.guard import Rejected


def whole(body: bytes):
    try:
        return R.parse_request(R.ScoreRequest, body).columns()
    except Rejected as e:
        return e.reason


def pieces(body: bytes):
    try:
        return R.score_columns(body)
    except Rejected as e:
        return e.reason


def same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return all(np.array_equal(x, y) and x.dtype == y.dtype == np.int64 for x, y in zip(a, b, strict=True))


def body_of(pairs, sep=", ") -> bytes:
    return ('{"pairs": [' + sep.join(f"[{u}, {i}]" for u, i in pairs) + "]}").encode()


def columns_of(pairs, sep=", ") -> bytes:
    users, items = (sep.join(str(p[k]) for p in pairs) for k in (0, 1))
    return ('{"user_ids": [' + users + '],' + sep[1:] + '"item_ids": [' + items + "]}").encode()


#: (name, the text of the "pairs" array's items) with a faulty pair or separator in the middle
FAULTS = [("trailing comma", ""), ("NaN", "[NaN, 2]"), ("Infinity", "[1, Infinity]"), ("1e400", "[1e400, 2]"),
          ("float", "[1.5, 2]"), ("string", '["1", 2]'), ("three ids", "[1, 2, 3]"), ("one id", "[1]"),
          ("nested", "[[1], 2]"), ("over int64", f"[{2**63}, 1]"), ("under int64", f"[{-(2**63) - 1}, 1]"),
          ("object", '{"a": 1}'), ("bracket in a string", '"],["'), ("truncated", "[1, 2")]


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(R, "PIECE_BYTES", 256)  # many pieces from small bodies


def test_valid_bodies_give_the_same_ids(small_pieces):
    rng = random.Random(0)
    for n in (1, 7, 50, 400):
        pairs = [(rng.randrange(-(2**63), 2**63), rng.randrange(10**6)) for _ in range(n)]
        for sep in (", ", ",", ",\n  "):
            for body in (body_of(pairs, sep), columns_of(pairs, sep)):
                assert same(pieces(body), whole(body)), (n, sep, body[:40])
                u, i = pieces(body)
                assert u.tolist() == [p[0] for p in pairs] and i.tolist() == [p[1] for p in pairs]
    assert set(R.body_pieces(columns_of(pairs))) == {"user_ids", "item_ids"}
    spaced = b'\n { "pairs" :\t[' + body_of(pairs)[11:-2] + b"] }\n"
    assert len(R.body_pieces(spaced)["pairs"][0]) > 1 and same(pieces(spaced), whole(spaced))


@pytest.mark.parametrize("name, bad", FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_faulty_bodies_are_refused_for_the_same_reason(small_pieces, name, bad, where):
    items = [f"[{j}, {j + 1}]" for j in range(200)]
    items.insert(int(where * len(items)), bad.rstrip(", ") if name != "trailing comma" else "")  # "": ", ," "[, " ", ]"
    body = ('{"pairs": [' + ", ".join(items) + "]}").encode()
    got, want = pieces(body), whole(body)
    assert isinstance(want, str), "the fault must be refused"
    assert got == want, (name, where, got, want)


#: faults of an id list (the columns form)
ID_FAULTS = [("trailing comma", ""), ("NaN", "NaN"), ("Infinity", "-Infinity"), ("1e400", "1e400"), ("float", "1.5"),
             ("string", '"1"'), ("list", "[1]"), ("over int64", str(2**63)), ("null", "null"), ("comma", ",")]


@pytest.mark.parametrize("name, bad", ID_FAULTS, ids=[f[0] for f in ID_FAULTS])
@pytest.mark.parametrize("key", ["user_ids", "item_ids"])
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_faulty_id_lists_are_refused_for_the_same_reason(small_pieces, name, bad, key, where):
    ids = {k: [str(j) for j in range(300)] for k in ("user_ids", "item_ids")}
    ids[key].insert(int(where * 300), bad)
    body = json.dumps({k: "@" + ", ".join(v) + "@" for k, v in ids.items()}).replace('"@', "[").replace('@"', "]")
    body = body.replace('\\"', '"').encode()
    got, want = pieces(body), whole(body)
    assert isinstance(want, str) and got == want, (name, key, where, got, want)


def test_columns_of_different_lengths_or_other_order(small_pieces):
    body = columns_of([(j, j) for j in range(200)]).replace(b", 199]}", b"]}")
    assert pieces(body) == whole(body) == "validation"
    reversed_keys = ('{"item_ids": [' + ", ".join(map(str, range(200))) + '], "user_ids": ['
                     + ", ".join(map(str, range(200))) + "]}").encode()
    assert R.body_pieces(reversed_keys) is None and same(pieces(reversed_keys), whole(reversed_keys))


@pytest.mark.parametrize("body", [b'{"pairs": [[1, 2]], "junk": [1]}', b'{"pairs": [[1, 2]]}\x0c',
                                  b'\x0c{"pairs": [[1, 2]]}', b'{"pairs": [ ]}', b'{"pairs": [[1, 2]], "user_ids": [1]}'])
def test_other_shapes(small_pieces, body):
    """Refused, for the whole schema's reason or as invalid JSON (a piece that is not an array of pairs)."""
    body = body.replace(b"[[1, 2]]", body_of([(j, j) for j in range(100)])[10:-1])
    got, want = pieces(body), whole(body)
    assert isinstance(want, str) and got in (want, "invalid_json"), (got, want)


def test_a_key_given_twice_is_refused(small_pieces):
    """The one difference: the whole schema takes the last of two "pairs" keys, the pieces refuse the body."""
    body = b'{"pairs": [], "pairs": ' + body_of([(j, j) for j in range(100)])[10:]
    assert not isinstance(whole(body), str) and pieces(body) == "invalid_json"


@pytest.mark.parametrize("form", [body_of, columns_of])
def test_the_pair_limit_and_its_message(form):
    body = form([(1, 2)] * (R.MAX_PAIRS + 1))
    with pytest.raises(Rejected) as e:
        R.score_columns(body)
    assert e.value.status == 422 and "at most 100000" in json.dumps(e.value.message)
    u, i = R.score_columns(form([(1, 2)] * R.MAX_PAIRS))
    assert len(u) == len(i) == R.MAX_PAIRS
