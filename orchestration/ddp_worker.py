"""The program ``torchrun`` starts for ``trained_model`` when ``train.distributed.nproc >= 1``: one
process per rank, joined into one torch process group (``gloo`` on CPU, ``nccl`` on GPUs), each
running the training stage (:func:`ml_core.stages.training.run_trained_model`) on its share of the
batches; rank 0 writes the partition.

Launched by the asset through Dagster Pipes (``PipesSubprocessClient``, or ``PipesK8sClient`` in a
pod: docs/scaling.md, "Distributed training"), rank 0 opens the Pipes connection: the run's settings come
from the asset as Pipes extras (:func:`assets.training.job_extras`), rank 0 streams the training log back and
reports the materialization's metadata; the other ranks receive the settings from rank 0 and log
nothing. Only ``dagster_pipes`` (a small package without dependencies) is imported, never dagster.

Without Dagster (a shell, a batch job), the settings come from the command line::

    torchrun --standalone --nproc_per_node 2 -m orchestration.ddp_worker \\
        --day 2024-01-10 --train-days 2024-01-07,2024-01-08,2024-01-09 --set train.epochs=1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

from ml_core.preflight import load_runnable_config
from ml_core.stages.training import run_trained_model
from ml_core.storage import Lake
from ml_core.train import distributed as ddp


def pipes_metadata(stats: dict) -> dict:
    """``stats`` as Pipes metadata: tables and lists as JSON values, the rest as inferred scalars."""
    return {k: {"raw_value": json.loads(json.dumps(v, default=str)), "type": "json"} if isinstance(v, (dict, list))
            else v for k, v in stats.items()}


def _broadcast(job: dict | None, ranks: ddp.Ranks) -> dict:
    """Rank 0's ``job`` on every rank."""
    if ranks.world == 1:
        return job
    import torch.distributed as dist

    box = [job]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="one rank of distributed training (trained_model)")
    ap.add_argument("--backend", default="auto", help="auto (nccl when --device is CUDA, else gloo), gloo or nccl")
    ap.add_argument("--device", default="auto", help="train.device: auto (CUDA when visible), cpu, cuda")
    ap.add_argument("--day", help="the partition (without Dagster Pipes)")
    ap.add_argument("--train-days", default="", help="comma-separated training days (without Dagster Pipes)")
    ap.add_argument("--config", default="", help="TOML file (default: $MOGE_CONFIG, then data/pipeline.toml)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="section.key=value")
    ap.add_argument("--code-version", default="")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    ranks = ddp.init_from_env(args.backend, args.device)
    with contextlib.ExitStack() as stack:
        pipes = None
        if ranks.writer:
            from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

            # launched by a Pipes client: its bootstrap variables are in the environment
            pipes = stack.enter_context(open_dagster_pipes()) if DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ else None
        job = None
        if ranks.writer:
            job = dict(pipes.extras) if pipes else {
                "config_path": args.config, "overrides": args.overrides, "day": args.day,
                "train_days": [d for d in args.train_days.split(",") if d], "code_version": args.code_version}
        job = _broadcast(job, ranks)
        if not job.get("day") or not job.get("train_days"):
            raise SystemExit("ddp_worker needs the partition and its training days (--day, --train-days, or Pipes extras)")
        cfg = load_runnable_config(job["config_path"] or None, job["overrides"])
        lake = Lake(cfg.storage.root)
        log = (pipes.log.info if pipes else print) if ranks.writer else None
        out = run_trained_model(cfg, lake, job["day"], job["train_days"], code_version=job["code_version"], log=log)
        if pipes is not None:
            pipes.report_asset_materialization(metadata=pipes_metadata(out.summary()),
                                               data_version=lake.version("trained_model", job["day"]))
    if ranks.active:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
