"""The registry of deployed bundles as the stages and serving see it: one interface, two backends.

:class:`BundleRegistry` is what training (warm start from production), evaluation (the
reference models), the deployment gate and serving call. ``[registry] backend`` picks the
implementation (:func:`open_bundle_registry`):

* ``local`` (default): :class:`ml_core.registry.bundles.BundleStore`, directories under
  ``<storage.root>/registry``, a ``production.json`` pointer and an ``fcntl`` lock (one machine);
* ``mlflow``: :class:`ml_core.registry.mlflow.MlflowBundleRegistry`, registered model versions
  on an MLflow server, production = an alias, decisions = runs (several machines).

A *version* is always the pipeline's bundle version ``<partition>-<content hash[:10]>``; the
production record is a dict with at least ``version`` and ``partition`` (and the candidate's
``metrics`` when the gate set it); a decision is :meth:`DeploymentResult.to_dict` plus ``at``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from ml_core.config.registry import RegistryConfig
from ml_core.registry.bundles import BundleStore


@runtime_checkable
class BundleRegistry(Protocol):
    """Versions of model bundles, the production pointer and the log of deployment decisions."""

    @property
    def location(self) -> str:
        """Where the registry is, for messages (a directory or an MLflow URI and model name)."""

    def versions(self) -> list[str]:
        """Every published bundle version, sorted."""

    def has_version(self, version: str) -> bool:
        """Whether ``version`` is published."""

    def version_dir(self, version: str) -> Path:
        """A local directory holding the complete bundle ``version`` (read-only for callers)."""

    def checked_version_dir(self, version: str) -> Path:
        """:meth:`version_dir`, checked against what was published (a truncated or changed
        bundle raises :class:`~ml_core.integrity.CorruptPartitionError` and is never loaded)."""

    def publish(self, bundle: Path, version: str) -> Path:
        """Store the complete bundle directory ``bundle`` as ``version``; returns its directory."""

    def lock(self) -> AbstractContextManager:
        """Exclusive lock for read-decide-write sequences on the pointer (two deployers)."""

    def production(self) -> dict | None:
        """The production record (``version``, ``partition``, ...) or None when nothing serves."""

    def production_stamp(self) -> tuple | None:
        """A cheap value that changes whenever production may have moved (None: no production
        yet): what the server's pointer watcher polls before reading :meth:`production`."""

    def set_production(self, version: str, record: dict) -> None:
        """Make the published ``version`` production with ``record``; only the gate calls this."""

    def record_decision(self, decision: dict) -> None:
        """Append a promotion or refusal (with its reasons) to the decisions log."""

    def decisions(self) -> list[dict]:
        """Every recorded decision, oldest first."""


def open_bundle_registry(cfg: RegistryConfig | None, root: str | Path) -> BundleRegistry:
    """The registry ``cfg`` names; ``root`` is the storage root (``storage.root``): the local
    store lives under it, the MLflow backend caches downloaded bundles under it."""
    cfg = cfg or RegistryConfig()
    if cfg.backend == "local":
        return BundleStore(root)
    from ml_core.registry.mlflow import MlflowBundleRegistry

    return MlflowBundleRegistry(cfg, root)
