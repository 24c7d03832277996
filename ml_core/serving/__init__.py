"""Serving of the deployed model: :class:`Scorer` (library), :func:`create_app` (FastAPI, in
:mod:`ml_core.serving.app`) and the ``moge serve`` / ``moge score`` commands (:mod:`ml_core.cli`)."""

from ml_core.serving.scorer import Scorer, ScoreResult

__all__ = ["ScoreResult", "Scorer"]
