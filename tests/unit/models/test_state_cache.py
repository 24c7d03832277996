"""MoGE trained from cached layer states (ml_core/models/state_cache.py): on full neighbourhoods
the one-hop path equals the exact L-hop one; training reaches every layer, refreshes on
schedule and leaves inference alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml_core.batching import BatchMaker
from ml_core.models.moge import MoGE
from tests.helpers import planted_day

EVERY = (1000, 1000)  # fan-outs above every degree of the planted day: every neighbour is sampled


def _model(mspec, ctx, refresh: int) -> MoGE:
    torch.manual_seed(0)
    model = MoGE(mspec, state_cache=refresh)
    model.prepare([ctx])
    return model.train()


def test_one_hop_path_over_cached_states_equals_the_exact_path_on_full_neighbourhoods():
    planted = planted_day(seed=1, fanouts=EVERY)
    model = _model(planted.mspec, planted.ctx, refresh=10)
    assert model.training_fanouts(list(EVERY)) == [EVERY[0]]
    rows = np.arange(48)
    one_hop = BatchMaker(planted.ctx, model.training_fanouts(list(EVERY)), need_graph=True).make(rows, torch.Generator().manual_seed(0))
    two_hop = BatchMaker(planted.ctx, list(EVERY), need_graph=True).make(rows, torch.Generator().manual_seed(0))
    assert all(one_hop.channels[c].num_nodes < two_hop.channels[c].num_nodes for c in ("bipartite",))
    with torch.no_grad():
        cached = model.mgnn.representations(one_hop, model.state_cache.of(model.mgnn, planted.ctx.day))
        exact = model.mgnn.representations(two_hop)
    for k in ("h_u", "h_i", "s_u", "s_i"):
        torch.testing.assert_close(cached[k], exact[k], rtol=1e-5, atol=1e-6)
    assert model.state_cache.refreshes == 1


def test_training_from_the_cache_reaches_every_layer_refreshes_on_schedule_and_leaves_inference_alone():
    planted = planted_day(seed=2, fanouts=(4, 3))
    model = _model(planted.mspec, planted.ctx, refresh=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    maker = BatchMaker(planted.ctx, model.training_fanouts([4, 3]), need_graph=True)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        batch = maker.make(np.arange(step * 32, step * 32 + 32), gen)
        _, loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        for name, layers in model.mgnn.layers.items():  # both layers of every channel get gradients
            for layer in layers:
                assert layer.att.lin.weight.grad is not None and layer.att.lin.weight.grad.abs().sum() > 0, name
        opt.step()
    assert model.state_cache.step == 3 and model.state_cache.refreshes == 2  # steps 0 and 2
    model.eval()  # inference: the exact path on L-hop batches, the cache untouched
    exact = BatchMaker(planted.ctx, [4, 3], need_graph=True).make(np.arange(16), torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.isfinite(model(exact)).all()
    assert model.state_cache.step == 3 and model.state_cache.refreshes == 2


def test_a_batch_of_a_day_the_cache_was_not_given_is_refused_and_bad_options_too():
    planted = planted_day(seed=3, fanouts=(4, 3))
    model = _model(planted.mspec, planted.ctx, refresh=5)
    model.state_cache.prepare([])
    batch = BatchMaker(planted.ctx, [4], need_graph=True).make(np.arange(8), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no training day"):
        model.compute_loss(batch)
    with pytest.raises(ValueError, match="state_cache"):
        MoGE(planted.mspec, state_cache=-1)
    with pytest.raises(ValueError, match="state_cache"):
        MoGE(planted.mspec, state_cache=5, use_mgnn=False)
