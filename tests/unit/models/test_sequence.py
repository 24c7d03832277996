"""The behaviour-sequence block (ml_core/nn/sequence.py): DIN's target attention."""

from __future__ import annotations

import pytest
import torch

from ml_core.contracts.batch import Sequences
from ml_core.nn.sequence import TargetAttention

pytestmark = pytest.mark.unit


def _inputs(seed: int, b: int = 9, n: int = 6, n_items: int = 30):
    g = torch.Generator().manual_seed(seed)
    behaviors = torch.randint(1, 5, (b, n), generator=g)
    behaviors[0] = 0  # a user with no history
    behaviors[1, 3:] = 0  # a short one
    seq = Sequences(torch.randint(0, n_items, (b, n), generator=g), behaviors, torch.randint(0, 32, (b, n), generator=g))
    return seq, torch.randint(0, n_items, (b,), generator=g)


def _direct(block: TargetAttention, seq: Sequences, target: torch.Tensor) -> torch.Tensor:
    """The module docstring's formula as written: the MLP of ``[e || v || e - v || e * v]``."""
    e = block.items.id_emb(seq.items) + block.behavior(seq.behaviors) + block.age(seq.ages)
    v = block.items.id_emb(target).unsqueeze(1).expand_as(e)
    alpha = block.score(torch.cat([e, v, e - v, e * v], dim=-1)).squeeze(-1) * seq.mask.float()
    return torch.einsum("bn,bnd->bd", alpha, e)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_split_first_layer_equals_the_concatenated_input(seed):
    torch.manual_seed(seed)
    block = TargetAttention(30, 8)
    seq, target = _inputs(seed)
    got = block(seq, target)
    torch.testing.assert_close(got, _direct(block, seq, target), rtol=1e-5, atol=1e-6)
    assert torch.equal(got[0], torch.zeros(8))  # no history: no interest
    (g_split,) = torch.autograd.grad(got.sum(), block.score[0].weight)
    (g_direct,) = torch.autograd.grad(_direct(block, seq, target).sum(), block.score[0].weight)
    torch.testing.assert_close(g_split, g_direct, rtol=1e-5, atol=1e-6)


def test_padding_events_do_not_count():
    torch.manual_seed(2)
    block = TargetAttention(30, 8)
    seq, target = _inputs(3)
    changed = Sequences(seq.items.clone(), seq.behaviors, seq.ages.clone())
    changed.items[1, 3:] = 7  # row 1's padded slots
    changed.ages[1, 3:] = 5
    torch.testing.assert_close(block(changed, target), block(seq, target))
