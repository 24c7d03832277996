"""Resources: the pipeline settings (the one config system) and the lake IO manager.

``PipelineResource`` wraps :func:`ml_core.config.load_config` (+ :func:`ml_core.preflight.check_runnable`):
a TOML path plus optional ``section.key=value`` overrides, so the Dagster launchpad, the CLI and
tests share one schema.
``pipes_subprocess_client`` launches ``torchrun`` for ``trained_model`` when ``train.distributed.nproc
>= 1`` (docs/scaling.md, "Distributed training": a ``PipesK8sClient`` runs it in a GPU pod instead).
``LakeIOManager`` gives each asset its upstream partitions as :class:`PartitionRefs` (the days
the partition mapping selected); assets write their own partitions through ml_core, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ml_core.config import PipelineConfig
from ml_core.preflight import load_runnable_config
from ml_core.storage import Lake


class PipelineResource(dg.ConfigurableResource):
    """Pipeline settings. ``config_path`` empty = $MOGE_CONFIG, then data/pipeline.toml."""

    config_path: str = ""
    overrides: list[str] = []

    def config(self) -> PipelineConfig:
        return load_runnable_config(self.config_path or None, self.overrides)

    def lake(self) -> Lake:
        return Lake(self.config().storage.root)


@dataclass(frozen=True)
class PartitionRefs:
    """The upstream partitions an input maps to (sorted days), resolved in the lake by ml_core."""

    asset: str
    days: list[str]


class LakeIOManager(dg.ConfigurableIOManager):
    """Outputs are written by the assets themselves (atomic partition directories); inputs are
    handed over as :class:`PartitionRefs` so large windows are read lazily by ml_core."""

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is not None:
            raise TypeError(f"{context.asset_key.to_user_string()} returned a value; assets write the lake themselves")

    def load_input(self, context: dg.InputContext) -> PartitionRefs:
        asset = context.asset_key.path[-1]
        days = sorted(context.asset_partition_keys) if context.has_asset_partitions else []
        return PartitionRefs(asset, days)


def flow_resources(pipeline: PipelineResource | None = None) -> dict:
    """Every resource the flow's assets need, chosen in this one place: ``pipeline`` (tests pass
    their own), the lake IO manager and the Pipes client that launches distributed training."""
    return {"pipeline": pipeline or PipelineResource(), "lake_io": LakeIOManager(),
            "pipes_subprocess_client": dg.PipesSubprocessClient()}
