"""The one configuration system of the pipeline.

Every stage reads one typed dataclass below. Values come from, in order of precedence:

1. overrides given as ``section.key=value`` strings (CLI ``--set``, the Dagster resource's
   ``overrides`` field, tests),
2. a TOML file (default ``data/pipeline.toml``, or the path in ``$MOGE_CONFIG``),
3. the defaults written here, each with the reason it was chosen.

ml_core never imports dagster; the orchestration layer wraps :func:`load_config` in a resource.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path("data/pipeline.toml")


@dataclass
class SourceConfig:
    """Where the raw events come from (see README "Point it at your own logs")."""

    #: ``synthetic`` (embedded default), ``taobao`` (UserBehavior.csv), ``tmall``
    #: (IJCAI-15 user_log_format1.csv) or ``table`` (any CSV/Parquet + ``columns`` mapping).
    kind: str = "synthetic"
    #: File or glob for file-based sources.
    path: str = ""
    #: First partition day (the DailyPartitionsDefinition start). Synthetic day 0.
    start_date: str = "2026-01-01"
    #: Last day with data, inclusive (file sources); empty = open-ended.
    end_date: str = ""
    #: Timezone in which calendar days (partitions) are cut. Taobao: Asia/Shanghai.
    timezone: str = "UTC"
    #: ``table`` source: canonical column -> source column, e.g. {user_id = "uid", ...}.
    columns: dict[str, str] = field(default_factory=dict)
    #: ``table`` source: source behaviour value -> canonical behaviour (view/cart/fav/buy).
    behavior_map: dict[str, str] = field(default_factory=dict)
    #: ``table`` source: ``unix_s``, ``unix_ms``, or a strptime format such as "%Y-%m-%d %H".
    ts_format: str = "unix_s"
    #: Tmall's time_stamp is MMDD without a year: the year to put in front.
    year: int = 2014
    #: synthetic source: size preset (``small``, ``medium``, ``large``) and seed.
    preset: str = "small"
    seed: int = 7


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
    similarity: str = "cosine"
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


@dataclass
class SampleConfig:
    #: Task name -> behaviours that make the label 1. Default: click = any interaction,
    #: purchase = buy (the common e-commerce pair; MoGE's IJCAI-15 setup used fav + buy).
    tasks: dict[str, list[str]] = field(
        default_factory=lambda: {"click": ["view", "cart", "fav", "buy"], "purchase": ["buy"]}
    )
    #: Negatives per positive (user, item) pair, drawn from items the user did not touch
    #: that day, proportional to item popularity^0.75 (word2vec-style smoothing).
    negatives_per_positive: int = 4
    popularity_power: float = 0.75
    seed: int = 13


@dataclass
class TrainConfig:
    #: Registered model name (see ml_core.models.registry): MoGE by default; ``mmoe``, the zoo's
    #: baselines and the other systems are one word away (README: "Models").
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
    #: ``auto`` picks CUDA when available, else CPU; or ``cpu`` / ``cuda`` / ``cuda:1``.
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
    #: Also hide a training sample's own (user, item) edge from the bipartite channel when it
    #: exists from earlier days (day D's own events are never in day D's graph anyway).
    mask_target_edges: bool = False
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


@dataclass
class DeployConfig:
    #: Promote only if every task's GAUC >= production's GAUC - tolerance.
    gauc_tolerance: float = 0.005
    #: And only if every task's GAUC is at least this (a sanity floor; 0.5 = random).
    min_gauc: float = 0.5


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
    source: SourceConfig = field(default_factory=SourceConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    comparison: ComparisonConfig = field(default_factory=ComparisonConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def start_date(self) -> date:
        return date.fromisoformat(self.source.start_date)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """A short stable hash of the named sections (all if none): part of data versions."""
        import hashlib

        d = self.to_dict()
        picked = {s: d[s] for s in (sections or d.keys())}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:12]


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)} in [{where}]; known: {sorted(known)}")
    return cls(**values)


_SECTIONS = {
    "source": SourceConfig,
    "graph": GraphConfig,
    "samples": SampleConfig,
    "train": TrainConfig,
    "deploy": DeployConfig,
    "comparison": ComparisonConfig,
    "storage": StorageConfig,
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


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> PipelineConfig:
    """Read the TOML file at ``path`` (else $MOGE_CONFIG, else data/pipeline.toml; only the
    default file may be absent, which means all defaults)."""
    path = Path(path or os.environ.get("MOGE_CONFIG") or DEFAULT_CONFIG_PATH)
    raw: dict[str, Any] = {}
    if path.exists():
        raw = tomllib.loads(path.read_text())
    elif path != DEFAULT_CONFIG_PATH:
        raise FileNotFoundError(f"config file {path} does not exist (from the argument or $MOGE_CONFIG)")
    raw = apply_overrides(raw, overrides or [])
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"unknown config sections {sorted(unknown)}; known: {list(_SECTIONS)}")
    cfg = PipelineConfig(**{name: _build(cls, raw.get(name, {}), name) for name, cls in _SECTIONS.items()})
    validate_config(cfg)
    return cfg


def validate_config(cfg: PipelineConfig) -> None:
    from ml_core.data.schema import BEHAVIORS

    if cfg.graph.window_days < 1 or cfg.train.train_days < 1:
        raise ValueError("graph.window_days and train.train_days must be >= 1")
    for task, behs in cfg.samples.tasks.items():
        bad = set(behs) - set(BEHAVIORS)
        if bad:
            raise ValueError(f"task {task!r} uses unknown behaviours {sorted(bad)}; known: {BEHAVIORS}")
    if not cfg.samples.tasks:
        raise ValueError("samples.tasks must define at least one task")
    bad = set(cfg.graph.behavior_weights) - set(BEHAVIORS)
    if bad:
        raise ValueError(f"graph.behavior_weights has unknown behaviours {sorted(bad)}")
    if cfg.graph.similarity not in ("cosine", "jaccard"):
        raise ValueError(f"graph.similarity must be 'cosine' or 'jaccard', got {cfg.graph.similarity!r}")
    date.fromisoformat(cfg.source.start_date)
    from ml_core.train import extensions

    extensions.validate(cfg.train)
    if not cfg.comparison.seeds:
        raise ValueError("comparison.seeds must list at least one seed")
