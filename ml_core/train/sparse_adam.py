"""Adam with row-sparse embedding updates: what makes a step's cost independent of the catalogue.

A dense ``torch.optim.Adam`` over a model whose id tables hold a row per user and item touches
every row on every step: at the ``large`` preset (600k user and 420k item rows of 64, 65M
parameters) one step of 256 samples spent 307 ms in the backward pass (materialising and zeroing
the tables' dense gradients) and 444 ms in the Adam update, against 42 ms of forward pass.

:class:`SplitAdam` keeps Adam's update for the dense parameters (layers, experts, gates, small
vectors) and gives the embedding tables row-sparse gradients (``nn.Embedding(sparse=True)``)
updated by :class:`LazyAdam` (``torch.optim.SparseAdam``'s update, computed faster): only the rows a batch reads move, and only their moments
("lazy Adam", as TensorFlow Addons' ``LazyAdam``). The difference from dense Adam: a row absent
from a batch is not moved by its stale momentum, and its moments decay only when it is read.
``weight_decay`` applies to the dense parameters only (decaying a table whole on every step
erases rare users; the models penalise the rows a batch reads instead,
:func:`ml_core.nn.losses.l2_penalty`).

It is what ``train.optimizer = "adam"`` builds (``optimizer_args = {sparse_embeddings = false}``
restores dense Adam everywhere). Dense Adam is kept for the tables under DDP with the NCCL
backend, whose sparse all-reduce support is not something this project has tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, MutableMapping

import torch
from torch import nn


def sparse_tables(model: nn.Module) -> list[nn.Embedding]:
    """The model's embedding tables that can take row-sparse gradients: every ``nn.Embedding``
    without ``max_norm`` (renormalising rows in place is not a lookup). A model that reads a
    table whole with gradient (not through the module) would make its gradient dense:
    :meth:`SplitAdam.step` then names the table."""
    seen: set[int] = set()
    out = []
    for m in model.modules():
        if isinstance(m, nn.Embedding) and m.max_norm is None and id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


#: The Adam keyword arguments SparseAdam also takes (the rest, e.g. ``amsgrad``, apply to the dense part).
_SPARSE_ADAM_ARGS = ("betas", "eps", "maximize")


class _RoutedState(MutableMapping):
    """``optimizer.state`` of a :class:`SplitAdam`: each parameter's entry lives in the inner
    optimizer that owns the parameter (what warm start reads and restores by parameter)."""

    def __init__(self, owner: SplitAdam):
        self._owner = owner

    def _inner(self, p) -> torch.optim.Optimizer:
        try:
            return self._owner._by_param[id(p)]
        except KeyError:
            raise KeyError("parameter not optimised by this SplitAdam") from None

    def __getitem__(self, p):
        inner = self._inner(p)
        if p not in inner.state:
            raise KeyError(p)
        return inner.state[p]

    def __setitem__(self, p, value) -> None:
        self._inner(p).state[p] = value

    def __delitem__(self, p) -> None:
        del self._inner(p).state[p]

    def __iter__(self) -> Iterator:
        for inner in self._owner.optimizers:
            yield from list(inner.state.keys())

    def __len__(self) -> int:
        return sum(len(o.state) for o in self._owner.optimizers)


class LazyAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam``'s update (same formulas, same state: ``step``, ``exp_avg``,
    ``exp_avg_sq``) with the rows a gradient touches read by ``index_select`` and written by
    ``index_add_``: torch's version masks the dense moments with the sparse gradient
    (``sparse_mask``) and adds sparse tensors into dense ones, which at the ``large`` preset cost
    36 ms of a 140 ms MoGE step against ~10 ms here. Equal to SparseAdam's parameters to the bit
    (test)."""

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("LazyAdam.step takes no closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = float(group["lr"]), group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("LazyAdam takes sparse gradients only (nn.Embedding(sparse=True))")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad = (-p.grad if group.get("maximize", False) else p.grad).coalesce()  # unique rows: the update is not linear
                rows, values = grad._indices()[0], grad._values()
                if values.numel() == 0:
                    continue
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                # old <- b * old + (1 - b) * new, as old += (1 - b) * (new - old), on the touched rows
                old_avg = exp_avg.index_select(0, rows)
                avg_update = values.sub(old_avg).mul_(1 - beta1)
                exp_avg.index_add_(0, rows, avg_update)
                old_sq = exp_avg_sq.index_select(0, rows)
                sq_update = values.pow(2).sub_(old_sq).mul_(1 - beta2)
                exp_avg_sq.index_add_(0, rows, sq_update)
                numer = avg_update.add_(old_avg)
                denom = sq_update.add_(old_sq).sqrt_().add_(eps)
                step = state["step"]
                step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                p.index_add_(0, rows, numer.div_(denom).mul_(-step_size))
        return None


class SplitAdam:
    """Adam over ``groups`` (``model.param_groups`` dicts) with the parameters in ``sparse``
    (embedding weights whose modules have ``sparse=True``) moved to :class:`LazyAdam`.

    Duck-types the parts of ``torch.optim.Optimizer`` the trainer, ``GradScaler`` and warm start
    use: ``param_groups``, ``state``, ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``."""

    def __init__(self, groups: list[dict], sparse: list[torch.Tensor], lr: float, weight_decay: float = 0.0, **args):
        sparse_ids = {id(p) for p in sparse}
        dense_groups, sparse_groups = [], []
        for g in groups:
            opts = {k: v for k, v in g.items() if k != "params"}
            params = list(g["params"])
            d = [p for p in params if id(p) not in sparse_ids]
            s = [p for p in params if id(p) in sparse_ids]
            if d:
                dense_groups.append({**opts, "params": d})
            if s:  # SparseAdam has no weight decay (module docstring)
                sparse_groups.append({**{k: v for k, v in opts.items() if k != "weight_decay"}, "params": s})
        self.optimizers: list[torch.optim.Optimizer] = []
        if dense_groups:
            self.optimizers.append(torch.optim.Adam(dense_groups, lr=lr, weight_decay=weight_decay, **args))
        if sparse_groups:
            shared = {k: v for k, v in args.items() if k in _SPARSE_ADAM_ARGS}
            self.optimizers.append(LazyAdam(sparse_groups, lr=lr, **shared))
        self._sparse = sparse_ids
        self._by_param = {id(p): o for o in self.optimizers for g in o.param_groups for p in g["params"]}
        self._names: dict[int, str] = {}
        self.state = _RoutedState(self)

    def name_parameters(self, model: nn.Module) -> None:
        """Remember ``model``'s parameter names, for the error :meth:`step` raises."""
        self._names = {id(p): n for n, p in model.named_parameters()}

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("SplitAdam.step takes no closure")
        for o in self.optimizers:
            for g in o.param_groups:
                for p in g["params"]:
                    if p.grad is not None and p.grad.is_sparse != (id(p) in self._sparse):
                        name = self._names.get(id(p), f"a parameter of shape {tuple(p.shape)}")
                        kind = "dense" if id(p) in self._sparse else "sparse"
                        raise RuntimeError(
                            f"{name} got a {kind} gradient: the model reads this embedding table other than by "
                            "lookups through its module; set train.optimizer_args = {sparse_embeddings = false}")
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def split_adam(model: nn.Module, groups: list[dict], lr: float, weight_decay: float = 0.0, sparse: bool = True,
               **args):
    """``torch.optim.Adam`` over ``groups`` when ``sparse`` is false or the model has no tables,
    else a :class:`SplitAdam` with the model's :func:`sparse_tables` switched to sparse gradients."""
    tables = sparse_tables(model) if sparse else []
    if not tables:
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **args)
    for t in tables:
        t.sparse = True
    opt = SplitAdam(groups, [t.weight for t in tables], lr=lr, weight_decay=weight_decay, **args)
    opt.name_parameters(model)
    return opt
