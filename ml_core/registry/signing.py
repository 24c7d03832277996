"""Who published a model bundle: an HMAC signature, written at publish, checked at load.

The integrity records (``_FILES.json``, :mod:`ml_core.integrity`) catch corruption and renamed
copies, not a writer who rewrites the records with the files. With a key, the publisher signs
what the records say: ``_SIGNATURE`` holds HMAC-SHA256(key, version name + the sha256 of
``_FILES.json``). ``_FILES.json`` holds the size and sha256 of every file of the bundle
(``manifest.json`` included), so the signature covers every byte and the name the bundle was
published under: a changed file, an added or removed one, rewritten records or a copy under
another name all fail the check, unless whoever did it also holds the key.

The key is the environment's ``$MOGE_BUNDLE_KEY`` (:func:`bundle_key`; at least
:data:`MIN_KEY_CHARS` characters), the same on the machines that publish (the deployment gate,
``moge republish``) and those that load (``moge serve``, training's warm start, evaluation's
reference models). With a key set, a bundle without a valid signature is never loaded; without
one, signatures are not checked unless the caller requires them (``moge serve --watch``, which
loads whatever the pointer names, does: :func:`check_signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from ml_core.integrity import INTEGRITY_FILE, SIGNATURE_FILE, CorruptPartitionError

#: The environment variable holding the signing key.
KEY_ENV = "MOGE_BUNDLE_KEY"
#: Shortest key accepted (a short key can be guessed: 32 characters of a random token).
MIN_KEY_CHARS = 32
ALGORITHM = "hmac-sha256"


class SignatureError(CorruptPartitionError):
    """A bundle that is unsigned where a signature is required, or whose signature does not match."""


def bundle_key(environ=os.environ) -> bytes | None:
    """The signing key of ``$MOGE_BUNDLE_KEY`` (None when unset or empty); ValueError when shorter
    than :data:`MIN_KEY_CHARS`."""
    key = environ.get(KEY_ENV, "").strip()
    if not key:
        return None
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"${KEY_ENV} has {len(key)} characters, at least {MIN_KEY_CHARS} are needed "
                         "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    return key.encode()


def _mac(directory: Path, version: str, key: bytes) -> str:
    records = (Path(directory) / INTEGRITY_FILE).read_bytes()
    message = b"moge-bundle\0" + version.encode() + b"\0" + hashlib.sha256(records).hexdigest().encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_bundle(directory: Path, version: str, key: bytes) -> None:
    """Write ``directory/_SIGNATURE`` for ``version`` (the bundle's ``_FILES.json`` must be written)."""
    record = {"algorithm": ALGORITHM, "version": version, "mac": _mac(directory, version, key)}
    (Path(directory) / SIGNATURE_FILE).write_text(json.dumps(record, sort_keys=True))


def signer(version: str, key: bytes | None = None):
    """What a publisher hands :func:`ml_core.storage.atomic_dir` as ``finish``: signs the sealed
    bundle as ``version`` with ``key`` (default :func:`bundle_key`); None without a key."""
    key = bundle_key() if key is None else key
    return None if key is None else (lambda d: sign_bundle(d, version, key))


def check_signature(directory: Path, version: str, required: bool = False, key: bytes | None = None) -> Path:
    """``directory`` when its signature is valid for ``version`` under ``key`` (default
    :func:`bundle_key`). With no key: nothing is checked, unless ``required`` (then
    :class:`SignatureError`: the key is missing). With a key, an unsigned bundle or a signature
    that does not match raises :class:`SignatureError`. Call it after the integrity check
    (:func:`~ml_core.integrity.verify_dir`): the signature vouches for the records, the records for the files."""
    directory = Path(directory)
    key = bundle_key() if key is None else key
    if key is None:
        if required:
            raise SignatureError(f"bundle {version} must be signed here, but ${KEY_ENV} is not set: set it to the key "
                                 "the pipeline publishes with (or start the server with --allow-unsigned)")
        return directory
    path = directory / SIGNATURE_FILE
    if not path.is_file():
        raise SignatureError(f"bundle {version} at {directory} is not signed (no {SIGNATURE_FILE}) and ${KEY_ENV} "
                             f"is set: only signed bundles are loaded. Publish it again with the key (`moge republish "
                             f"{version}`)")
    try:
        record = json.loads(path.read_text())
        given, algorithm = str(record["mac"]), record["algorithm"]
    except (ValueError, KeyError, TypeError) as e:
        raise SignatureError(f"bundle {version}: its {SIGNATURE_FILE} is unreadable ({type(e).__name__})") from None
    if algorithm != ALGORITHM or not hmac.compare_digest(given, _mac(directory, version, key)):
        raise SignatureError(f"bundle {version} at {directory}: its signature does not match (the files, their records "
                             f"or the version name changed since it was signed, or it was signed with another key)")
    return directory
