"""Types shared by models, training, inference and serving (below all of them; imports none).

* :mod:`~ml_core.contracts.batch` - :class:`NodeTable`, :class:`ChannelBatch`, :class:`Batch`,
  :data:`CHANNELS`: what a model's ``forward`` reads.
* :mod:`~ml_core.contracts.vocabulary` - :class:`FeatureSpec` (with :class:`SideSpec`): the fitted
  feature vocabulary saved with a model.
* :mod:`~ml_core.contracts.spec` - :class:`ModelSpec` (with :class:`SideShape`): the sizes a
  model is built from.
* :mod:`~ml_core.contracts.day` - :class:`DayInputs` (one day as stored) and
  :class:`DayContext` (its node spaces and adjacencies, encoded).
* :mod:`~ml_core.contracts.reps` - :class:`NodeReps`: every node's representations of a day,
  what pairs are scored from.
"""

from ml_core.contracts.batch import CHANNELS, Batch, ChannelBatch, NodeTable
from ml_core.contracts.day import DayContext, DayInputs, extend_rows, space_lookup
from ml_core.contracts.reps import NodeReps
from ml_core.contracts.spec import ModelSpec, SideShape
from ml_core.contracts.vocabulary import FeatureSpec, SideSpec

__all__ = ["CHANNELS", "Batch", "ChannelBatch", "DayContext", "DayInputs", "FeatureSpec", "ModelSpec", "NodeReps", "NodeTable",
           "SideShape", "SideSpec", "extend_rows", "space_lookup"]
