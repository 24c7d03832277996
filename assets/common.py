"""What every asset shares: settings access, code versions, metadata conversion."""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import math
from pathlib import Path

import dagster as dg

from ml_core.catalog import MODEL_INPUTS, TRAINING_SAMPLES
from ml_core.config import PipelineConfig
from ml_core.eval.plots import png_markdown
from ml_core.stop import StopRequested
from ml_core.storage import Lake

ROOT = Path(__file__).resolve().parents[1]
LAKE_IO = "lake_io"
#: A failed step is retried once inside the same run, so a retry never runs after later days.
RETRY = dg.RetryPolicy(max_retries=1, delay=10)


def stoppable(fn):
    """An asset body whose :class:`~ml_core.stop.StopRequested` (the run command got SIGINT or
    SIGTERM, :mod:`ml_core.stop`) fails its step at once, with the reason, instead of being
    retried by :data:`RETRY` 10 s later. Put it under the asset decorator."""
    def stopped(e: StopRequested) -> dg.Failure:
        return dg.Failure(description=str(e), allow_retries=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except StopRequested as e:
                raise stopped(e) from e
        return gen

    @functools.wraps(fn)
    def body(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StopRequested as e:
            raise stopped(e) from e
    return body


def stage(group: str, kinds: set[str], model: bool = False, **extra) -> dict:
    """Decorator arguments every asset of the flow shares: the derived data assets' daily
    partitions (from the day after the source's first day) and backfill policy (many days a
    run), or with ``model`` the model assets' (which start once a training window exists; the
    model chain's range in one run). The body runs its days with :func:`assets.ranges.materialize_days`."""
    from assets.partitions import derived_daily, model_daily
    from assets.ranges import DATA_POLICY, MODEL_POLICY

    return {"partitions_def": model_daily if model else derived_daily, "group_name": group, "kinds": kinds,
            "owners": ["team:recsys"], "io_manager_key": LAKE_IO, "required_resource_keys": {"pipeline"},
            "retry_policy": RETRY, "backfill_policy": MODEL_POLICY if model else DATA_POLICY, **extra}


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` of this repository (a package: its ``__init__.py``)."""
    base = ROOT.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported_modules(path: Path) -> frozenset[str]:
    """Repository modules that ``path`` imports, anywhere in its body (function-level imports too).
    Each file is parsed once per process and version of the file (every asset module's code
    version walks the same ml_core modules, and every run worker loads all of them)."""
    st = path.stat()
    return _parsed_imports(path, st.st_mtime_ns, st.st_size)


@functools.cache
def _parsed_imports(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, mod] if mod else base)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__code_deps__" for t in node.targets):
            out.update(_package_modules(ast.literal_eval(node.value)))  # modules it loads by name
    return frozenset(m for m in out if m.split(".")[0] in CODE_ROOTS and _module_file(m))


def _package_modules(names) -> set[str]:
    """Each name of ``names``; a package stands for every module under it."""
    out = set()
    for name in names:
        base = ROOT.joinpath(*name.split("."))
        if base.is_dir():
            out.update(".".join(f.relative_to(ROOT).with_suffix("").parts) for f in base.rglob("*.py"))
        else:
            out.add(name)
    return out


def code_files(*modules: str) -> list[Path]:
    """Source files of ``modules`` and of every repository module they import, transitively."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        f = _module_file(name)
        if f is None:
            raise ValueError(f"code_version: no module {name!r} in {ROOT}")
        if name in seen:
            continue
        seen[name] = f
        todo.extend(_imported_modules(f) - set(seen))
    return sorted(set(seen.values()))


def code_version(*modules: str, shallow: tuple[str, ...] = ()) -> str:
    """Hash of the source an asset's result depends on: ``modules`` (its asset module and stage
    module) and every ml_core module they import, followed through the imports (a package import
    counts its ``__init__.py`` only). Nothing is listed by hand, so a module a stage starts to
    use counts at once; a module that imports others by name (the model registry) declares them
    in ``__code_deps__``.

    Changing any of them marks the asset's materializations stale in the UI, and only those:
    editing the deployment gate (``ml_core/stages/gate.py``) changes deployed_model's version alone.
    ``shallow`` modules count without their imports (a multi-asset module that calls one stage per
    asset: each asset's version follows its own stage only).
    """
    h = hashlib.sha256()
    for f in sorted({*code_files(*modules), *(_module_file(m) for m in shallow)}):
        h.update(f.relative_to(ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


#: Imports followed for code versions: ml_core's (an asset module's own imports of other asset
#: modules, e.g. the partitions, are not its computation).
CODE_ROOTS = ("ml_core",)


def lineage_deps(mapping) -> list:
    """``deps=`` of an asset that reads :data:`~ml_core.catalog.MODEL_INPUTS` (the day inputs a model
    reads beside its samples) itself over the days of ``mapping`` (lineage only: no IO manager load)."""
    return [dg.AssetDep(name, partition_mapping=mapping) for name in MODEL_INPUTS]


def on_demand(kinds: set[str]) -> dict:
    """Decorator arguments of an on-demand asset of day D (the comparison, the search): group
    ``comparison``, no automation, the samples of D-T .. D as its input and the same days'
    features and graphs as lineage (read by the stage from the lake)."""
    from assets.partitions import train_and_eval_mapping

    return {**stage("comparison", kinds, model=True), "backfill_policy": None,  # one run per day: many days is a study
            "ins": {TRAINING_SAMPLES: dg.AssetIn(partition_mapping=train_and_eval_mapping)},
            "deps": lineage_deps(train_and_eval_mapping)}


def settings(context) -> tuple[PipelineConfig, Lake]:
    """The run's config and lake; refuses a config whose windows disagree with the partitions."""
    from assets.partitions import CONFIG

    res = context.resources.pipeline
    cfg = res.config()
    fixed = {"graph.window_days": (cfg.graph.window_days, CONFIG.graph.window_days),
             "train.train_days": (cfg.train.train_days, CONFIG.train.train_days),
             "source.start_date": (cfg.source.start_date, CONFIG.source.start_date),
             "source.timezone": (cfg.source.timezone, CONFIG.source.timezone)}
    bad = {k: v for k, v in fixed.items() if v[0] != v[1]}
    if bad:
        raise ValueError(
            "these settings shape the partitions and their window mappings, which are fixed when the code "
            f"location loads ($MOGE_CONFIG / data/pipeline.toml): {bad} (run value, load value). "
            "Change them in the TOML file and reload the code location instead of overriding them per run."
        )
    return cfg, Lake(cfg.storage.root)


def fields_of(obj, *drop: str) -> dict:
    """A stage result's fields (a dataclass) as a flat dict for metadata, less ``drop``."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in drop}


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
    return dg.MaterializeResult(asset_key=asset, metadata=md, data_version=dg.DataVersion(version))
