"""The hashed lock (requirements/lock.txt, scripts/lock.sh) as scripts/install.sh uses it with
``pip install --require-hashes``: every pin exact and hashed, each ``name[extra]`` pin next to a
plain one, torch left to install.sh and its floor at 2.6. The audit of the lock is
scripts/audit_lock.sh (make test runs it before this suite)."""

from __future__ import annotations

import importlib.util
import re
import tomllib

import pytest

from tests.conftest import REPO

LOCK = REPO / "requirements" / "lock.txt"


@pytest.fixture(scope="module")
def check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_pin_is_exact_and_hashed(check_lock):
    pins = check_lock.read_lock(LOCK)  # SystemExit for an unpinned or unhashed entry
    assert len(pins) > 100 and "torch" not in pins and "pip-audit" in pins
    text = LOCK.read_text()
    extras = set(re.findall(r"^([A-Za-z0-9_.-]+)\[[^\]]+\]==", text, re.M))
    plain = set(re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M))
    assert extras and extras <= plain, extras - plain  # uvicorn==X beside uvicorn[standard]==X


def test_an_unhashed_pin_is_refused(check_lock, tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.0.0 \\\n    --hash=sha256:" + "0" * 64 + "\nscipy==1.11.0\n")
    with pytest.raises(SystemExit, match="without a --hash.*scipy"):
        check_lock.read_lock(lock)
    assert check_lock.read_lock(lock, require_hashes=False) == {"numpy": "2.0.0", "scipy": "1.11.0"}


def test_base_pins_are_added_beside_extras(check_lock):
    text = "a[x]==1 \\\n    --hash=sha256:aa\nb==2 \\\n    --hash=sha256:bb\nb[y]==2 \\\n    --hash=sha256:bb\n"
    out = check_lock.add_base_pins(text)
    assert out.count("a==1 \\\n    --hash=sha256:aa") == 1 and out.count("\nb==2") == 1
    assert check_lock.add_base_pins(out) == out


def test_the_torch_floor_is_2_6():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [torch] = [d for d in deps if re.match(r"torch\b(?!-)", d)]
    assert torch.replace(" ", "") == "torch>=2.6"  # below it torch.load(weights_only=True) runs code (CVE-2025-32434)
