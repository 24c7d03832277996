"""The one configuration system of the pipeline.

Every stage reads one typed dataclass below. Values come from, in order of precedence:

1. overrides given as ``section.key=value`` strings (CLI ``--set``, the Dagster resource's
   ``overrides`` field, tests),
2. a TOML file (default ``data/pipeline.toml``, or the path in ``$MOGE_CONFIG``),
3. the defaults written here, each with the reason it was chosen.

Every section is built with :func:`ml_core.typed.build`, so an unknown key or a value of the
wrong type fails at load with a :class:`~ml_core.typed.ConfigError` naming the key, the value
and the expected type (``train.epochs = '2' (str): expected int``). ``source.kind`` selects the
dataclass of ``[source]`` (:data:`SOURCE_KINDS`). :func:`validate_config` then checks what
needs nothing above this module; checks that need the models, the training extensions or the
source files are in :func:`ml_core.preflight.check_runnable` (run when the code location loads).

ml_core never imports dagster; the orchestration layer wraps :func:`load_config` in a resource.
This module imports nothing of ml_core but :mod:`ml_core.typed`, :mod:`ml_core.config.source`,
:mod:`ml_core.config.automation`, :mod:`ml_core.config.cf`, :mod:`ml_core.config.dist`,
:mod:`ml_core.config.tuning` and :mod:`ml_core.config.registry`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ml_core.config.automation import AutomationConfig, check_automation  # [automation]: catch-up, backfill runs
from ml_core.config.cf import CFConfig  # the [cf] section: the classical CF scorers
from ml_core.config.dist import DistributedConfig  # [train] distributed: torch DDP under torchrun
from ml_core.config.registry import RegistryConfig  # the [registry] section: local or MLflow

# re-exported: the [source] section is part of the one config
from ml_core.config.source import DEFAULT_TIMEZONE as DEFAULT_TIMEZONE
from ml_core.config.source import SOURCE_KINDS as SOURCE_KINDS
from ml_core.config.source import AttributeTable as AttributeTable
from ml_core.config.source import FileSourceConfig as FileSourceConfig
from ml_core.config.source import SourceBase as SourceBase
from ml_core.config.source import SourceConfig as SourceConfig
from ml_core.config.source import SyntheticSource as SyntheticSource
from ml_core.config.source import TableSource as TableSource
from ml_core.config.source import TaobaoSource as TaobaoSource
from ml_core.config.source import TmallSource as TmallSource
from ml_core.config.source import build_source as build_source
from ml_core.config.source import source_config as source_config
from ml_core.config.tuning import TuningConfig  # the [tuning] section: the on-demand hyper-parameter search
from ml_core.typed import ConfigError, build

DEFAULT_CONFIG_PATH = Path("data/pipeline.toml")


#: Canonical behaviours, in funnel order (re-exported by :mod:`ml_core.data.schema`). Defined
#: here, at the bottom layer, so the configuration can check task and weight names.
BEHAVIORS: tuple[str, ...] = ("view", "cart", "fav", "buy")

@dataclass
class GraphConfig:
    #: W: days of logs before D that make the graph of day D. 7 keeps a week's seasonality.
    window_days: int = 7
    #: Edge weight of each behaviour; a user-item edge sums its events' weights.
    behavior_weights: dict[str, float] = field(
        default_factory=lambda: {"view": 1.0, "cart": 2.0, "fav": 2.0, "buy": 4.0}
    )
    #: k of the top-k similarity graphs.
    topk: int = 10
    #: ``cosine`` over behaviour-weighted co-interactions (default) or ``jaccard``.
    similarity: Literal["cosine", "jaccard"] = "cosine"
    #: Nodes of the other side with more neighbours than this are "hubs": their
    #: co-interactions are skipped when counting (cost grows with degree squared). 0 = exact.
    hub_degree_cap: int = 0
    #: Rows processed per chunk of the sparse product (bounds peak memory).
    chunk_rows: int = 4096
    #: Derive day D's graphs from day D-1's (+ the day that enters, - the day that leaves) when
    #: D-1's refresh state is stored and matches; otherwise (first day, gaps, backfills out of
    #: order, changed settings) rebuild from the whole window. Both give identical graphs.
    incremental: bool = True
    #: Also run the full rebuild after an incremental refresh and fail if they differ (audits).
    verify_incremental: bool = False
    #: Where the similarity rows are walked (ml_core/graph/engine.py, same bits either way): ``local``, or
    #: ``dask``: row blocks on the Dask scheduler at ``engine_address`` ("" = a local cluster of
    #: ``engine_workers`` processes), ``engine_blocks`` blocks (0 = 4 per worker). Not in the fingerprint.
    engine: Literal["local", "dask"] = "local"
    engine_address: str = ""
    engine_workers: int = 2
    engine_blocks: int = 0
    #: TLS to a ``tls://`` scheduler: CA, client certificate and key (PEM), all or none. Dask's protocol
    #: carries pickles and ``tcp://`` neither encrypts nor authenticates. Not in the fingerprint.
    engine_tls_ca_file: str = ""
    engine_tls_cert: str = ""
    engine_tls_key: str = ""


@dataclass
class SampleConfig:
    #: Task name -> behaviours that make the label 1. Default: click = any interaction,
    #: purchase = buy (the common e-commerce pair; MoGE's IJCAI-15 setup used fav + buy).
    tasks: dict[str, list[str]] = field(
        default_factory=lambda: {"click": ["view", "cart", "fav", "buy"], "purchase": ["buy"]}
    )
    #: Negatives per positive (user, item) pair, among items the user did not touch that day.
    negatives_per_positive: int = 4
    #: Where negative items come from. ``positives`` (default): the day's positive-item
    #: distribution, so an item's newness, popularity and category say nothing about the label
    #: (no free signal for a scorer that ignores the pair). ``popularity``: the window graph's items
    #: and today's, proportional to (popularity + 1)^``popularity_power`` (the earlier default,
    #: measured on the Taobao excerpt: "item is not in the window graph" alone scored click GAUC 0.79).
    negative_items: Literal["positives", "popularity"] = "positives"
    popularity_power: float = 0.75
    seed: int = 13


@dataclass
class TrainConfig:
    #: Registered model name (see ml_core.models.registry): MoGE by default; ``mmoe``, the zoo's
    #: baselines and the other systems are one word away (docs/models.md).
    model: str = "moge"
    #: T: days of samples before D the model of day D is trained on.
    train_days: int = 3
    epochs: int = 2
    batch_size: int = 256
    #: Paper: Adam, lr 1e-4 with batch 256 on tens of millions of samples. Our daily windows are
    #: far smaller, so the default is larger; set 1e-4 to reproduce the paper's setting.
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: d, the representation size (paper: 64).
    dim: int = 64
    #: Per-hop neighbour fan-outs of the sampler (L = len(fanouts)).
    fanouts: list[int] = field(default_factory=lambda: [10, 5])
    #: ``auto`` picks CUDA when available, else CPU; or ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps``
    #: (a str checked by :func:`validate_config`, since ``cuda:N`` is open-ended).
    device: str = "auto"
    #: Intra-op CPU threads for torch (0 = all cores). 1 by default: at these layer sizes the
    #: ops are too small to split, and on the 2-core CI machine 2 threads measured up to 37x
    #: slower under load (MMoE, batch 256: 414 vs 15,173 samples/s). The second core prepares
    #: the next batches (neighbour sampling) in a background thread instead (see trainer).
    threads: int = 1
    #: Batches built ahead in a background thread (0 = build in the training loop).
    prefetch: int = 4
    #: Mixed precision on CUDA (ignored on CPU).
    amp: bool = True
    seed: int = 0
    #: Stop after this many optimiser steps per epoch (0 = no limit): a budget knob.
    max_steps_per_epoch: int = 0
    #: Log a progress line (step / steps of the epoch, loss, samples/s, ETA) every this many
    #: optimiser steps, and one every this many scoring batches in the evaluation (0 = off).
    #: 50: a line every ~13k samples at batch 256, so a long epoch is never silent for long.
    log_every_steps: int = 50
    #: Also hide a training sample's own (user, item) edge from the bipartite channel when it
    #: exists from earlier days (day D's own events are never in day D's graph anyway).
    mask_target_edges: bool = False
    #: The pair input: what the user did with the item and its category in the window (counts
    #: per behaviour, recency; ml_core/history.py). False for ablations (node inputs and graphs only).
    pair_features: bool = True
    #: With the pair input, also what the user did with the items most similar to the item, and
    #: what the most similar users did with it (item-kNN / user-kNN sums over the day's graphs).
    pair_knn: bool = True
    #: N: also read the user's last N window events attended against the item (DIN, ml_core/nn/sequence.py); 0 = off.
    sequence_length: int = 0
    #: Model-specific keyword arguments, e.g. {interaction = "ep", beta = 1e-6}.
    model_args: dict[str, Any] = field(default_factory=dict)
    #: ``adam`` (default) or ``sevo`` (AdamW-SEvo: graph-smoothed id-embedding updates), see
    #: ml_core/train/extensions.py; its keyword arguments in ``optimizer_args``.
    optimizer: str = "adam"
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    #: Steps run after training, in order, e.g. ["lightgode"] (LightGODE's graph ODE over the id
    #: embeddings); their keyword arguments in ``post_training_args = {lightgode = {...}}``.
    post_training: list[str] = field(default_factory=list)
    post_training_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Start day D's training from an earlier model so it learns from all of history, not only its T days:
    #: ``previous`` = trained_model[D-1], ``production`` = the production bundle, ``none`` = from scratch.
    #: Incompatible (model, model_args, dim, fanouts, tasks, feature columns) -> scratch, reason in the manifest.
    warm_start: Literal["none", "previous", "production"] = "previous"
    #: Also carry Adam's moments (saved as optimizer.pt by runs with this set). Off: it triples the bundle.
    warm_start_optimizer: bool = False
    #: Early stopping's slice, drawn from the training days only (never day D): ``last_day`` (the day
    #: closest to D, trains on the others; none with one day), ``users`` (a seeded ``validation_share`` of
    #: users: scores cold users) or ``none`` (train on everything, budget only). ml_core/train/validation.py.
    validation: Literal["none", "last_day", "users"] = "last_day"
    validation_share: float = 0.1
    #: Validate every N steps (0 = at each epoch's end). 200 steps = 51k samples: ~6 checks per default epoch, so
    #: patience can act within 2 epochs; a check of the demo's last day (83k samples) took ~2 s vs ~15 s per 200 steps.
    eval_every_steps: int = 200
    #: Validations without a better mean validation GAUC before stopping (0 = never; best weights kept).
    patience: int = 3
    #: Wall-time cap of training in seconds (0 = none): a budget that holds on any hardware.
    max_seconds: float = 0.0
    #: Data-parallel training under torchrun, e.g. ``{ nproc = 2, backend = "auto" }`` (ml_core/config/dist.py).
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass
class DeployConfig:
    #: Promote only if every task's GAUC >= the best reference's GAUC - tolerance, the references
    #: being the last ``compare_last`` promoted models, each scored on the candidate's own day.
    gauc_tolerance: float = 0.005
    #: How many of the most recent promoted models are references. With 1 (production only) a
    #: run of candidates each slightly worse than the last could drift down without bound; with N
    #: a model is never more than ``gauc_tolerance`` below any of the N before it. 7 = a week.
    compare_last: int = 7
    #: And only if every task's GAUC is at least this (a floor; 0.5 = random). The sanity
    #: scorers (ml_core/sanity.py) are a second floor: a model must beat every one of them.
    min_gauc: float = 0.5
    #: Each GAUC difference with a reference carries a paired bootstrap interval over users
    #: (ml_core/eval/bootstrap.py): "worse" means the whole interval is below 0 *and* the point
    #: difference is below -gauc_tolerance (the tolerance is the floor of what counts).
    bootstrap_samples: int = 1000
    confidence: float = 0.95


@dataclass
class ComparisonConfig:
    """The on-demand ``model_comparison`` asset (ml_core/compare.py): which variants, how many
    seeds, what budget. Every variant gets the same days, batches, budget and seeds."""

    #: Registered model names, presets (``mmoe+sevo``, ``moge+sevo``, ``mmoe+lightgode``) or
    #: tables ``{name, model, model_args, train}``. Empty = every registered model + every preset.
    variants: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: Budget of every variant; 0 = the ``[train]`` value.
    epochs: int = 0
    max_steps_per_epoch: int = 0

    def budget(self) -> dict[str, int]:
        return {k: v for k, v in (("epochs", self.epochs), ("max_steps_per_epoch", self.max_steps_per_epoch)) if v}


@dataclass
class StorageConfig:
    #: Root of the Parquet lake, graph files and model registry.
    root: str = "data"


@dataclass
class PipelineConfig:
    source: SourceConfig = field(default_factory=SyntheticSource)
    graph: GraphConfig = field(default_factory=GraphConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    comparison: ComparisonConfig = field(default_factory=ComparisonConfig)
    cf: CFConfig = field(default_factory=CFConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    automation: AutomationConfig = field(default_factory=AutomationConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    @property
    def start_date(self) -> date:
        return date.fromisoformat(self.source.start_date)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """A short stable hash of the named sections (all if none, less :data:`_NOT_WHAT`): part of
        data versions."""
        import hashlib

        d = self.to_dict()
        d["graph"] = {k: v for k, v in d["graph"].items() if not k.startswith("engine")}  # where, not what
        picked = {s: d[s] for s in (sections or [s for s in d if s not in _NOT_WHAT])}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]


#: Sections that say where results are stored and when (and in how many runs) they are computed,
#: not what they hold: left out of :meth:`PipelineConfig.fingerprint`, so the same day computed on
#: another lake, or by a backfill cut into other runs, has the same data version.
_NOT_WHAT = ("storage", "registry", "automation")

#: Section name -> its dataclass (``source``: see :data:`SOURCE_KINDS`).
_SECTIONS: dict[str, type | None] = {
    "source": None,
    "graph": GraphConfig,
    "samples": SampleConfig,
    "train": TrainConfig,
    "deploy": DeployConfig,
    "comparison": ComparisonConfig,
    "cf": CFConfig,
    "tuning": TuningConfig,
    "automation": AutomationConfig,
    "storage": StorageConfig,
    "registry": RegistryConfig,
}


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (TOML literals) to a raw config dict."""
    items = overrides.items() if isinstance(overrides, dict) else (o.split("=", 1) for o in overrides)
    for key, value in items:
        parts = key.strip().split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ValueError(f"override {key!r} must look like 'section.key=value', section in {list(_SECTIONS)}")
        raw.setdefault(parts[0], {})[parts[1]] = _parse_value(value) if isinstance(value, str) else value
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None) -> PipelineConfig:
    """Read the TOML file at ``path`` (else $MOGE_CONFIG, else data/pipeline.toml; only the
    default file may be absent, which means all defaults), apply ``overrides`` and check it.

    An override that changes ``source.kind`` drops the file's ``[source]`` fields that the new
    kind does not have (e.g. ``preset`` when switching to ``taobao``); the common ones stay.
    Raises :class:`~ml_core.typed.ConfigError` (a ``ValueError``) naming the bad key.
    """
    path = Path(path or os.environ.get("MOGE_CONFIG") or DEFAULT_CONFIG_PATH)
    raw: dict[str, Any] = {}
    if path.exists():
        raw = tomllib.loads(path.read_text())
    elif path != DEFAULT_CONFIG_PATH:
        raise FileNotFoundError(f"config file {path} does not exist (from the argument or $MOGE_CONFIG)")
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config sections {sorted(unknown)}; known: {list(_SECTIONS)}")
    bad = next(((n, v) for n, v in raw.items() if not isinstance(v, Mapping)), None)
    if bad:
        raise ConfigError(f"[{bad[0]}] = {bad[1]!r}: expected a table of settings")
    over = apply_overrides({}, overrides or [])
    src_kind = over.get("source", {}).get("kind")
    if src_kind in SOURCE_KINDS and src_kind != raw.get("source", {}).get("kind", "synthetic"):
        # an override switches the source kind: the file's fields of its own kind do not apply
        keep = {f.name for f in dataclasses.fields(SOURCE_KINDS[src_kind])}
        raw["source"] = {k: v for k, v in raw.get("source", {}).items() if k in keep}
    for name, values in over.items():
        raw[name] = {**raw.get(name, {}), **values}
    sections = {
        name: build_source(raw.get(name), name) if cls is None else build(cls, raw.get(name), name)
        for name, cls in _SECTIONS.items()
    }
    cfg = PipelineConfig(**sections)
    validate_config(cfg)
    return cfg


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def validate_config(cfg: PipelineConfig) -> None:
    """Checks across fields that need nothing above this module (types were checked by
    :func:`ml_core.typed.build`). Checks that need the models, the training extensions or the
    data files are in :func:`ml_core.preflight.check_runnable`."""
    if cfg.graph.window_days < 1 or cfg.train.train_days < 1:
        raise ConfigError("graph.window_days and train.train_days must be >= 1")
    if cfg.graph.engine_workers < 1 or cfg.graph.engine_blocks < 0:
        raise ConfigError("graph.engine_workers must be >= 1 and graph.engine_blocks >= 0")
    for task, behs in cfg.samples.tasks.items():
        bad = set(behs) - set(BEHAVIORS)
        if bad:
            raise ConfigError(f"task {task!r} uses unknown behaviours {sorted(bad)}; known: {BEHAVIORS}")
    if not cfg.samples.tasks:
        raise ConfigError("samples.tasks must define at least one task")
    bad = set(cfg.graph.behavior_weights) - set(BEHAVIORS)
    if bad:
        raise ConfigError(f"graph.behavior_weights has unknown behaviours {sorted(bad)}")
    src = cfg.source
    try:
        start = date.fromisoformat(src.start_date)
    except ValueError:
        raise ConfigError(f"source.start_date = {src.start_date!r}: expected a YYYY-MM-DD date") from None
    if src.end_date:
        try:
            end = date.fromisoformat(src.end_date)
        except ValueError:
            raise ConfigError(f"source.end_date = {src.end_date!r}: expected a YYYY-MM-DD date or empty") from None
        if end < start:
            raise ConfigError(f"source.end_date {end} is before source.start_date {start}")
    try:
        ZoneInfo(src.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"source.timezone = {src.timezone!r} is not a known IANA timezone") from None
    if not _DEVICE.fullmatch(cfg.train.device):
        raise ConfigError(f"train.device = {cfg.train.device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    check_automation(cfg.automation)
    t = cfg.train
    if not 0 < t.validation_share < 1 or min(t.eval_every_steps, t.patience, t.max_seconds) < 0:
        raise ConfigError("train: 0 < validation_share < 1; eval_every_steps, patience, max_seconds >= 0")
    if cfg.train.log_every_steps < 0:
        raise ConfigError(f"train.log_every_steps = {cfg.train.log_every_steps}: expected >= 0 (0 = no progress lines)")
    if not cfg.comparison.seeds:
        raise ConfigError("comparison.seeds must list at least one seed")
