"""CSR construction: the linear-time COO ordering is lexsort's, so matrices are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from ml_core.graph.csr import CSR
from ml_core.sorting import row_col_order, sorted_unique


@pytest.mark.parametrize("n, n_rows, n_cols", [(0, 3, 4), (1, 1, 1), (50, 2, 3), (5000, 300, 40), (5000, 40, 900)])
def test_row_col_order_is_lexsort(n, n_rows, n_cols):
    rng = np.random.default_rng(n + n_rows)
    rows, cols = rng.integers(0, n_rows, n), rng.integers(0, n_cols, n)  # many duplicate pairs: ties keep input order
    assert np.array_equal(row_col_order(rows, cols, n_rows, n_cols), np.lexsort((cols, rows)))


def test_from_coo_sums_duplicates_in_input_order_and_transposes():
    rows, cols = np.array([2, 0, 2, 0, 1]), np.array([1, 3, 1, 0, 2])
    w = np.array([0.5, 1.0, 0.25, 2.0, 3.0], np.float32)
    m = CSR.from_coo(rows, cols, w, 3, 4)
    assert m.indptr.tolist() == [0, 2, 3, 4] and m.indices.tolist() == [0, 3, 2, 1]
    assert m.weights.tolist() == [2.0, 1.0, 3.0, 0.75]
    t = m.transpose()
    assert t.to_scipy().toarray().tolist() == m.to_scipy().toarray().T.tolist()
    with pytest.raises(ValueError, match="out of range"):
        CSR.from_coo(np.array([3]), np.array([0]), None, 3, 4)


@pytest.mark.parametrize("values", [np.array([], np.int64), np.array([5]), np.array([3, 1, 3, 2, 1]),
                                    np.random.default_rng(0).integers(-50, 50, 1000)])
def test_sorted_unique_is_np_unique(values):
    assert np.array_equal(sorted_unique(values), np.unique(values))
