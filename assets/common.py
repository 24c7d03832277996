"""What every asset shares: settings access, code versions, metadata conversion."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import dagster as dg

from ml_core.config import PipelineConfig
from ml_core.eval.plots import png_markdown
from ml_core.storage import Lake

ROOT = Path(__file__).resolve().parents[1]
LAKE_IO = "lake_io"


def code_version(*paths: str) -> str:
    """Hash of the source files an asset's result depends on (ml_core subpackages + its module).

    Changing any of them marks the asset's materializations stale in the UI.
    """
    h = hashlib.sha256()
    for rel in sorted(paths):
        p = ROOT / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


# Every stage depends on these shared modules.
COMMON = ("ml_core/config.py", "ml_core/storage.py", "ml_core/pipeline.py", "ml_core/data/schema.py")


def settings(context) -> tuple[PipelineConfig, Lake]:
    res = context.resources.pipeline
    return res.config(), res.lake()


def to_metadata_value(v):
    if isinstance(v, bool):
        return dg.MetadataValue.bool(v)
    if isinstance(v, int):
        return dg.MetadataValue.int(v)
    if isinstance(v, float):
        return dg.MetadataValue.float(v) if math.isfinite(v) else dg.MetadataValue.text(str(v))
    if isinstance(v, str):
        return dg.MetadataValue.text(v)
    return dg.MetadataValue.json(_jsonable(v))


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    return v


def result(lake: Lake, asset: str, day: str, stats: dict, plots: dict[str, bytes] | None = None,
           markdown: dict[str, str] | None = None) -> dg.MaterializeResult:
    """MaterializeResult with flat stats as metadata, plots as Markdown images and the stored
    partition's content hash as its data version (lineage pins inputs by these versions)."""
    md = {k: to_metadata_value(v) for k, v in stats.items()}
    for name, png in (plots or {}).items():
        md[name] = dg.MetadataValue.md(png_markdown(png, name))
    for name, text in (markdown or {}).items():
        md[name] = dg.MetadataValue.md(text)
    version = lake.version(asset, day)
    md["data_version"] = dg.MetadataValue.text(version)
    md["path"] = dg.MetadataValue.path(str(lake.partition_dir(asset, day)))
    return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version))
