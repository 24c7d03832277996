"""Verify the venv against requirements/lock.txt: every distribution the project needs (its
dependencies and the dev extra, transitively) is installed at exactly the locked version.

torch and what only torch needs are left out: scripts/install.sh owns the torch choice (the CPU
wheel here, any torch >= 2.6 brought by the user). Exit 1 with the list of mismatches, e.g. after
a dependency was added to pyproject.toml without `make lock`.

    python scripts/check_lock.py requirements/lock.txt
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


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{path}: not an exact pin: {line!r}")
        pins[norm(name)] = version.strip()
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


def main(argv: list[str]) -> int:
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
