"""Building blocks below the models and training (imports neither ``ml_core.models`` nor ``ml_core.train``).

* :mod:`~ml_core.nn.dense` - MLP, feature encoder, gates, experts, towers, pair interaction.
* :mod:`~ml_core.nn.graph` - neighbour attention, the CSR weighted sum, the gated combine.
* :mod:`~ml_core.nn.losses` - MoGE's loss terms; :mod:`~ml_core.nn.gradnorm` - GradNorm.
* :mod:`~ml_core.nn.id_graph` - a model's id-embedding tables and the graph over their rows.
* :mod:`~ml_core.nn.graph_ode` - LightGODE's graph ODE.
"""
