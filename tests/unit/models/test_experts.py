"""The expert pool's batched forward (ml_core/nn/dense.py ExpertPool) against its definition."""

from __future__ import annotations

import pytest
import torch

from ml_core.nn.dense import ExpertPool

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("n_experts,hidden", [(1, [8]), (4, [32, 32]), (3, [16, 8, 4])])
def test_batched_experts_equal_each_expert_on_its_own(n_experts, hidden):
    torch.manual_seed(n_experts)
    pool = ExpertPool(12, n_experts, hidden)
    x = torch.randn(50, 12, requires_grad=True)
    got = pool(x)
    want = torch.stack([f(x) for f in pool], dim=1)  # the definition: [f^1(x), ..., f^N(x)]
    assert got.shape == (50, n_experts, hidden[-1])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(want)
    grads = torch.autograd.grad((got * w).sum(), [x, *pool.parameters()])
    grads_want = torch.autograd.grad((want * w).sum(), [x, *pool.parameters()])
    for a, b in zip(grads, grads_want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
