"""Signed bundles (ml_core/registry/signing.py): the signature written at publish when $MOGE_BUNDLE_KEY is
set, checked at every load; ``moge serve --watch`` and any server with a key refuse an unsigned
or badly signed bundle."""

from __future__ import annotations

import json
import shutil

import pytest

from ml_core.cli import main
from ml_core.integrity import SIGNATURE_FILE, seal
from ml_core.registry.bundles import BundleStore
from ml_core.registry.signing import KEY_ENV, SignatureError, bundle_key, check_signature, sign_bundle, signer
from ml_core.serving.app import create_app
from ml_core.serving.scorer import Scorer
from ml_core.serving.state import ServeOptions
from ml_core.storage import atomic_dir

KEY = "k" * 40
OTHER = "o" * 40


def small_bundle(tmp_path, version="2026-01-03-0123456789", key=KEY.encode()):
    target = tmp_path / version
    with atomic_dir(target, finish=signer(version, key)) as tmp:
        (tmp / "model.pt").write_bytes(b"weights")
        (tmp / "manifest.json").write_text(json.dumps({"version": version}))
    return target, version


def test_a_signed_directory_checks_and_any_change_fails(tmp_path):
    d, v = small_bundle(tmp_path)
    key = KEY.encode()
    assert check_signature(d, v, key=key) == d
    assert check_signature(d, v, required=True, key=key) == d
    with pytest.raises(SignatureError, match="does not match"):  # another key
        check_signature(d, v, key=OTHER.encode())
    with pytest.raises(SignatureError, match="does not match"):  # the same bytes under another name
        check_signature(d, "2026-01-03-ffffffffff", key=key)
    (d / "model.pt").write_bytes(b"weightz")  # changed, and the records rewritten to match
    seal(d)
    with pytest.raises(SignatureError, match="does not match"):
        check_signature(d, v, key=key)
    sign_bundle(d, v, key)  # only the key holder can vouch for the new records
    assert check_signature(d, v, key=key) == d
    (d / SIGNATURE_FILE).write_text("{not json")
    with pytest.raises(SignatureError, match="unreadable"):
        check_signature(d, v, key=key)
    (d / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="not signed"):
        check_signature(d, v, key=key)


def test_the_key_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert bundle_key() is None and signer("v") is None
    d, v = small_bundle(tmp_path)
    assert check_signature(d, v) == d  # no key: not checked
    with pytest.raises(SignatureError, match=f"{KEY_ENV} is not set"):
        check_signature(d, v, required=True)
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 32"):
        bundle_key()
    monkeypatch.setenv(KEY_ENV, f" {KEY} ")
    assert bundle_key() == KEY.encode() and check_signature(d, v) == d


def test_publish_signs_and_the_loaders_check(mmoe, tmp_path, monkeypatch):
    """With the key set: a published bundle is signed and loads; a renamed copy (records
    rewritten to match), a tampered file and an unsigned bundle are refused, by the store, the
    scorer and the server; without the key, --watch refuses to start on an unsigned bundle."""
    src = BundleStore(mmoe.serve_root).version_dir(mmoe.version)
    monkeypatch.setenv(KEY_ENV, KEY)
    store = BundleStore(tmp_path / "signed")
    target = store.publish(src, mmoe.version)
    assert (target / SIGNATURE_FILE).is_file()
    store.set_production(mmoe.version, {"partition": mmoe.version[:10]})
    assert Scorer.from_registry(store.root.parent).version == mmoe.version
    # a copy under another name, its manifest and records made to match the new name
    other = "2026-01-03-ffffffffff"
    copy = store.root / "versions" / other
    shutil.copytree(target, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": other}))
    seal(copy)
    with pytest.raises(SignatureError, match="does not match"):
        store.checked_version_dir(other)
    # a changed weight file: the records catch it before the signature is looked at
    shutil.rmtree(copy)
    shutil.copytree(target, copy)
    with open(copy / "model.pt", "r+b") as fh:
        fh.write(b"\0")
    with pytest.raises(Exception, match="sha256|does not match"):
        Scorer.from_bundle(copy)
    # an unsigned bundle: refused with the key set, by the store and by a server
    unsigned = tmp_path / "unsigned"
    monkeypatch.delenv(KEY_ENV)
    BundleStore(unsigned).publish(src, mmoe.version)
    BundleStore(unsigned).set_production(mmoe.version, {"partition": mmoe.version[:10]})
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(SignatureError, match="not signed"):
        BundleStore(unsigned).checked_version_dir(mmoe.version)
    with pytest.raises(SignatureError, match="not signed"):
        create_app(unsigned, options=ServeOptions(threads=1))
    # no key: a plain server loads it, one that must check signatures refuses
    monkeypatch.delenv(KEY_ENV)
    assert create_app(unsigned, options=ServeOptions(threads=1)).state.holder.current.version == mmoe.version
    with pytest.raises(SignatureError, match="is not set"):
        create_app(unsigned, options=ServeOptions(threads=1, require_signature=True))


def test_moge_serve_watch_requires_signed_bundles(mmoe, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(KEY_ENV, raising=False)
    shutil.copytree(mmoe.serve_root / "registry", tmp_path / "registry")
    assert main(["serve", "--root", str(tmp_path), "--watch", "2"]) == 1
    assert f"${KEY_ENV} is not set" in capsys.readouterr().err
