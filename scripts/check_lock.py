"""Verify the venv against requirements/lock.txt: every distribution the project needs (its
dependencies and the dev extra, transitively) is installed at exactly the locked version, and
every pin of the lock carries at least one sha256 (``pip install --require-hashes``).

torch and what only torch needs are left out: scripts/install.sh owns the torch choice (the CPU
wheel here, any torch >= 2.6 brought by the user). Exit 1 with the list of mismatches, e.g. after
a dependency was added to pyproject.toml without `make lock`.

    python scripts/check_lock.py requirements/lock.txt
    python scripts/check_lock.py --pins requirements/lock.txt   # print the pins, name==version (scripts/lock.sh --keep)
    python scripts/check_lock.py --add-base-pins LOCK            # see add_base_pins (scripts/lock.sh)
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "moge-pipeline"
EXTRAS = {"dev"}
OWN_CHOICE = {"torch"}  # installed by scripts/install.sh, deliberately not locked


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path, require_hashes: bool = True) -> dict[str, str]:
    """``{name: version}`` of the hashed lock ``path`` (pip-compile's format: ``name==version \\``
    followed by ``--hash=sha256:...`` lines); SystemExit for a line that is not an exact pin or a
    pin without a hash."""
    pins, hashed = {}, set()
    entries = re.sub(r"\\\n", " ", path.read_text())  # one requirement per line
    for line in entries.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, sep, version = spec.partition("==")
        name = name.split("[", 1)[0]  # gql[requests]==4.0.0: the extras a dependency asks for are pinned with it
        if not sep:
            raise SystemExit(f"{path}: not an exact pin: {line[:120]!r}")
        pins[norm(name)] = version.strip()
        if any(o.startswith("--hash=sha256:") for o in options):
            hashed.add(norm(name))
    unhashed = sorted(set(pins) - hashed)
    if unhashed and require_hashes:
        raise SystemExit(f"{path}: pins without a --hash (run `make lock`): {unhashed}")
    return pins


def needed(project: str, extras: set[str]) -> set[str]:
    """Names of the distributions ``project[extras]`` needs, transitively, in this environment
    (environment markers evaluated; torch's own subtree not followed)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [(project, frozenset(extras))]
    while todo:
        name, ext = todo.pop()
        if name in OWN_CHOICE:
            continue
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            env_ok = any(req.marker is None or req.marker.evaluate({"extra": e}) for e in (ext or {""}))
            dep = norm(req.name)
            if env_ok and dep not in seen:
                seen.add(dep)
                todo.append((dep, frozenset(req.extras)))
    return seen - OWN_CHOICE


def add_base_pins(text: str) -> str:
    """``text`` (a hashed lock) with a plain ``name==version`` entry, the same hashes, after each
    ``name[extras]==version`` entry that has none: pip's hash-checking mode does not count
    ``uvicorn[standard]==0.54.0`` as a pin of the ``uvicorn<1`` another package asks for."""
    entries = re.split(r"\n(?=\S)", text.strip("\n"))
    plain = {e.split("==", 1)[0] for e in entries if "==" in e and "[" not in e.split("==", 1)[0]}
    out = []
    for e in entries:
        out.append(e)
        name = e.split("==", 1)[0]
        if "[" in name and not e.lstrip().startswith("#") and name.split("[", 1)[0] not in plain:
            out.append(re.sub(r"^[^=]+\[[^\]]*\]==", name.split("[", 1)[0] + "==", e))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) > 2 and argv[1] == "--add-base-pins":
        path = Path(argv[2])
        path.write_text(add_base_pins(path.read_text()))
        return 0
    if len(argv) > 1 and argv[1] == "--pins":
        for name, version in read_lock(Path(argv[2] if len(argv) > 2 else "requirements/lock.txt"), False).items():
            print(f"{name}=={version}")
        return 0
    lock = read_lock(Path(argv[1] if len(argv) > 1 else "requirements/lock.txt"))
    problems = []
    for name in sorted(needed(PROJECT, EXTRAS)):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: needed but not installed")
            continue
        want = lock.get(name)
        if want is None:
            problems.append(f"{name}=={have}: not in the lock (run `make lock`)")
        elif have != want:
            problems.append(f"{name}: installed {have}, locked {want}")
    if problems:
        print("the venv does not match the lock:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"lock: {len(lock)} pins, every needed distribution at its locked version")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
