"""The graphs of day D: the user-item bipartite graph of the W days before D and the top-k user
and item similarity graphs derived from it (MoGE section 3).

One computation materializes the three assets: day D's graphs are derived incrementally from
day D-1's when its refresh state is stored (identical to a full rebuild, which runs otherwise).
"""

import dagster as dg

from assets.common import COMMON, LAKE_IO, RETRY, code_version, result, settings
from assets.partitions import daily, graph_window
from ml_core import pipeline
from ml_core.eval.plots import degree_plot

GRAPH_CODE = code_version(*COMMON, "ml_core/graph", "assets/graphs.py")
_common = dict(partitions_def=daily, group_name="graph", kinds={"numpy"}, owners=["team:recsys"],
               code_version=GRAPH_CODE)  # multi-asset specs take these per spec


@dg.multi_asset(
    specs=[spec.with_io_manager_key(LAKE_IO) for spec in (
        dg.AssetSpec("bipartite_graph", deps=[dg.AssetDep("interaction_logs", partition_mapping=graph_window)],
                     description=(
            "User-item bipartite graph (CSR, behaviour-weighted edges, raw ids as stable node ids) built from "
            "the logs of days D-W .. D-1: never day D itself."), **_common),
        dg.AssetSpec("user_similarity_graph", deps=["bipartite_graph"], description=(
            "Top-k user-user collaborative similarity graph of day D (cosine over behaviour-weighted "
            "co-interactions by default) from bipartite_graph[D], plus its refresh state."), **_common),
        dg.AssetSpec("item_similarity_graph", deps=["bipartite_graph"], description=(
            "Top-k item-item collaborative similarity graph of day D from bipartite_graph[D], plus its "
            "refresh state."), **_common),
    )],
    ins={"interaction_logs": dg.AssetIn()},  # the window mapping is on the AssetDep above
    required_resource_keys={"pipeline"},
    retry_policy=RETRY,
    can_subset=False,
)
def window_graphs(context: dg.AssetExecutionContext, interaction_logs):
    cfg, lake = settings(context)
    day = context.partition_key
    graphs, stats = pipeline.run_window_graphs(cfg, lake, day, interaction_logs.days)
    bip = graphs.bip
    context.log.info(f"{day}: graphs built in {stats['mode']} mode ({stats['wall_time_s']}s) over {interaction_logs.days}")
    b = stats["bipartite"]
    yield result(
        lake, "bipartite_graph", day,
        {"mode": stats["mode"], "window_days": interaction_logs.days, "users": b["n_users"], "items": b["n_items"],
         "edges": b["n_edges"], "user_degree": b["user_degree"], "item_degree": b["item_degree"],
         "seconds": b["wall_time_s"], "peak_mem_delta_mb": b["peak_mem_delta_mb"],
         "full_rebuild_reason": stats.get("full_rebuild_reason", "")},
        plots={"degree_distribution": degree_plot({"users": bip.ui.degrees(), "items": bip.iu.degrees()},
                                                  "bipartite degree CCDF")})
    for kind, sim in (("user", graphs.user_sim), ("item", graphs.item_sim)):
        st = stats[f"{kind}_sim"]
        keep = {"mode": st["mode"], "nodes": st["n_nodes"], "edges": st["n_edges"], "k": st["k"],
                "measure": st["measure"], "no_neighbor_share": st["share_no_similar_neighbour"],
                "seconds": st["wall_time_s"], "peak_mem_delta_mb": st["peak_mem_delta_mb"],
                "hub_nodes_skipped": st["hub_nodes_skipped"], "pairs_counted": st["pairs_counted"],
                "exact": st["exact"], "rows_recomputed_share": st.get("walk_cost_share", 1.0)}
        if "hub_recall_at_k" in st:
            keep["hub_recall_at_k"] = st["hub_recall_at_k"]
        plot = degree_plot({"out-degree": sim.adj.degrees(), "in-degree": sim.adj.transpose().degrees()},
                           f"{kind} similarity degree CCDF")
        yield result(lake, f"{kind}_similarity_graph", day, keep, plots={"degree_distribution": plot})

