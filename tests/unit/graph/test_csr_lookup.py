"""csr.lookup: a raw id's row in sorted ids, by binary search or by a direct-address table."""

import numpy as np
import pytest

from ml_core.graph import csr
from ml_core.graph.csr import IdIndex, lookup


def _reference(sorted_ids, raw):
    pos = np.minimum(np.searchsorted(sorted_ids, raw), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == raw, pos, -1)


@pytest.mark.parametrize("spread", [3, 10_000])  # compact ids (direct table) and sparse ones (search)
def test_lookup_places_every_id_or_minus_one_whichever_path(spread):
    rng = np.random.default_rng(spread)
    ids = np.unique(rng.integers(-50, 200_000 * spread, 200_000)).astype(np.int64)
    raw = np.concatenate([rng.choice(ids, 150_000), rng.integers(-10**6, 10**9, 50_000), [ids[0], ids[-1]]])
    dense = ids[-1] - ids[0] < min(csr._DENSE_SPAN_PER_ID * (len(ids) + len(raw)), csr._DENSE_MAX_SPAN)
    assert dense == (spread == 3)
    out = lookup(ids, raw)
    assert out.dtype == np.int64 and np.array_equal(out, _reference(ids, raw))
    assert np.array_equal(ids[out[out >= 0]], raw[out >= 0])
    small = raw[:100]  # a serving request: binary search
    assert np.array_equal(lookup(ids, small), _reference(ids, small))
    index = IdIndex(ids)  # built once, looked up per request: a table exactly where lookup uses one
    assert (index._table is not None) == (ids[-1] - ids[0] < csr._DENSE_SPAN_PER_ID * len(ids))
    for q in (small, raw, raw[:0]):
        assert np.array_equal(index.rows(q), _reference(ids, q))
