"""LightGODE's graph convolution as a continuous graph ODE (papers/lightgode-abstract.txt).

After training (without any graph convolution), the stacked id embeddings ``E(0) = [E_U ; E_I]``
are propagated over the normalised bipartite adjacency
:math:`\\hat A = D^{-1/2} A D^{-1/2}` (no self loops, :mod:`ml_core.nn.id_graph`) by

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

:func:`graph_ode` integrates it; the post-training step that applies it to a model's id tables
is :func:`ml_core.train.lightgode.apply_lightgode`, the standalone model :mod:`ml_core.models.lightgode`.
"""

from __future__ import annotations

import torch

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
    f = lambda e: adj @ e + e0
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
