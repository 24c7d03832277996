"""Early stopping: the validation slice of a training window, its score and the stopping rule.

The slice is drawn from the training days only (D-T .. D-1), never from day D, the day the model
is evaluated on (``train.validation``):

* ``last_day`` (default) - every sample of the last training day that has any: the day closest
  to D, so the slice asks what D will ask (the feature spec is fitted on the other days, so ids
  first seen on the slice are unknown to the model, as they will be on D). The model trains on
  the other days. With fewer than two days with samples (T = 1, gaps) there is no such day, and
  no slice: training uses every sample (``how = "none"``, with a note), see below.
* ``users`` - the samples, on every training day, of a share ``train.validation_share`` of the
  users chosen by a seeded hash of the user id (:func:`held_out_users`), so none of a held-out
  user's samples is trained on.
* ``none`` - no slice: training uses every sample and stops on its budget alone.

Why ``last_day`` does not fall back to ``users``: a held-out user's id row is never trained, so
the ``users`` slice scores *cold* users, while day D's users are mostly known ones. Measured on
the model zoo's planted data (one training day, every test user known, 4 epochs): the slice
scored LightGODE (id embeddings only) at 0.49-0.53 GAUC whatever it learned, stopped
Cross-Stitch after its first epoch on patience (test click / purchase GAUC .773 / .737 without a
slice, .721 / .663 with it) and cost every model the held-out users' samples. It is kept as an
explicit choice for windows where the cold-user score is the one wanted.

Score (:func:`validation_gauc`): mean over tasks of the GAUC (:func:`ml_core.eval.metrics.gauc`)
of the model's predictions on the slice (:func:`ml_core.inference.predict`, seeded: the same
weights get the same score). :class:`EarlyStopping` keeps the curve, the best weights and the
patience count; :class:`Validator` scores the slice during training and restores the best
weights when it ends.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ml_core.contracts.day import DayContext, DayInputs
from ml_core.eval.metrics import gauc
from ml_core.inference import predict
from ml_core.mixing import GOLDEN, splitmix64_array


def held_out_users(user_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Boolean mask of the users in the held-out ``share``: splitmix64 of ``user_id + seed * golden``
    mapped to [0, 1) and compared with ``share`` (stable across days, runs and machines)."""
    with np.errstate(over="ignore"):
        z = splitmix64_array(np.asarray(user_ids).astype(np.uint64) + np.uint64(seed) * GOLDEN + GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < share


@dataclass
class Split:
    """The training days and the validation slice (``validation`` empty = none); ``how`` is the
    slice actually used (``last_day``, ``users`` or ``none``), ``note`` why it differs from the setting."""

    train: list[DayInputs]
    validation: list[DayInputs]
    how: str
    note: str = ""

    def describe(self) -> dict:
        return {"how": self.how, "note": self.note, "days": [d.day for d in self.validation],
                "samples": sum(d.samples.height for d in self.validation)}


def split_validation(days: list[DayInputs], mode: str, share: float, seed: int) -> Split:
    """Split ``days`` (the training window) into training days and the validation slice (module docstring)."""
    if mode == "none":
        return Split(list(days), [], "none")
    with_samples = [d for d in days if d.samples.height > 0]
    if mode == "last_day":
        if len(with_samples) >= 2:
            last = with_samples[-1]
            return Split([d for d in days if d is not last], [last], "last_day")
        return Split(list(days), [], "none", "last_day needs two training days with samples: no validation slice")
    train, val = [], []
    for d in days:
        mask = held_out_users(d.samples["user_id"].to_numpy(), share, seed)
        train.append(dataclasses.replace(d, samples=d.samples.filter(~mask)))
        if mask.any():
            val.append(dataclasses.replace(d, samples=d.samples.filter(mask)))
    if not val or not any(d.samples.height for d in train):
        return Split(list(days), [], "none", "the held-out users leave no validation or no training sample")
    return Split(train, val, "users")


def validation_gauc(model, contexts: list[DayContext], fanouts: list[int], tasks: list[str], prefetch: int = 2) -> float:
    """Mean GAUC over ``tasks`` of ``model`` on the validation ``contexts`` (NaN when no task has a
    user with both classes). Leaves the model in training mode."""
    users, labels, probs = [], [], []
    for ctx in contexts:
        probs.append(predict(model, ctx, fanouts, seed=0, prefetch=prefetch, tasks=tasks))
        users.append(np.asarray(ctx.sample_user_raw))
        labels.append(np.asarray(ctx.labels))
    model.train()
    u, y, p = np.concatenate(users), np.concatenate(labels), np.concatenate(probs)
    scores = [gauc(u, y[:, k], p[:, k])["gauc"] for k in range(len(tasks))]
    scores = [s for s in scores if math.isfinite(s)]
    return float(np.mean(scores)) if scores else float("nan")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state (what :class:`EarlyStopping` keeps of the best validation)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class EarlyStopping:
    """The validation curve, the best score, its step and weights, and the patience count.

    ``patience``: validations in a row without a strict improvement of the best score before
    :attr:`exhausted` (0 = never: training runs its whole budget and keeps the best weights)."""

    patience: int
    curve: list[dict] = field(default_factory=list)
    best: float = -math.inf
    best_step: int | None = None
    best_state: object = None
    last_gain: float | None = None  # the last improvement's gain over the best before it
    bad: int = 0

    def update(self, step: int, epoch: int, score: float, seconds: float, keep: Callable[[], object]) -> bool:
        """Record ``score`` at ``step``; keep ``keep()`` when it is the best so far. Returns whether it improved."""
        self.curve.append({"step": step, "epoch": epoch, "val_gauc": score, "seconds": round(seconds, 2)})
        if not score > self.best:  # NaN never improves
            self.bad += 1
            return False
        self.last_gain = None if self.best == -math.inf else score - self.best
        self.best, self.best_step, self.best_state, self.bad = score, step, keep(), 0
        return True

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    @property
    def last_step(self) -> int | None:
        return self.curve[-1]["step"] if self.curve else None

    def summary(self) -> dict:
        """``best_step``, ``best_val_gauc``, ``last_gain`` and ``still_improving`` (the last
        validation was the best so far: the budget, not the data, ended training)."""
        if not self.curve:
            return {"best_step": None, "best_val_gauc": None, "last_gain": None, "still_improving": None}
        return {"best_step": self.best_step, "best_val_gauc": self.best if self.best_step is not None else None,
                "last_gain": self.last_gain, "still_improving": self.best_step == self.last_step and self.bad == 0}


class Validator:
    """The validation of one training run (a :class:`~ml_core.config.TrainConfig` ``cfg``):
    ``model`` scored on the slice's ``contexts`` (none: no validation, :attr:`active` False), the
    best weights (and, with ``train.warm_start_optimizer``, ``optimizer``'s state) kept by
    :class:`EarlyStopping`; each score goes to ``history`` and ``log``; ``seconds`` spent scoring."""

    def __init__(self, model: torch.nn.Module, contexts: list[DayContext], cfg, tasks: list[str],
                 optimizer: torch.optim.Optimizer, history: list[dict], log: Callable[[str], None]):
        self.model, self.contexts, self.cfg, self.tasks = model, contexts, cfg, tasks
        self.optimizer, self.history, self.log = optimizer, history, log
        self.stopper = EarlyStopping(cfg.patience) if contexts else None
        self.seconds = 0.0
        self.restored = False  # whether :meth:`finish` put the best validated weights back

    @property
    def active(self) -> bool:
        return self.stopper is not None

    def _keep(self) -> tuple:
        return snapshot(self.model), copy.deepcopy(self.optimizer.state_dict()) if self.cfg.warm_start_optimizer else None

    def validate(self, step: int, epoch: int, t0: float) -> bool:
        """Score the slice after ``step`` steps (``t0``: when training began); True when patience is exhausted."""
        t = time.perf_counter()
        score = validation_gauc(self.model, self.contexts, self.cfg.fanouts, self.tasks, self.cfg.prefetch)
        improved = self.stopper.update(step, epoch, score, time.perf_counter() - t0, self._keep)
        self.seconds += time.perf_counter() - t
        self.history.append({"epoch": epoch, "step": step, "val_gauc": score})
        self.log(f"validation after {step} steps: mean GAUC {score:.4f} " + (
            "(best)" if improved else f"({self.stopper.bad}/{self.cfg.patience} without improvement, best {self.stopper.best:.4f})"))
        return self.stopper.exhausted

    def finish(self, step: int, epoch: int, t0: float) -> dict:
        """At the end of training (``step`` steps, in ``epoch``): the last weights validated when
        they were not, then the best validated ones restored (with their optimizer state). Returns
        the stopping record's validation part: :meth:`EarlyStopping.summary`, ``restored_best`` and
        the ``curve`` (``[step, val_gauc]`` pairs)."""
        stopper = self.stopper
        if stopper is not None:
            if stopper.last_step != step:
                self.validate(step, epoch, t0)  # the weights the budget ended with take part in the choice
            if stopper.best_step != step:
                self.model.load_state_dict(stopper.best_state[0])
                if stopper.best_state[1] is not None:
                    self.optimizer.load_state_dict(stopper.best_state[1])
                self.restored = True
        return {**(stopper.summary() if stopper else {}), "restored_best": self.restored,
                "curve": [[c["step"], c["val_gauc"]] for c in (stopper.curve if stopper else [])]}

    def describe(self) -> str:
        """``; best validation 0.7123 after 400 steps, restored: False`` after :meth:`finish` (empty
        without validation)."""
        if self.stopper is None:
            return ""
        return f"; best validation {self.stopper.best:.4f} after {self.stopper.best_step} steps, restored: {self.restored}"
