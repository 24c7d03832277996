"""splitmix64's output function, the one 64-bit mixer of the project (numba, inlined).

Three places turn integers into well-spread 64-bit values and must do it the same way on every
machine and run: the data versions' row hashes (:mod:`ml_core.data.versions`, FNV-1a finalised
by it), the held-out validation users (:func:`ml_core.train.validation.held_out_users`) and the
paired bootstrap's per-resample streams (:mod:`ml_core.eval.bootstrap`). Changing a constant here
changes every data version (tests pin them)."""

from __future__ import annotations

import numpy as np
from numba import njit

#: splitmix64's increment (2^64 / golden ratio).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True, inline="always")
def splitmix64(z):
    """splitmix64's output function of a uint64 state (all arithmetic mod 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def splitmix64_array(z):
    """:func:`splitmix64` of each element of a uint64 array (a new array)."""
    out = np.empty_like(z)
    for i in range(len(z)):
        out[i] = splitmix64(z[i])
    return out
