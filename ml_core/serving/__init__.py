"""Serving of the deployed model: :class:`Scorer` (library), :func:`create_app` (FastAPI, in
:mod:`ml_core.serving.app`) and the ``moge serve`` / ``moge score`` commands (:mod:`ml_core.cli`).
Candidate retrieval over the catalogue: :mod:`ml_core.serving.retrieval`; the served version, its
hot reload and the pointer watcher: :mod:`ml_core.serving.state`; ``/metrics``:
:mod:`ml_core.serving.metrics`."""

from ml_core.serving.scorer import Scorer, ScoreResult

__all__ = ["ScoreResult", "Scorer"]
