"""LightGODE's post-training graph convolution as a continuous graph ODE (papers/lightgode-abstract.txt).

After training (without any graph convolution), the stacked id embeddings ``E(0) = [E_U ; E_I]``
are propagated over the normalised bipartite adjacency
:math:`\\hat A = D^{-1/2} A D^{-1/2}` (no self loops, :mod:`ml_core.train.id_graph`) by

.. math::
    \\frac{dE(t)}{dt} = \\hat A E(t) + E(0), \\qquad t \\in [0, T]

whose exact solution is :math:`E(T) = e^{\\hat A T} E(0) + \\int_0^T e^{\\hat A s} ds\\, E(0)`
(``= e^{A T} E0 + A^{-1}(e^{A T} - I) E0`` when A^ is invertible). Solvers, with ``h = T / steps``
and ``f(E) = A^ E + E(0)``:

* ``euler`` (default): :math:`E_{n+1} = E_n + h f(E_n)`. One step is the public code's
  :math:`E(T) = (1 + T) E(0) + T \\hat A E(0)`.
* ``rk4``: classical Runge-Kutta, :math:`E_{n+1} = E_n + \\frac{h}{6}(k_1 + 2k_2 + 2k_3 + k_4)`.

Defaults: ``T = 1`` (MODELS.md: T around 1-3), ``euler``, ``steps = 1`` (the public code).
Nodes without an edge (unknown id row 0, ids not in the graph) grow to ``(1 + T) E(0)`` under
either solver; ``rescale`` offers to undo the growth for models that are not scored by cosine:
``"none"`` (default, the ODE's result as is), ``"growth"`` (divide every row by the isolated
node's growth factor, e.g. ``1 + T``: isolated rows keep their values), ``"norm"`` (each row
back to its ``E(0)`` norm).

:func:`apply_lightgode` is the ``train.post_training = ["lightgode"]`` step for any model with
``FeatureEncoder`` id tables: it writes ``E(T)`` into the ``id_emb`` weights (only those: an
encoder's feature projection and every other parameter are untouched), so the saved state_dict
carries it. The graph is the most recent training day's (see :mod:`ml_core.train.id_graph`).
For the standalone ``lightgode`` model, which integrates its own ODE at inference, the step only
hands the model its graph (no second integration).
"""

from __future__ import annotations

import torch

from ml_core.train.id_graph import id_adjacency, id_table_pairs, stack_rows

SOLVERS = ("euler", "rk4")
RESCALE = ("none", "growth", "norm")


def check_ode_args(T: float, solver: str, steps: int) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"ODE solver must be one of {SOLVERS}, got {solver!r}")
    if T < 0:
        raise ValueError(f"ODE time T must be >= 0, got {T}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"ODE steps must be an integer >= 1, got {steps}")


def graph_ode(e0: torch.Tensor, adj: torch.Tensor, T: float = 1.0, solver: str = "euler", steps: int = 1) -> torch.Tensor:
    """Integrate ``dE/dt = A^ E + E(0)`` from ``E(0) = e0`` to ``t = T`` (module docstring).

    Shapes: ``e0 [N, d]``, ``adj [N, N]`` (sparse CSR or dense) -> ``[N, d]``.
    """
    check_ode_args(T, solver, steps)
    h = T / steps
    f = lambda e: adj @ e + e0  # noqa: E731  dE/dt  [N, d]
    e = e0
    for _ in range(int(steps)):
        if solver == "euler":
            e = e + h * f(e)
        else:
            k1 = f(e)
            k2 = f(e + (h / 2) * k1)
            k3 = f(e + (h / 2) * k2)
            k4 = f(e + h * k3)
            e = e + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return e


def isolated_growth(T: float, solver: str, steps: int) -> float:
    """Factor by which the solver scales a row without edges (``dE/dt = E(0)``): ``1 + T``."""
    one = torch.ones(1, 1, dtype=torch.float64)
    return float(graph_ode(one, torch.zeros(1, 1, dtype=torch.float64), T, solver, steps))


def rescale_rows(e: torch.Tensor, e0: torch.Tensor, how: str, growth: float) -> torch.Tensor:
    if how not in RESCALE:
        raise ValueError(f"rescale must be one of {RESCALE}, got {how!r}")
    if how == "growth":
        return e / growth
    if how == "norm":
        return e * (e0.norm(dim=-1, keepdim=True) / e.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return e


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
    if getattr(model, "integrates_graph_ode", False):
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


apply_lightgode.needs_graph = True
