"""The flow's catalogue: every asset's name and what each stage reads of a day, spelled once.

The Dagster assets (``assets/``), the stages that read the lake (:mod:`ml_core.stages`), serving
(the bundle's context) and the integrity checks (how to rebuild a partition) take their names
from here, so a renamed asset or an input a stage starts to read is one edit::

    interaction_logs -> bipartite_graph -> user_similarity_graph, item_similarity_graph
                     -> node_features
                     -> training_samples (+ bipartite_graph)
    training_samples[D-T .. D-1] + node_features + the graphs -> trained_model[D]
    trained_model[D] + day D's SCORED_INPUTS -> model_evaluation[D] -> deployed_model[D]

The tuples keep the order the stages record them in (a partition's manifest lists its inputs'
versions in that order, part of its data version).
"""

from __future__ import annotations

# -- the assets, upstream first ------------------------------------------------------------------
SOURCE_LOGS = "source_logs"  # the raw source, observed (not materialized)
INTERACTION_LOGS = "interaction_logs"
BIPARTITE_GRAPH = "bipartite_graph"
USER_SIMILARITY_GRAPH = "user_similarity_graph"
ITEM_SIMILARITY_GRAPH = "item_similarity_graph"
NODE_FEATURES = "node_features"
TRAINING_SAMPLES = "training_samples"
TRAINED_MODEL = "trained_model"
MODEL_EVALUATION = "model_evaluation"
DEPLOYED_MODEL = "deployed_model"
MODEL_COMPARISON = "model_comparison"  # on demand
HYPERPARAMETER_SEARCH = "hyperparameter_search"  # on demand

#: The graph assets by kind (the graph stage's ``bipartite`` / ``user`` / ``item``).
GRAPHS = {"bipartite": BIPARTITE_GRAPH, "user": USER_SIMILARITY_GRAPH, "item": ITEM_SIMILARITY_GRAPH}
SIMILARITY_GRAPHS = (USER_SIMILARITY_GRAPH, ITEM_SIMILARITY_GRAPH)
#: The multi-asset step that materializes several assets together: ``{asset: step}``.
MATERIALIZED_BY = {name: "window_graphs" for name in GRAPHS.values()}

# -- what the stages read of a day ---------------------------------------------------------------
#: What a model reads of each training day; the similarity graphs only when it uses graphs.
TRAINING_DAY = (TRAINING_SAMPLES, NODE_FEATURES, BIPARTITE_GRAPH)
#: What scoring day D reads (the evaluation, the deployment's reference models): the samples,
#: the features and every graph (the sanity and CF scorers read the bipartite graph).
SCORED_INPUTS = (*TRAINING_DAY, *SIMILARITY_GRAPHS)
#: A day's inputs a model reads from the lake beside its samples.
MODEL_INPUTS = (NODE_FEATURES, BIPARTITE_GRAPH, *SIMILARITY_GRAPHS)
#: What a deployed bundle carries to serve from (``context/<asset>``, with their data versions).
SERVING_CONTEXT = (BIPARTITE_GRAPH, *SIMILARITY_GRAPHS, NODE_FEATURES)
#: Each model stage's inputs of day D (its own day's partitions; the windows are the assets' mappings).
STAGE_INPUTS = {
    TRAINED_MODEL: TRAINING_DAY + SIMILARITY_GRAPHS,  # of each training day D-T .. D-1
    MODEL_EVALUATION: (TRAINED_MODEL, *SCORED_INPUTS),
    DEPLOYED_MODEL: (MODEL_EVALUATION, TRAINED_MODEL, *SCORED_INPUTS),
}
