"""The shared registry: deployed bundles as versions of one MLflow registered model.

The ``mlflow`` backend of :class:`ml_core.registry.interface.BundleRegistry` (``[registry]
backend = "mlflow"``), for several machines that train, deploy and serve against one MLflow
tracking server. What lives where, for ``model_name = "moge"``:

* a bundle version ``<partition>-<hash>`` is a *bundle run* in the experiment
  ``moge-deployments`` (the bundle directory logged as the run's artifact ``bundle/``) and a
  version of the registered model ``moge`` whose source is that artifact, tagged
  ``moge.bundle_version`` and ``moge.partition``;
* production is the alias ``champion`` (``[registry] alias``) on one version, with the gate's
  record (partition, candidate metrics) in the version's tag ``moge.production_record``;
* every decision, promotion or refusal, is a *decision run* in the same experiment: tags
  ``moge.partition``, ``moge.bundle_version``, ``moge.promoted``, ``moge.reasons``,
  ``moge.production_before`` and the whole record (``moge.decision``, and the artifact
  ``decision.json``); metrics ``promoted`` (1/0) and the candidate's metrics
  (``candidate.<task>.<metric>``). A refusal creates no model version and never moves the alias.

Bundles are downloaded once into ``<storage.root>/registry_cache/<model>/<version>@<n>``
(``n`` = the MLflow version number) and loaded from there, as the local store's directories are.

Concurrency. What MLflow guarantees: each REST call is one transaction of its store; a
registered model name is unique (the store's primary key), so ``create_registered_model`` of
a name that exists fails with ``RESOURCE_ALREADY_EXISTS``; version numbers are assigned by the
server. What it does not: there is no lock and no compare-and-set across calls;
``set_registered_model_alias`` moves the alias unconditionally (the last writer wins). So two
deployers that each read production, judge and move the alias could both promote on the basis
of a production the other just replaced. :meth:`MlflowBundleRegistry.lock` therefore takes a
lease: it creates the registered model ``<model_name>.deploy-lock`` (exactly one concurrent
creator succeeds), tagged with a random token, the holder (host:pid) and an expiry; the others
poll every ``poll_s`` until ``lock_wait_s`` and then fail naming the holder. A lease older than
``lease_s`` (a crashed deployer) is deleted and taken over. Before moving the alias,
:meth:`set_production` checks that the lease still carries its own token (a fencing check):
a deployer whose lease was broken fails instead of moving the alias. Left open: the check and
the move are two calls, so a deployer stalled for longer than ``lease_s`` between them could
still move the alias after its lease was broken; ``lease_s`` (2 h) is far above a decision's
duration.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ml_core.config.registry import RegistryConfig, redacted_uri
from ml_core.integrity import verify_dir
from ml_core.registry.signing import check_signature, signer
from ml_core.storage import atomic_dir, hostname

#: Tags on model versions and runs (a common prefix keeps them apart from MLflow's own).
TAG_VERSION, TAG_PARTITION, TAG_RECORD = "moge.bundle_version", "moge.partition", "moge.production_record"
TAG_KIND, TAG_DECISION = "moge.kind", "moge.decision"
#: Lease tags on the lock model.
TAG_TOKEN, TAG_HOLDER, TAG_EXPIRES = "moge.lock_token", "moge.lock_holder", "moge.lock_expires"
#: MLflow's limit on a run tag's value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH).
MAX_RUN_TAG = 8000
_SAFE_VALUE = re.compile(r"[\w.\-:@]+")
_METRIC_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /]")


def flat_metrics(d: dict, prefix: str) -> dict[str, float]:
    """``{"click": {"gauc": 0.7}}`` -> ``{"<prefix>.click.gauc": 0.7}``: the finite numbers of a
    nested dict, keys made of the characters MLflow accepts in a metric name."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = prefix + "." + _METRIC_UNSAFE.sub("_", str(k))
        if isinstance(v, dict):
            out.update(flat_metrics(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = float(v)
    return out


class MlflowBundleRegistry:
    """Bundles, production alias and decisions on an MLflow server (see module docstring)."""

    def __init__(self, cfg: RegistryConfig, root: str | Path):
        from mlflow import MlflowClient  # imported here: the local backend needs no MLflow

        if cfg.backend != "mlflow" or not cfg.tracking_uri:
            raise ValueError(f"MlflowBundleRegistry needs backend = 'mlflow' and a tracking_uri, got backend "
                             f"{cfg.backend!r}, tracking_uri {redacted_uri(cfg.tracking_uri)!r}")
        self.cfg = cfg
        self.name = cfg.model_name
        self.lock_name = f"{cfg.model_name}.deploy-lock"
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri or cfg.tracking_uri)
        self.cache = Path(cfg.cache_dir or Path(root) / "registry_cache") / cfg.model_name
        self._lease: str | None = None  # our token while we hold the lock

    @property
    def location(self) -> str:
        return f"MLflow {redacted_uri(self.cfg.registry_uri or self.cfg.tracking_uri)}, registered model {self.name!r}"

    # -- MLflow helpers ---------------------------------------------------------------------------
    @staticmethod
    def _code(e: Exception) -> str:
        return getattr(e, "error_code", "")

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.cfg.experiment_name
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException as e:  # another deployer created it first
                if self._code(e) != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(name)
        if exp.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {name!r} is deleted: restore it or set registry.experiment")
        return exp.experiment_id

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.name, description="MoGE pipeline: deployed bundles")
        except MlflowException as e:
            if self._code(e) != "RESOURCE_ALREADY_EXISTS":
                raise

    def _search_versions(self, extra: str = "") -> list:
        """Every version of the model (matching ``extra``, a filter clause), all pages."""
        out, token = [], None
        flt = f"name = '{self.name}'" + (f" and {extra}" if extra else "")
        while True:
            page = self.client.search_model_versions(flt, max_results=1000, page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def _find(self, version: str):
        """The newest MLflow model version holding bundle ``version``, or None."""
        if not _SAFE_VALUE.fullmatch(version):
            raise ValueError(f"bundle version {version!r}: expected letters, digits and . - _ : @ only")
        found = self._search_versions(f"tags.`{TAG_VERSION}` = '{version}'")
        return max(found, key=lambda mv: int(mv.version)) if found else None

    # -- versions ---------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return sorted({mv.tags[TAG_VERSION] for mv in self._search_versions() if TAG_VERSION in mv.tags})

    def has_version(self, version: str) -> bool:
        return self._find(version) is not None

    def version_dir(self, version: str) -> Path:
        """The bundle, downloaded into the cache on first use (atomically: a half download is never
        read as a bundle)."""
        import mlflow.artifacts

        from ml_core.registry.bundles import check_version_name

        mv = self._find(check_version_name(version))
        if mv is None:
            raise FileNotFoundError(f"bundle {version} is not a version of {self.location}")
        target = self.cache / f"{version}@{mv.version}"
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                got = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp / ".dl"),
                                                               tracking_uri=self.cfg.tracking_uri))
                for p in got.iterdir():
                    p.rename(tmp / p.name)
                shutil.rmtree(tmp / ".dl")
        return target


    def checked_version_dir(self, version: str) -> Path:
        from ml_core.registry.bundles import check_bundle_identity

        d = self.version_dir(version)
        verify_dir(d, f"model bundle {version} (downloaded from {self.location})",
                   f"delete the cached copy {d} to download it again", require_files=True)
        # a download is sealed as it arrived: the signature (uploaded at publish) vouches for it
        return check_signature(check_bundle_identity(d, version), version)
    def publish(self, bundle: Path, version: str) -> Path:
        """A bundle run with ``bundle`` as its artifact, registered as a new model version."""
        from ml_core.registry.bundles import read_manifest

        bundle = Path(bundle)
        partition = read_manifest(bundle).get("partition", "") if (bundle / "manifest.json").exists() else ""
        tags = {TAG_VERSION: version, TAG_PARTITION: partition}
        self._ensure_model()
        run = self.client.create_run(self._experiment_id(), run_name=f"bundle-{version}",
                                     tags={TAG_KIND: "bundle", **tags})
        sign = signer(version)
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache, prefix=".staging-") as staging:
            upload = bundle
            if sign is not None:  # upload the records and the signature with the files
                upload = Path(staging) / "bundle"
                with atomic_dir(upload, finish=sign) as tmp:
                    shutil.copytree(bundle, tmp, dirs_exist_ok=True)
            self.client.log_artifacts(run.info.run_id, str(upload), artifact_path="bundle")
        self.client.set_terminated(run.info.run_id)
        mv = self.client.create_model_version(self.name, source=f"{run.info.artifact_uri}/bundle",
                                              run_id=run.info.run_id, tags=tags,
                                              description=f"bundle {version} (partition {partition})")
        target = self.cache / f"{version}@{mv.version}"  # what was uploaded is what a download gives
        with atomic_dir(target, finish=sign) as tmp:
            shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        return target

    # -- the lock (a lease; see the module docstring) -------------------------------------------
    def _lease_tags(self) -> dict | None:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(self.lock_name).tags)
        except MlflowException as e:
            if self._code(e) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _break_lease(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model(self.lock_name)
        except MlflowException as e:
            if self._code(e) != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _try_lease(self, token: str) -> bool:
        from mlflow.exceptions import MlflowException

        tags = {TAG_TOKEN: token, TAG_HOLDER: f"{hostname()}:{os.getpid()}",
                TAG_EXPIRES: f"{time.time() + self.cfg.lease_s:.3f}"}
        try:
            self.client.create_registered_model(self.lock_name, tags=tags,
                                                description=f"deployment lock of {self.name} (held while deciding)")
            return True
        except MlflowException as e:
            # ALREADY_EXISTS: held. DOES_NOT_EXIST: the server raced our create with the holder's
            # release (seen once in CI on SQLite); both mean "not ours yet, look again"
            if self._code(e) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
            return False

    @contextlib.contextmanager
    def lock(self):
        """Hold the deployment lease of the model (re-entrant within this object)."""
        if self._lease is not None:
            yield self
            return
        token, deadline = uuid.uuid4().hex, time.monotonic() + self.cfg.lock_wait_s
        while not self._try_lease(token):
            held = self._lease_tags()
            if held is not None and float(held.get(TAG_EXPIRES, "inf")) < time.time():
                self._break_lease()  # its holder crashed (or overran lease_s): take over
                continue
            if time.monotonic() >= deadline:
                who = held.get(TAG_HOLDER, "?") if held else "?"
                raise TimeoutError(f"the deployment lock of {self.location} is held by {who}; waited "
                                   f"{self.cfg.lock_wait_s:g} s (registry.lock_wait_s)")
            time.sleep(self.cfg.poll_s)
        self._lease = token
        try:
            yield self
        finally:
            self._lease = None
            held = self._lease_tags()
            if held is not None and held.get(TAG_TOKEN) == token:
                self._break_lease()

    # -- production -------------------------------------------------------------------------------
    def production_stamp(self) -> tuple | None:
        """The alias's version (a remote registry has no file to stat)."""
        prod = self.production()
        return None if prod is None else (prod["version"],)

    def production(self) -> dict | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, self.cfg.alias)
        except MlflowException as e:  # no such model, or the alias is not set
            if self._code(e) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        if TAG_VERSION not in mv.tags:
            raise ValueError(f"alias {self.cfg.alias!r} of {self.location} names version {mv.version}, which has "
                             f"no {TAG_VERSION} tag: it was not published by the pipeline")
        record = json.loads(mv.tags.get(TAG_RECORD, "{}"))
        return {"partition": mv.tags.get(TAG_PARTITION, ""), **record, "version": mv.tags[TAG_VERSION],
                "mlflow_version": mv.version}

    def set_production(self, version: str, record: dict) -> None:
        """Tag the version with ``record`` and move the alias to it, under the lease (taken here
        when the caller does not hold it), after checking that the lease is still ours."""
        with self.lock():
            mv = self._find(version)
            if mv is None:
                raise FileNotFoundError(f"cannot promote {version}: not published in {self.location}")
            held = self._lease_tags()
            if held is None or held.get(TAG_TOKEN) != self._lease:
                raise RuntimeError(f"lost the deployment lock of {self.location} (held now by "
                                   f"{(held or {}).get(TAG_HOLDER, 'nobody')}): {version} was not promoted")
            self.client.set_model_version_tag(self.name, mv.version, TAG_RECORD,
                                              json.dumps(record, sort_keys=True, default=str))
            self.client.set_registered_model_alias(self.name, self.cfg.alias, mv.version)

    # -- decisions --------------------------------------------------------------------------------
    def record_decision(self, decision: dict) -> None:
        """One decision run: tags, metrics and ``decision.json`` (see the module docstring)."""
        from mlflow.entities import Metric, RunTag

        decision = {"at": datetime.now(UTC).isoformat(), **decision}
        text = json.dumps(decision, sort_keys=True, default=str)
        promoted = bool(decision.get("promoted"))
        reasons = json.dumps(decision.get("reasons", []), default=str)
        tags = {TAG_KIND: "decision", TAG_PARTITION: str(decision.get("partition", "")),
                TAG_VERSION: str(decision.get("version", "")), "moge.promoted": str(promoted).lower(),
                "moge.production_before": str(decision.get("production_before") or ""),
                "moge.reasons": reasons if len(reasons) <= MAX_RUN_TAG else reasons[: MAX_RUN_TAG - 3] + "...",
                TAG_DECISION: text if len(text) <= MAX_RUN_TAG else "decision.json"}
        run = self.client.create_run(self._experiment_id(), run_name=f"decision-{decision.get('partition', '')}",
                                     tags=tags)
        now = int(time.time() * 1000)
        metrics = {"promoted": float(promoted), "reasons": float(len(decision.get("reasons", []))),
                   **flat_metrics(decision.get("candidate") or {}, "candidate")}
        self.client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              tags=[RunTag("mlflow.note.content", "; ".join(decision.get("reasons", [])) or "promoted")])
        self.client.log_text(run.info.run_id, text, "decision.json")
        self.client.set_terminated(run.info.run_id)

    def decisions(self) -> list[dict]:
        """Every decision run's record, oldest first (by the decision's ``at``)."""
        exp = self.client.get_experiment_by_name(self.cfg.experiment_name)
        if exp is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'decision'",
                                           max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        out = []
        for run in runs:
            text = run.data.tags.get(TAG_DECISION, "")
            if not text.startswith("{"):  # too long for a tag: the artifact holds it
                import mlflow.artifacts

                text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/decision.json")
            out.append(json.loads(text))
        return sorted(out, key=lambda d: d.get("at", ""))
