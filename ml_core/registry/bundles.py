"""The bundle store: versioned model bundles, the production pointer and the decisions log.

Not to be confused with :mod:`ml_core.models.registry` (the registry of model classes by name).

A bundle is a directory::

    model.pt             state_dict
    model.json           registry name, model_args, ModelSpec, training config
    feature_spec.json    tasks, feature columns, scaling; user_ids.npy / item_ids.npy vocabularies
    manifest.json        partition, training days, data versions of every input, code version,
                         how the weights started (init) and why training stopped, metrics
    optimizer.pt         (train.warm_start_optimizer) the optimizer's state by parameter name
    context/             (deployed bundles) the graph snapshot + node features it serves with
    node_reps.npz        (deployed bundles) every snapshot node's representations, computed once
                         layer-wise over the snapshot's graphs (:mod:`ml_core.contracts.reps`);
                         described by the manifest's ``node_reps`` entry

Store layout under ``<root>/registry`` (the directory name predates this module; serving
copies and reads it as is)::

    versions/<version>/   immutable bundles, version = "<partition>-<content hash[:10]>"
    production.json       the pointer: only the deployment gate moves it (atomic rename)
    decisions.jsonl       every promotion and refusal, with reasons
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ml_core.contracts.reps import NodeReps
from ml_core.contracts.spec import ModelSpec, SideShape
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.models.base import RecModel
from ml_core.models.registry import build_model
from ml_core.registry.signing import check_signature, signer
from ml_core.storage import INTEGRITY_FILE, CorruptPartitionError, atomic_dir, atomic_write_text, verify_dir

#: A bundle version name: letters, digits, ``.``, ``_`` and ``-``, never a path (the pipeline's
#: are ``<partition>-<content hash[:10]>``, e.g. ``2026-01-03-0123456789``).
VERSION_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def check_version_name(version) -> str:
    """``version`` when it matches :data:`VERSION_PATTERN` and holds no ``..``; ValueError
    otherwise (a pointer naming ``../../elsewhere`` must not load a bundle from outside the store)."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version) or ".." in version:
        raise ValueError(f"{str(version)[:80]!r} is not a bundle version name: expected letters, digits, '.', '_' "
                         "and '-' (e.g. 2026-01-03-0123456789), no path")
    return version


def check_bundle_identity(directory: Path, version: str) -> Path:
    """``directory`` when the version its manifest names (if any) is ``version``; a bundle copied
    under another name raises :class:`CorruptPartitionError`. With the file record checked first
    (``manifest.json`` is in ``_FILES.json``) this binds the name to the content the gate published;
    it detects renamed copies and corruption, not a writer who also rewrites the records."""
    manifest = Path(directory) / "manifest.json"
    named = read_manifest(directory).get("version") if manifest.is_file() else None
    if named is not None and named != version:
        raise CorruptPartitionError(f"model bundle {version} at {directory} is a copy of bundle {named} (its manifest "
                                    "names that version): a bundle is served only under the version it was published as")
    return Path(directory)


def check_loadable(directory: Path, version: str | None = None, allow_unsealed: bool = False,
                   require_signature: bool = False) -> str:
    """The version the bundle ``directory`` is loaded as (``version``, else its manifest's, else
    the directory's name), once it is checked: against its ``_FILES.json`` (none: refused unless
    ``allow_unsealed``), its name (:func:`check_bundle_identity`) and its signature
    (:func:`~ml_core.registry.signing.check_signature`: required with ``require_signature``, checked
    whenever ``$MOGE_BUNDLE_KEY`` is set and the bundle has records to vouch for)."""
    directory = Path(directory)
    sealed = (directory / INTEGRITY_FILE).is_file()
    if sealed or not allow_unsealed:  # loaded only as it was published
        verify_dir(directory, f"model bundle {directory.name}", "Serve a published version (`moge serve --root`), "
                   "publish it again, or load it unchecked with --allow-unsealed", require_files=True)
    if version is not None:
        check_bundle_identity(directory, version)
    named = read_manifest(directory).get("version") if (directory / "manifest.json").is_file() else None
    version = version or named or directory.name
    if sealed or require_signature:  # a bundle being assembled has no records yet, nor a signature
        check_signature(directory, version, required=require_signature)
    return version


def save_model(directory: Path, model: RecModel, model_name: str, model_args: dict, mspec: ModelSpec,
               fspec: FeatureSpec, extra: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, directory / "model.pt")
    fspec.save(directory)
    (directory / "model.json").write_text(json.dumps(
        {"model": model_name, "model_args": model_args, "model_spec": dataclasses.asdict(mspec), **(extra or {})},
        indent=2, sort_keys=True, default=str))


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[RecModel, FeatureSpec, ModelSpec, dict]:
    directory = Path(directory)
    if not (directory / "model.pt").exists():
        raise FileNotFoundError(f"no model bundle at {directory} (model.pt missing)")
    meta = json.loads((directory / "model.json").read_text())
    ms = meta["model_spec"]
    mspec = ModelSpec(tasks=ms["tasks"], user=SideShape(**ms["user"]), item=SideShape(**ms["item"]),
                      dim=ms["dim"], fanouts=ms["fanouts"], n_pair=ms.get("n_pair", 0),
                      seq_len=ms.get("seq_len", 0))
    model = build_model(meta["model"], mspec, meta["model_args"])
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, FeatureSpec.load(directory), mspec, meta


#: a deployed bundle's node representations (next to ``context/``)
NODE_REPS_FILE = "node_reps.npz"


def save_node_reps(directory: Path, reps: NodeReps, user_raw: np.ndarray, item_raw: np.ndarray) -> dict:
    """Write ``reps`` (node spaces ``user_raw`` / ``item_raw``) to ``directory/node_reps.npz``
    atomically; returns its manifest entry (file, neighbourhoods, node counts, each
    representation's shape and dtype, bytes on disk)."""
    path = Path(directory) / NODE_REPS_FILE
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as fh:
        np.savez(fh, **reps.to_arrays(user_raw, item_raw))
    tmp.replace(path)
    shapes = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
              for k, v in {**reps.user_reps, **reps.item_reps}.items()}
    return {"file": NODE_REPS_FILE, "neighbours": reps.neighbours, "users": reps.n_users, "items": reps.n_items,
            "representations": shapes, "bytes": path.stat().st_size}


def load_node_reps(directory: Path) -> tuple[NodeReps, np.ndarray, np.ndarray] | None:
    """``(reps, user_raw, item_raw)`` of ``directory/node_reps.npz``, or None without one."""
    path = Path(directory) / NODE_REPS_FILE
    if not path.exists():
        return None
    with np.load(path) as arrays:
        return NodeReps.from_arrays(arrays)


def read_manifest(directory: Path) -> dict:
    return json.loads((Path(directory) / "manifest.json").read_text())


def write_manifest(directory: Path, manifest: dict) -> None:
    """``manifest.json`` replaced by a rename, never rewritten in place: a bundle's files may be
    hard links to the lake partitions it was assembled from (:func:`~ml_core.storage.link_tree`)."""
    atomic_write_text(Path(directory) / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str))


class BundleStore:
    """Immutable bundle versions plus the production pointer (see module docstring): the
    ``local`` backend of :class:`ml_core.registry.interface.BundleRegistry`."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / "registry"

    @property
    def location(self) -> str:
        return str(self.root)

    def has_version(self, version: str) -> bool:
        return self.version_dir(version).is_dir()

    @property
    def pointer_path(self) -> Path:
        return self.root / "production.json"

    def version_dir(self, version: str) -> Path:
        """``versions/<version>``; ValueError for a name that is not a version
        (:func:`check_version_name`) or that resolves outside ``versions/`` (a symbolic link)."""
        versions = self.root / "versions"
        d = versions / check_version_name(version)
        if d.exists() and not d.resolve().is_relative_to(versions.resolve()):
            raise ValueError(f"bundle {version} resolves outside {versions} (a symbolic link): not loaded")
        return d

    def checked_version_dir(self, version: str) -> Path:
        """``versions/<version>``, checked against what was published (:func:`verify_dir`, which
        requires ``_FILES.json``), against its name (:func:`check_bundle_identity`) and, with
        ``$MOGE_BUNDLE_KEY`` set, its signature (:func:`~ml_core.registry.signing.check_signature`): a
        truncated, changed, renamed or unsigned bundle raises :class:`CorruptPartitionError` and is never loaded."""
        d = self.version_dir(version)
        if not d.is_dir():
            raise FileNotFoundError(f"bundle {version} is not published in {self.root / 'versions'}")
        verify_dir(d, f"model bundle {version}", (
            f"Publish it again from the lake (`moge republish {version}`: its copy in "
            f"lake/deployed_model/ds={version[:10]}/bundle), or point {self.pointer_path.name} at another version"),
            require_files=True)
        return check_signature(check_bundle_identity(d, version), version)

    def versions(self) -> list[str]:
        d = self.root / "versions"
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []

    def publish(self, bundle: Path, version: str) -> Path:
        """Copy a complete bundle into ``versions/<version>`` (atomic; same version = replaced),
        signed when ``$MOGE_BUNDLE_KEY`` is set (:mod:`ml_core.registry.signing`)."""
        target = self.version_dir(version)
        with atomic_dir(target, finish=signer(version)) as tmp:
            shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        return target

    @contextlib.contextmanager
    def lock(self):
        """Exclusive lock for read-decide-write sequences on the pointer (concurrent deploys)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def production_stamp(self) -> tuple[int, int] | None:
        """The pointer file's mtime and inode (the gate's atomic rename changes both)."""
        try:
            st = os.stat(self.pointer_path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def production(self) -> dict | None:
        if not self.pointer_path.exists():
            return None
        return json.loads(self.pointer_path.read_text())

    def set_production(self, version: str, record: dict) -> None:
        self.checked_version_dir(version)  # only a complete, unchanged bundle is ever pointed at
        atomic_write_text(self.pointer_path, json.dumps({"version": version, **record}, indent=2, sort_keys=True, default=str))

    def record_decision(self, decision: dict) -> None:
        """Append one line to the decisions log (after a line torn by a killed or failed append,
        on a new line: that torn line stays what it was, an unfinished record)."""
        self.root.mkdir(parents=True, exist_ok=True)
        decision = {"at": datetime.now(UTC).isoformat(), **decision}
        with open(self.root / "decisions.jsonl", "a+b") as fh:
            torn = fh.seek(0, os.SEEK_END) > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
            fh.write((("\n" if torn else "") + json.dumps(decision, sort_keys=True, default=str) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())

    def decisions(self) -> list[dict]:
        """Every recorded decision, oldest first. A line that is not a complete JSON record (an
        append killed midway, or a full disk) was never a decision: it is skipped with a warning."""
        p = self.root / "decisions.jsonl"
        out = []
        for n, line in enumerate(p.read_text().splitlines() if p.exists() else [], 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                warnings.warn(f"{p}:{n} is not a complete decision record (an interrupted append), skipped: "
                              f"{line[:80]!r}", stacklevel=2)
        return out

