"""The ``[registry]`` section of the configuration (:mod:`ml_core.config`): where deployed model
bundles, the production pointer and the deployment decisions live.

``backend = "local"`` (the default) is the bundle store under ``<storage.root>/registry``
(:class:`ml_core.registry.bundles.BundleStore`, one machine, an ``fcntl`` lock). ``backend = "mlflow"``
is a registered model on an MLflow tracking server that several machines share
(:class:`ml_core.registry.mlflow.MlflowBundleRegistry`)::

    [registry]
    backend = "mlflow"
    tracking_uri = "http://mlflow.internal:5000"
    model_name = "moge"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit


def redacted_uri(uri: str) -> str:
    """``uri`` without the user name and password of its authority (``http://u:p@host`` ->
    ``http://***@host``): what messages and logs print of a tracking URI."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


@dataclass
class RegistryConfig:
    #: ``local``: ``<storage.root>/registry``; ``mlflow``: the MLflow server at ``tracking_uri``.
    backend: Literal["local", "mlflow"] = "local"
    #: The MLflow tracking server (``http://host:port``); required with ``backend = "mlflow"``.
    tracking_uri: str = ""
    #: The MLflow model registry, when it is not the tracking server ("" = ``tracking_uri``).
    registry_uri: str = ""
    #: The registered model whose versions are the deployed bundles.
    model_name: str = "moge"
    #: The alias that names production; only the deployment gate moves it. "champion" is the
    #: name MLflow's own documentation uses for the model that serves.
    alias: str = "champion"
    #: The MLflow experiment holding one run per published bundle and per decision
    #: ("" = ``<model_name>-deployments``).
    experiment: str = ""
    #: Where bundles downloaded from MLflow are kept for loading ("" = ``<storage.root>/registry_cache``).
    cache_dir: str = ""
    #: How long a deployer waits for another one's deployment lock before failing. A decision
    #: scores up to ``deploy.compare_last`` reference models, minutes on the default data: 30 min.
    lock_wait_s: float = 1800.0
    #: A lock older than this is taken to belong to a crashed deployer and is broken. It must
    #: exceed the longest deployment decision; 2 h is four times the wait above.
    lease_s: float = 7200.0
    #: Seconds between two attempts to take a held lock.
    poll_s: float = 2.0

    def __post_init__(self) -> None:
        if self.backend == "mlflow" and not self.tracking_uri:
            raise ValueError('backend = "mlflow" needs tracking_uri (e.g. "http://mlflow.internal:5000")')
        if not self.model_name or not self.alias:
            raise ValueError(f"model_name ({self.model_name!r}) and alias ({self.alias!r}) must not be empty")
        if self.lock_wait_s < 0 or self.lease_s <= 0 or self.poll_s <= 0:
            raise ValueError(f"expected lock_wait_s >= 0, lease_s > 0, poll_s > 0; got {self.lock_wait_s}, "
                             f"{self.lease_s}, {self.poll_s}")

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"{self.model_name}-deployments"
