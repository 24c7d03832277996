"""Install orchestration/dagster.yaml into $DAGSTER_HOME: the one place `make dev` and the run
command set up the instance.

    python -m orchestration.instance_setup      (make dev runs this before `dagster dev`)

The repo's file owns the top-level sections it sets, plus ``run_queue`` (its limit moved to
``concurrency``). An instance's other sections (``storage``, ``run_launcher``, ...) are kept,
appended after the repo's text. When that differs from the instance's file, the old file is kept
as ``dagster.yaml.<time>.bak`` and the new one written atomically, after Dagster has validated
it; so an instance created by an older checkout gets the new settings on the next `make dev` or
`make run`. Edit orchestration/dagster.yaml, not the copy. A running ``dagster dev`` reads the
file when it starts: restart it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

SOURCE = Path(__file__).with_name("dagster.yaml")
#: Sections the repo's file replaced: dropped from an instance's file.
RETIRED = ("run_queue",)
_KEPT_HEADER = "# Kept from this instance's previous dagster.yaml (sections the repo's file does not set):\n"


def dagster_home() -> Path:
    """$DAGSTER_HOME, set to data/dagster_home (absolute) when unset, and created."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path("data/dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    return home


def merged_text(repo_text: str, current_text: str | None) -> str:
    """The instance file: the repo's text, then the instance's sections the repo does not own."""
    owned = set(yaml.safe_load(repo_text) or {}) | set(RETIRED)
    try:
        current = yaml.safe_load(current_text or "") or {}
    except yaml.YAMLError:
        current = {}
    if not isinstance(current, dict):
        current = {}
    kept = {k: v for k, v in current.items() if k not in owned}
    if not kept:
        return repo_text
    return repo_text.rstrip("\n") + "\n\n" + _KEPT_HEADER + yaml.safe_dump(kept, sort_keys=False)


def _validate(text: str) -> None:
    """Dagster's own check of an instance file (raises DagsterInvalidConfigError, naming the key)."""
    from dagster._core.instance.config import dagster_instance_config

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "dagster.yaml").write_text(text)
        dagster_instance_config(d)


def sync_instance_yaml(home: Path | None = None, source: Path = SOURCE) -> str | None:
    """Bring ``home``/dagster.yaml up to date with ``source``; a line saying what changed, or None."""
    home = dagster_home() if home is None else Path(home)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    current = target.read_text() if target.exists() else None
    new = merged_text(source.read_text(), current)
    if new == current:
        return None
    _validate(new)
    msg = f"installed {source} as {target}"
    if current is not None:
        backup = target.with_name(f"dagster.yaml.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        shutil.copy2(target, backup)
        msg = f"updated {target} from {source} (previous file: {backup.name})"
    tmp = target.with_name(f".dagster.yaml.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, target)
    return msg


def main() -> int:
    msg = sync_instance_yaml()
    if msg:
        print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
