"""LightGODE's post-training step: the graph ODE of :mod:`ml_core.nn.graph_ode` over a trained
model's id embeddings (papers/lightgode-abstract.txt).

:func:`apply_lightgode` is the ``train.post_training = ["lightgode"]`` step for any model with
``FeatureEncoder`` id tables: it writes ``E(T)`` into the ``id_emb`` weights (only those: an
encoder's feature projection and every other parameter are untouched), so the saved state_dict
carries it. The graph is the most recent training day's (see :mod:`ml_core.nn.id_graph`), not
the scored day's graph[D] that the standalone model reads at inference: the step's result is
baked into the host model's ordinary id tables and saved as such, so the bundle holds no ``E(0)``
to integrate again, and the host model (MMoE, MoGE, ...) knows nothing of the ODE at scoring
time. Moving the step to graph[D] would mean keeping ``E(0)`` and the step's options in every host
model and re-integrating in its :meth:`~ml_core.models.base.RecModel.prepare_inference`; it is
left as is, one day of graph behind the standalone model (documented, not measured).
For the standalone ``lightgode`` model, which integrates its own ODE at inference (over the scored
day's graph), the step only hands the model its training graph (no second integration).
"""

from __future__ import annotations

import torch

from ml_core.models.base import GraphNeeds, RecModel
from ml_core.nn.graph_ode import (
    RESCALE,
    check_ode_args,
    graph_ode,
    isolated_growth,
    rescale_rows,
)
from ml_core.nn.id_graph import id_adjacency, id_table_pairs, stack_rows
from ml_core.train.extensions import POST_TRAINING


@POST_TRAINING.register("lightgode", graph_needs=GraphNeeds.DAY_GRAPHS)
@torch.no_grad()
def apply_lightgode(model, contexts, T: float = 1.0, solver: str = "euler", steps: int = 1,
                    rescale: str = "none", graph_channels: list[str] | tuple[str, ...] = ("bipartite",),
                    graph_days: str = "last", weighted: bool = False) -> dict:
    """Post-training graph ODE over ``model``'s id embeddings, in place (``train.post_training``).

    Args:
        model (nn.Module): a trained model with ``FeatureEncoder`` id tables.
        contexts (list[DayContext]): training days with their graphs.
        T (float): integration time (default: 1.0).
        solver (str): ``"euler"`` (default) or ``"rk4"``.
        steps (int): solver steps (default: 1).
        rescale (str): ``"none"`` (default), ``"growth"``, ``"norm"`` (module docstring).
        graph_channels (list[str]): graph over the id rows (default: ``["bipartite"]``).
        graph_days (str): ``"last"`` (default) or ``"all"`` training days' graphs.
        weighted (bool): keep edge weights (default: False: binary A).
    Returns: statistics for the run's metadata (graph, relative change of the tables).
    """
    check_ode_args(T, solver, steps)
    if rescale not in RESCALE:
        raise ValueError(f"rescale must be one of {RESCALE}, got {rescale!r}")
    if isinstance(model, RecModel) and model.integrates_graph_ode:
        if (T, solver, steps, rescale, tuple(graph_channels), graph_days, weighted) != (
                1.0, "euler", 1, "none", ("bipartite",), "last", False):
            raise ValueError(f"{type(model).__name__} integrates its own graph ODE: set its options in "
                             "train.model_args, not in train.post_training_args")
        return model.attach_graph(contexts)
    pairs = id_table_pairs(model)
    graph = id_adjacency(contexts, pairs[0][0].num_embeddings, pairs[0][1].num_embeddings, graph_channels,
                         graph_days, weighted)
    adj = graph.adj.to(pairs[0][0].weight.device)
    growth = isolated_growth(T, solver, steps)
    change = []
    for u, i in pairs:
        e0 = stack_rows((u, i))  # [N, d]
        e = rescale_rows(graph_ode(e0, adj, T, solver, steps), e0, rescale, growth)
        change.append(float((e - e0).norm() / e0.norm().clamp_min(1e-12)))
        u.weight.copy_(e[: u.num_embeddings])
        i.weight.copy_(e[u.num_embeddings:])
    return {"T": T, "solver": solver, "steps": int(steps), "rescale": rescale, "tables": 2 * len(pairs),
            "relative_change": [round(c, 4) for c in change], **graph.stats()}
