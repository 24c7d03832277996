"""The graphs of day D: the user-item bipartite graph of the W days before D and the top-k user
and item similarity graphs derived from it (MoGE section 3).

One computation materializes the three assets: day D's graphs are derived incrementally from
day D-1's when its refresh state is stored (identical to a full rebuild, which runs otherwise).
"""

from collections.abc import Iterator

import dagster as dg

from assets.automation import DATA
from assets.common import (
    LAKE_IO,
    RETRY,
    code_version,
    fields_of,
    result,
    settings,
    stoppable,
)
from assets.partitions import derived_daily, graph_window_mapping
from assets.ranges import DATA_POLICY, materialize_days, upstream_days
from ml_core.catalog import BIPARTITE_GRAPH, GRAPHS, INTERACTION_LOGS, ITEM_SIMILARITY_GRAPH, USER_SIMILARITY_GRAPH
from ml_core.eval.plots import degree_plot
from ml_core.stages.graphs import run_window_graphs

GRAPH_CODE = code_version("assets.graphs", "ml_core.stages.graphs")
_common = {"partitions_def": derived_daily, "group_name": "graph", "kinds": {"numpy"}, "owners": ["team:recsys"],
           "code_version": GRAPH_CODE, "automation_condition": DATA}  # multi-asset specs take these per spec


@dg.multi_asset(
    specs=[spec.with_io_manager_key(LAKE_IO) for spec in (
        dg.AssetSpec(BIPARTITE_GRAPH, deps=[dg.AssetDep(INTERACTION_LOGS, partition_mapping=graph_window_mapping)],
                     description=(
            "User-item bipartite graph (CSR, behaviour-weighted edges, raw ids as stable node ids) built from "
            "the logs of days D-W .. D-1: never day D itself."), **_common),
        dg.AssetSpec(USER_SIMILARITY_GRAPH, deps=[BIPARTITE_GRAPH], description=(
            "Top-k user-user collaborative similarity graph of day D (cosine over behaviour-weighted "
            "co-interactions by default) from bipartite_graph[D], plus its refresh state."), **_common),
        dg.AssetSpec(ITEM_SIMILARITY_GRAPH, deps=[BIPARTITE_GRAPH], description=(
            "Top-k item-item collaborative similarity graph of day D from bipartite_graph[D], plus its "
            "refresh state."), **_common),
    )],
    ins={INTERACTION_LOGS: dg.AssetIn()},  # the window mapping is on the AssetDep above
    required_resource_keys={"pipeline"},
    retry_policy=RETRY,
    backfill_policy=DATA_POLICY,
    can_subset=False,
)
@stoppable
def window_graphs(context: dg.AssetExecutionContext, interaction_logs) -> Iterator:
    cfg, lake = settings(context)
    yield from materialize_days(context, lambda day: day_graphs(context, cfg, lake, day))


def day_graphs(context: dg.AssetExecutionContext, cfg, lake, day: str) -> Iterator[dg.MaterializeResult]:
    """The three graphs of ``day``, written, with their metadata and degree plots."""
    days = upstream_days(context, INTERACTION_LOGS, day, BIPARTITE_GRAPH)
    out = run_window_graphs(cfg, lake, day, days)
    context.log.info(f"{day}: graphs built in {out.mode} mode ({out.seconds}s) over {days}")
    bip = out.graphs.bip
    yield result(lake, BIPARTITE_GRAPH, day, fields_of(out.bipartite),
                 plots={"degree_distribution": degree_plot({"users": bip.ui.degrees(), "items": bip.iu.degrees()},
                                                           "bipartite degree CCDF")})
    for kind, sim, summary in (("user", out.graphs.user_sim, out.user_similarity),
                               ("item", out.graphs.item_sim, out.item_similarity)):
        keep = fields_of(summary, *(() if summary.hub_recall_at_k is not None else ("hub_recall_at_k",)))
        plot = degree_plot({"out-degree": sim.adj.degrees(), "in-degree": sim.adj.transpose().degrees()},
                           f"{kind} similarity degree CCDF")
        yield result(lake, GRAPHS[kind], day, keep, plots={"degree_distribution": plot})
