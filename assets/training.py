"""trained_model: the candidate model of day D, trained on days D-T .. D-1."""

import json
import os
import sys
from collections.abc import Iterator

import dagster as dg

from assets.automation import TRAINING
from assets.common import ROOT, code_version, lineage_deps, result, settings, stage, stoppable
from assets.partitions import CONFIG, previous_day_mapping, train_window_mapping
from assets.ranges import materialize_days, upstream_days
from ml_core.catalog import TRAINED_MODEL, TRAINING_SAMPLES
from ml_core.eval.plots import curve_plot
from ml_core.stages.training import run_trained_model

TRAINING_CODE = code_version("assets.training", "ml_core.stages.training")


@dg.asset(
    **stage("model", {"pytorch"}, model=True, pool="model", automation_condition=TRAINING,
            required_resource_keys={"pipeline", "pipes_subprocess_client"}),
    ins={TRAINING_SAMPLES: dg.AssetIn(partition_mapping=train_window_mapping)},
    # the same days' features and graphs, read by the stage from the lake, and the model it starts
    # from (train.warm_start = "previous": trained_model[D-1], when it exists): lineage only
    deps=[*lineage_deps(train_window_mapping),
          *([dg.AssetDep(TRAINED_MODEL, partition_mapping=previous_day_mapping)] if CONFIG.train.warm_start == "previous" else [])],
    code_version=TRAINING_CODE,
)
@stoppable
def trained_model(context: dg.AssetExecutionContext, training_samples) -> Iterator:
    """Model trained on the samples of days D-T .. D-1, each day scored with its own graphs and
    features (built from days before it), warm-started from trained_model[D-1] when compatible
    (``train.warm_start``; ``init`` says which and why), trained until its budget or early stop
    (``stopping``); weights, feature spec, training curve, manifest. Its partitions start with the
    first day whose whole window exists. With ``train.distributed.nproc >= 1`` it trains out of
    process, data-parallel under torchrun, launched through Dagster Pipes (:func:`train_with_torchrun`).
    Over a range, the days train in date order, each warm-started from the day before it."""
    cfg, lake = settings(context)
    yield from materialize_days(context, lambda day: day_model(context, cfg, lake, day))


def day_model(context: dg.AssetExecutionContext, cfg, lake, day: str) -> dg.MaterializeResult:
    """trained_model[day], trained on its own window's samples, with its curve and manifest."""
    train_days = upstream_days(context, TRAINING_SAMPLES, day)
    if cfg.train.distributed.nproc:
        reported = train_with_torchrun(context, cfg, day, train_days)
        stats, history = {}, json.loads((lake.partition_dir("trained_model", day) / "history.json").read_text())
    else:
        out = run_trained_model(cfg, lake, day, train_days, code_version=TRAINING_CODE, log=context.log.info)
        reported, stats, history = {}, out.summary(), out.history
    curve = [(h["step"], h["loss"]) for h in history if "loss" in h]
    plot = curve_plot(curve, f"{cfg.train.model} training loss", "step", "loss (running mean)")
    mat = result(lake, "trained_model", day, stats, plots={"training_curve": plot})
    return dg.MaterializeResult(asset_key="trained_model", metadata={**reported, **mat.metadata},
                                data_version=mat.data_version)


def job_extras(config_path: str, overrides: list[str], day: str, train_days: list[str], code_version: str) -> dict:
    """What each torchrun launch is handed (Pipes extras, read by rank 0 of :mod:`orchestration.ddp_worker`):
    the config this run loaded (path + overrides), the partition, its training days, the code version."""
    return {"config_path": config_path, "overrides": list(overrides), "day": day, "train_days": list(train_days),
            "code_version": code_version}


def torchrun_command(nproc: int, backend: str, device: str, python: str = sys.executable) -> list[str]:
    """``torchrun --standalone --nproc_per_node <nproc> -m orchestration.ddp_worker --backend <backend>
    --device <device>``, as ``python -m torch.distributed.run`` (the launching interpreter's torch; one
    node, a free port)."""
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "orchestration.ddp_worker", "--backend", backend, "--device", device]


def train_with_torchrun(context: dg.AssetExecutionContext, cfg, day: str, train_days: list[str]) -> dict:
    """Run :mod:`orchestration.ddp_worker` under ``torchrun --nproc_per_node train.distributed.nproc``
    through the ``pipes_subprocess_client`` resource: rank 0's log lines arrive in this run's log;
    returns the metadata rank 0 reported (the stage's :meth:`~ml_core.stages.training.TrainingResult.summary`)."""
    res = context.resources.pipeline
    dist = cfg.train.distributed
    context.log.info(f"training out of process: torchrun x{dist.nproc} (backend {dist.backend}) through Dagster Pipes")
    invocation = context.resources.pipes_subprocess_client.run(
        command=torchrun_command(dist.nproc, dist.backend, cfg.train.device), context=context,
        extras=job_extras(res.config_path, list(res.overrides), day, train_days, TRAINING_CODE),
        # the ranks import this repository's packages whatever the working directory (kept: it
        # resolves a relative storage.root as in this process)
        env={"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)},
    )
    return dict(invocation.get_materialize_result().metadata or {})
