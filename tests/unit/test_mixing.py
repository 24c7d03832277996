"""ml_core.mixing: the project's one splitmix64 mixer (data versions, validation users, bootstrap)."""

import numpy as np

from ml_core.mixing import GOLDEN, splitmix64, splitmix64_array


def test_splitmix64_matches_the_reference_generator():
    # SplitMix64 seeded with 0 (Steele, Lea, Flood 2014; Vigna's splitmix64.c): state += golden, then mix
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    state = np.uint64(0)
    with np.errstate(over="ignore"):
        for want in expected:
            state = state + GOLDEN
            assert int(splitmix64(state)) == want
    z = np.array([1, 2, 2**63, 2**64 - 1], np.uint64)
    assert splitmix64_array(z).tolist() == [int(splitmix64(v)) for v in z]
