"""The ``[train] distributed`` table of the configuration (:mod:`ml_core.config`): data-parallel
training with torch DDP (:mod:`ml_core.train.distributed`), launched by ``torchrun``::

    [train]
    distributed = { nproc = 2, backend = "auto" }

``nproc = 0`` (the default) trains in the asset's own process, as before. ``nproc >= 1`` makes
the ``trained_model`` asset launch ``torchrun --nproc_per_node <nproc>`` out of process through
Dagster Pipes (``orchestration/ddp_worker.py``); every rank trains on its share of each epoch's
batches and rank 0 alone writes the partition. ``train.batch_size`` stays the global batch (each
rank draws ``batch_size // nproc``), so the other settings mean what they mean in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DistributedConfig:
    #: Processes per node (one per GPU on a GPU node); 0 = no torchrun, train in process. 1 runs the
    #: same DDP path with one rank: its weights are bit-identical to the in-process trainer's.
    nproc: int = 0
    #: ``auto`` = ``nccl`` when CUDA is visible (one GPU per rank), ``gloo`` otherwise (CPU).
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    def __post_init__(self) -> None:
        if self.nproc < 0:
            raise ValueError(f"distributed.nproc = {self.nproc}: expected >= 0 (0 = train in process)")
