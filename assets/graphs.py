"""The graphs of day D: the user-item bipartite graph of the W days before D and the top-k user
and item similarity graphs derived from it (MoGE section 3)."""


import dagster as dg

from assets.common import COMMON, LAKE_IO, code_version, result, settings
from assets.partitions import daily, graph_window
from ml_core import pipeline
from ml_core.eval.plots import degree_plot

GRAPH_CODE = code_version(*COMMON, "ml_core/graph", "assets/graphs.py")


@dg.asset(
    partitions_def=daily,
    group_name="graph",
    kinds={"numpy"},
    owners=["team:recsys"],
    io_manager_key=LAKE_IO,
    required_resource_keys={"pipeline"},
    ins={"interaction_logs": dg.AssetIn(partition_mapping=graph_window)},
    code_version=GRAPH_CODE,
)
def bipartite_graph(context: dg.AssetExecutionContext, interaction_logs) -> dg.MaterializeResult:
    """User-item bipartite graph (CSR, behaviour-weighted edges, raw ids as stable node ids)
    built from the logs of days D-W .. D-1: never day D itself."""
    cfg, lake = settings(context)
    day = context.partition_key
    bip, stats = pipeline.run_bipartite_graph(cfg, lake, day, interaction_logs.days)
    plot = degree_plot({"users": bip.ui.degrees(), "items": bip.iu.degrees()}, "bipartite degree CCDF")
    return result(lake, "bipartite_graph", day, stats, plots={"degree_distribution": plot})


def _similarity_asset(kind: str):
    name = f"{kind}_similarity_graph"

    @dg.asset(
        name=name,
        partitions_def=daily,
        group_name="graph",
        kinds={"numpy"},
        owners=["team:recsys"],
        io_manager_key=LAKE_IO,
        required_resource_keys={"pipeline"},
        ins={"bipartite_graph": dg.AssetIn()},
        code_version=GRAPH_CODE,
        description=(f"Top-k {kind}-{kind} collaborative similarity graph of day D (cosine over "
                     f"behaviour-weighted co-interactions by default) from bipartite_graph[D]."),
    )
    def _asset(context: dg.AssetExecutionContext, bipartite_graph) -> dg.MaterializeResult:
        cfg, lake = settings(context)
        day = context.partition_key
        sim, stats = pipeline.run_similarity_graph(cfg, lake, day, kind)
        plot = degree_plot({f"{kind} out-degree": sim.adj.degrees(), f"{kind} in-degree": sim.adj.transpose().degrees()},
                           f"{kind} similarity degree CCDF")
        return result(lake, name, day, stats, plots={"degree_distribution": plot})

    return _asset


user_similarity_graph = _similarity_asset("user")
item_similarity_graph = _similarity_asset("item")
