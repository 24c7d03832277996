"""Readers of stored partitions that several stages share (the logs of a window, a day's
graphs and features, a day's training inputs, a day as the evaluation and the deployment score it)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ml_core.catalog import BIPARTITE_GRAPH, GRAPHS, NODE_FEATURES, SCORED_INPUTS, TRAINING_SAMPLES
from ml_core.contracts.day import DayContext, DayInputs
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.graph.csr import BipartiteGraph, SimilarityGraph
from ml_core.history import read_history
from ml_core.inference import day_context, inference_needs_graph
from ml_core.storage import Lake, day_str


def scan_logs(lake: Lake, days: list[str]) -> pl.LazyFrame:
    """The stored interaction logs of ``days`` (an empty frame with the event schema for none)."""
    if not days:
        from ml_core.data.schema import EVENT_SCHEMA

        return pl.LazyFrame(schema=EVENT_SCHEMA)
    return lake.scan_tables("interaction_logs", days)


def load_bipartite(lake: Lake, day) -> BipartiteGraph:
    return BipartiteGraph.load(lake.checked_dir(BIPARTITE_GRAPH, day))


def load_similarity(lake: Lake, day, kind: str) -> SimilarityGraph:
    return SimilarityGraph.load(lake.checked_dir(GRAPHS[kind], day))


def load_features(lake: Lake, day) -> tuple[pl.DataFrame, pl.DataFrame]:
    return lake.read_table(NODE_FEATURES, day), lake.read_table(NODE_FEATURES, day, "items")


def load_history(lake: Lake, day) -> dict[str, pl.DataFrame] | None:
    """Day ``day``'s history tables (:mod:`ml_core.history`), or None when its node_features
    partition predates them."""
    return read_history(lake.checked_dir(NODE_FEATURES, day))


def load_day_inputs(lake: Lake, day) -> DayInputs:
    """Day ``day``'s samples, node features, history, bipartite graph and both similarity graphs,
    as the trainer and the evaluation read them (graph models read the similarity graphs' channels,
    the pair input their kNN sums, the CF scorers both; they are top-k graphs, small to load)."""
    users, items = load_features(lake, day)
    return DayInputs(day=day_str(day), samples=lake.read_table(TRAINING_SAMPLES, day), users=users, items=items,
                     history=load_history(lake, day), graph=load_bipartite(lake, day),
                     user_sim=load_similarity(lake, day, "user"), item_sim=load_similarity(lake, day, "item"))


@dataclass
class ScoringDay:
    """Day D as the evaluation and the deployment score it: its inputs (graphs included) and the
    first context built on them (``spec``: the feature spec it was built for; ``with_graph``:
    whether it holds the channel graphs), from which the other models' contexts are derived."""

    inputs: DayInputs
    ctx: DayContext | None = None
    spec: FeatureSpec | None = None
    with_graph: bool = False

    def context_for(self, model, spec: FeatureSpec) -> DayContext:
        """The context ``model`` (with its feature ``spec``) scores the day on: the held one for
        the same spec and channels, the held one with its node inputs encoded again for another
        spec (:meth:`DayContext.for_spec`: the same as a build), else built (and held when none is)."""
        graph = inference_needs_graph(model)
        if self.ctx is None or (graph and not self.with_graph):
            ctx = day_context(model, spec, self.inputs)
            if self.ctx is None:
                self.ctx, self.spec, self.with_graph = ctx, spec, graph
            return ctx
        if graph == self.with_graph and spec.same_as(self.spec):
            return self.ctx
        return self.ctx.for_spec(self.inputs, spec, graph)


#: The last day read for scoring in this process, by the data versions of
#: :data:`~ml_core.catalog.SCORED_INPUTS`:
#: a cache behind :func:`scoring_day` (the evaluation and then the deployment score day D; loading
#: and building a ``large`` day again costs ~3 s). Never a hand-over: both stages read the lake's
#: partitions, and a miss (another process, a partition rewritten in between) reads them again.
_LAST_SCORED: dict[tuple, ScoringDay] = {}


def scoring_key(lake: Lake, day) -> tuple:
    """What :func:`scoring_day` reads, by data version (the lake, the day, each input's version)."""
    return (str(lake.root), day_str(day), tuple(lake.version(a, day) for a in SCORED_INPUTS))


def scoring_day(lake: Lake, day, last_use: bool = False) -> ScoringDay:
    """Day ``day``'s :class:`ScoringDay`, from this process's cache when it was read from the same
    partitions, else read from the lake (and cached). ``last_use``: the day's last scorer (the
    deployment): a hit is released, a miss is not cached (the cached day stays for its own scorer)."""
    key = scoring_key(lake, day)
    held = _LAST_SCORED.get(key)
    if held is None:
        held = ScoringDay(load_day_inputs(lake, day))
        if not last_use:
            _LAST_SCORED.clear()
            _LAST_SCORED[key] = held
    elif last_use:
        _LAST_SCORED.clear()
    return held


def cached_scoring_days() -> int:
    """How many days this process holds for scoring (0 or 1), for tests and memory checks."""
    return len(_LAST_SCORED)
