"""Data-parallel training with torch DDP, for a trainer launched by ``torchrun``.

``torchrun --nproc_per_node N`` starts N copies of the same program with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in their environment; :func:`init_from_env` joins them into one process group
(``gloo`` on CPU, ``nccl`` on GPUs, one GPU per rank). The trainer (:func:`ml_core.train.trainer.train`)
then reads :func:`current` and

- keeps ``train.batch_size`` the global batch: each rank's batches hold ``batch_size // N`` samples
  (:func:`rank_batch_size`), so a step sees as many samples as one process's step, an epoch has
  as many steps, and the learning rate and the other settings carry over unchanged;
- draws the same batch plan on every rank (same seed) and keeps rank r's share, batches
  ``r, r + N, r + 2N, ...`` (:func:`shard`), cut to the same length on every rank, since every
  step is one gradient all-reduce that all ranks must join;
- samples neighbours with seed ``seed + rank`` (rank 0: the single-process seed);
- steps through :func:`wrap` (``DistributedDataParallel`` averages the gradients, so every rank
  holds the same weights after each step);
- agrees on stopping (patience, ``max_seconds``) with :func:`agree`, so no rank waits for a step
  the others skipped, and sums the throughput over ranks with :func:`total`.

At world size 1 every one of these is the identity: the plan, the seeds, the weights and the
scores are those of the in-process trainer, bit for bit (tests/unit/train/test_distributed.py).
Rank 0 is the one writer of partitions and bundles (:attr:`Ranks.writer`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether a process group is joined (torchrun), even of one process."""
        return dist.is_available() and dist.is_initialized()

    @property
    def writer(self) -> bool:
        """Rank 0 writes checkpoints, partitions and bundles; the others only train."""
        return self.rank == 0


def current() -> Ranks:
    """This process's :class:`Ranks`: the joined process group's, else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def current_backend() -> str | None:
    """The joined process group's backend (``gloo``, ``nccl``), None in a single process."""
    return dist.get_backend() if current().active else None


def resolve_backend(backend: str, cuda: bool | None = None) -> str:
    """``auto`` -> ``nccl`` when CUDA is visible (``cuda``, default: torch's answer), else ``gloo``."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise RuntimeError("train.distributed.backend = 'nccl' needs CUDA, and none is visible; use 'auto' or 'gloo'")
    return backend


def init_from_env(backend: str = "auto", device: str = "auto") -> Ranks:
    """Join torchrun's process group (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the environment);
    a process not started by torchrun stays a single process. ``auto`` picks ``nccl`` when the
    training ``device`` (``train.device``) is CUDA, ``gloo`` otherwise; with ``nccl`` each rank
    takes GPU ``LOCAL_RANK``, so a node needs as many GPUs as ranks."""
    if "WORLD_SIZE" not in os.environ or (dist.is_available() and dist.is_initialized()):
        return current()
    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    name = resolve_backend(backend, cuda)
    if name == "nccl":
        local, gpus = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local >= gpus:
            raise RuntimeError(f"local rank {local} needs GPU {local}, but {gpus} are visible: set "
                               f"train.distributed.nproc <= {gpus}, or train.device = 'cpu' (gloo)")
        torch.cuda.set_device(local)
    dist.init_process_group(name)
    return current()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return dev


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """A rank's device: ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` under a process group."""
    if device.type == "cuda" and device.index is None and ranks.active:
        return torch.device("cuda", ranks.local_rank)
    return device


def rank_batch_size(batch_size: int, ranks: Ranks) -> int:
    """Each rank's share of the global ``batch_size``: ``batch_size // world`` (at least 1)."""
    return max(1, batch_size // ranks.world)


def shard(plan: list, ranks: Ranks) -> list:
    """Rank ``r``'s batches of an epoch's ``plan``: ``plan[r::world]``, each rank's share cut to
    ``len(plan) // world`` steps (at most ``world - 1`` batches of an epoch are dropped; none at
    world size 1)."""
    if ranks.world == 1:
        return plan
    steps = len(plan) // ranks.world
    return plan[ranks.rank :: ranks.world][:steps]


class _LossStep(torch.nn.Module):
    """``model.compute_loss`` as a module's ``forward``, so DDP sees the call it synchronises."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.compute_loss(batch)


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device):
    """The training step's ``batch -> (scores, loss, parts)``: ``model.compute_loss`` in a single
    process, through ``DistributedDataParallel`` (gradients averaged over ranks in the backward
    pass) under a process group. ``find_unused_parameters``: a model's step may leave some
    parameters out (e.g. a channel without edges in a batch)."""
    if not ranks.active:
        return model.compute_loss
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_LossStep(model), device_ids=ids, find_unused_parameters=True)


def _all_reduce(value, dtype: torch.dtype, op) -> float:
    """``value`` reduced over the group by ``op``, on the device the backend talks through
    (``nccl``: this rank's GPU; ``gloo``: the CPU)."""
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=dtype, device=on)
    dist.all_reduce(t, op=op)
    return t.item()


def agree(code: int, ranks: Ranks) -> int:
    """The largest ``code`` over ranks (0 = go on; > 0 = a reason to stop): every rank stops at the
    same step when any rank has a reason."""
    return code if ranks.world == 1 else int(_all_reduce(code, torch.long, dist.ReduceOp.MAX))


def total(value: float, ranks: Ranks) -> float:
    """``value`` summed over ranks (samples seen, samples/s of the whole group)."""
    return value if ranks.world == 1 else float(_all_reduce(value, torch.float64, dist.ReduceOp.SUM))


def sampling_seed(seed: int, ranks: Ranks) -> int:
    """Each rank's neighbour-sampling seed: ``seed + rank`` (rank 0: the single-process seed)."""
    return seed + ranks.rank
