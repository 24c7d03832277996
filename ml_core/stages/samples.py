"""Stage 4, training_samples: day D's positive (user, item) pairs labelled per task plus
popularity-sampled negatives from day D's bipartite graph's item pool."""

from __future__ import annotations

from dataclasses import dataclass, field

from ml_core.catalog import TRAINING_SAMPLES
from ml_core.config import PipelineConfig
from ml_core.sampling.samples import build_training_samples
from ml_core.stages.inputs import load_bipartite
from ml_core.storage import Lake


@dataclass
class SamplesResult:
    """Row count, positives, negatives (and those the pool could not fill), users, and the label
    rates over all rows and over the positives."""

    rows: int
    positives: int
    negatives: int
    negatives_unfilled: int
    users: int
    label_rates: dict = field(default_factory=dict)
    positive_label_rates: dict = field(default_factory=dict)


def run_training_samples(cfg: PipelineConfig, lake: Lake, day) -> SamplesResult:
    """Build day ``day``'s samples from its stored logs and bipartite graph and write them."""
    events = lake.read_table("interaction_logs", day)
    bip = load_bipartite(lake, day)
    samples, stats = build_training_samples(events, bip.item_ids, bip.iu.degrees(), cfg.samples, day)
    lake.write_table(TRAINING_SAMPLES, day, samples)
    return SamplesResult(rows=samples.height, **stats)
