"""SplitAdam: dense parameters under Adam, embedding tables row-sparse under SparseAdam."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ml_core.train.sparse_adam import LazyAdam, SplitAdam, sparse_tables, split_adam


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 4)
        self.lin = nn.Linear(4, 1)

    def forward(self, ids):
        return self.lin(self.emb(ids)).sum()


def step(model, opt, ids):
    opt.zero_grad(set_to_none=True)
    model(ids).backward()
    opt.step()


def test_only_the_rows_a_batch_reads_move_and_the_dense_part_is_adam():
    model, ref = Tiny(), Tiny()
    opt = split_adam(model, [{"params": list(model.parameters())}], lr=0.1)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.1)
    assert isinstance(opt, SplitAdam) and model.emb.sparse
    before = model.emb.weight.detach().clone()
    step(model, opt, torch.tensor([3, 5, 5]))
    step(ref, ref_opt, torch.tensor([3, 5, 5]))
    moved = torch.nonzero((model.emb.weight - before).abs().sum(1)).flatten().tolist()
    assert moved == [3, 5]
    # step 1: lazy and dense Adam agree on every row (untouched rows have zero moments in both)
    torch.testing.assert_close(model.emb.weight, ref.emb.weight)
    torch.testing.assert_close(model.lin.weight, ref.lin.weight)
    step(model, opt, torch.tensor([7]))
    step(ref, ref_opt, torch.tensor([7]))
    # step 2: dense Adam moves rows 3 and 5 again by their momentum; lazy Adam leaves them
    assert not torch.equal(ref.emb.weight[3], model.emb.weight[3])
    after_first = before.clone()
    after_first[[3, 5]] = model.emb.weight.detach()[[3, 5]]
    torch.testing.assert_close(model.emb.weight.detach()[[3, 5]], after_first[[3, 5]])
    torch.testing.assert_close(model.lin.weight, ref.lin.weight)  # dense part: exactly Adam


def test_sparse_off_is_plain_adam():
    model = Tiny()
    opt = split_adam(model, [{"params": list(model.parameters())}], lr=0.1, sparse=False)
    assert type(opt) is torch.optim.Adam and not model.emb.sparse


def test_a_table_read_whole_names_the_table():
    model = Tiny()
    opt = split_adam(model, [{"params": list(model.parameters())}], lr=0.1)
    opt.zero_grad()
    (model.emb.weight.sum() + model(torch.tensor([1]))).backward()  # dense gradient into the table
    with pytest.raises(RuntimeError, match=r"emb\.weight got a dense gradient.*sparse_embeddings = false"):
        opt.step()


def test_group_options_weight_decay_and_max_norm():
    model = Tiny()
    model.renorm = nn.Embedding(5, 4, max_norm=1.0)  # renormalised in place: never sparse
    assert [id(t) for t in sparse_tables(model)] == [id(model.emb)]
    groups = [{"params": [model.lin.weight]}, {"params": [model.emb.weight, model.lin.bias], "lr": 0.5}]
    opt = split_adam(model, groups, lr=0.1, weight_decay=0.01, amsgrad=True)
    dense, sparse = opt.optimizers
    assert type(sparse) is LazyAdam and isinstance(sparse, torch.optim.SparseAdam)
    assert [g["lr"] for g in sparse.param_groups] == [0.5]  # the group's own lr kept
    assert "weight_decay" not in sparse.defaults
    assert [g["weight_decay"] for g in dense.param_groups] == [0.01, 0.01]
    assert dense.defaults["amsgrad"] and len(opt.param_groups) == 3


def test_state_routes_by_parameter_and_round_trips():
    model = Tiny()
    opt = split_adam(model, [{"params": list(model.parameters())}], lr=0.1)
    step(model, opt, torch.tensor([1, 2]))
    assert set(map(id, opt.state)) == {id(p) for p in model.parameters()} and len(opt.state) == 3
    assert opt.state[model.emb.weight]["exp_avg"].shape == (20, 4)
    saved = copy.deepcopy(opt.state_dict())
    weights = copy.deepcopy(model.state_dict())
    step(model, opt, torch.tensor([4]))
    opt.load_state_dict(copy.deepcopy(saved))  # torch keeps the given tensors: one copy each
    model.load_state_dict(weights)
    other = copy.deepcopy(model)
    other_opt = split_adam(other, [{"params": list(other.parameters())}], lr=0.1)
    other_opt.load_state_dict(copy.deepcopy(saved))
    step(model, opt, torch.tensor([4]))
    step(other, other_opt, torch.tensor([4]))
    torch.testing.assert_close(model.emb.weight, other.emb.weight)
    opt.state[model.lin.bias] = {"step": torch.tensor(9.0)}  # what warm start's restore does
    assert opt.optimizers[0].state[model.lin.bias]["step"] == 9
    with pytest.raises(KeyError):
        opt.state[nn.Parameter(torch.zeros(1))] = {}


def test_grad_scaler_unscales_sparse_tables():
    """The CUDA mixed-precision path (GradScaler) on CPU: sparse gradients are unscaled and stepped."""
    model, ref = Tiny(), Tiny()
    opt = split_adam(model, [{"params": list(model.parameters())}], lr=0.1)
    ref_opt = split_adam(ref, [{"params": list(ref.parameters())}], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt.zero_grad()
    scaler.scale(model(torch.tensor([2, 6]))).backward()
    scaler.step(opt)
    scaler.update()
    step(ref, ref_opt, torch.tensor([2, 6]))
    torch.testing.assert_close(model.emb.weight, ref.emb.weight)
    torch.testing.assert_close(model.lin.weight, ref.lin.weight)


@pytest.mark.parametrize("maximize", [False, True])
def test_lazy_adam_is_sparse_adam_to_the_bit(maximize):
    """The same parameters and moments as torch's SparseAdam after steps with repeated rows,
    rows absent from some steps and a state round trip; state dicts load into each other."""
    torch.manual_seed(1)
    tables = [nn.Embedding(50, 8, sparse=True) for _ in range(2)]
    tables[1].load_state_dict(tables[0].state_dict())
    ours = LazyAdam(tables[0].parameters(), lr=0.05, betas=(0.8, 0.95), eps=1e-6, maximize=maximize)
    ref = torch.optim.SparseAdam(tables[1].parameters(), lr=0.05, betas=(0.8, 0.95), eps=1e-6, maximize=maximize)
    gen = torch.Generator().manual_seed(2)
    for k in range(6):
        ids = torch.randint(0, 50 if k % 2 else 10, (64,), generator=gen)  # repeats; odd steps reach other rows
        target = torch.randn(64, 8, generator=gen)
        for table, opt in ((tables[0], ours), (tables[1], ref)):
            opt.zero_grad(set_to_none=True)
            ((table(ids) - target) ** 2).sum().backward()
            opt.step()
        if k == 2:  # a warm start's round trip: ours from torch's state and back
            ours.load_state_dict(copy.deepcopy(ref.state_dict()))
        assert torch.equal(tables[0].weight, tables[1].weight), k
    state, ref_state = ours.state[tables[0].weight], ref.state[tables[1].weight]
    assert state["step"] == ref_state["step"] == 6
    assert torch.equal(state["exp_avg"], ref_state["exp_avg"]) and torch.equal(state["exp_avg_sq"], ref_state["exp_avg_sq"])
