"""Warm start: day D's training starts from a model of an earlier window (``train.warm_start``).

A *start model* is a trained model directory (trained_model[D-1] or a deployed bundle, resolved
by :mod:`ml_core.stages.training`). It starts day D's training when it is compatible with D's
configuration (:func:`incompatibility`): the same model, the same model arguments (compared as
built configurations, so ``{}`` equals the defaults written out), the same ``dim``, ``fanouts``,
tasks and feature columns (names, kinds, order). Otherwise D trains from scratch and the reason is
recorded.

What may change between the windows, and what a warm start does with it:

* **Vocabularies grow.** The user and item id vocabularies and every categorical column's
  vocabulary become the union of the start model's and the new window's
  (:func:`grown_feature_spec`): an id the new window does not see keeps its learned row.
  The tables are grown by row maps (:func:`transfer`): a known id or code keeps its row bit for
  bit (at its new position: vocabularies are sorted), a new one keeps the row a fresh model of the
  grown spec drew for it (same seed), row 0 (unknown) is the start model's.
* **Which rows are vocabulary-indexed** is known, not guessed from shapes: the rows of every
  :class:`~ml_core.nn.dense.FeatureEncoder`'s ``id_emb`` and ``cat_embs[j]``, whose ``side`` says
  whose vocabularies they index. Every other entry of the state must keep its shape (it is
  copied) unless the model lists it in :attr:`~ml_core.models.base.RecModel.derived_state`
  (re-derived from the data: left as a fresh model's) or declares a
  :attr:`~ml_core.models.base.RecModel.warm_start_blocker` (MGOE: its macro embeddings are
  indexed by k-means clusters re-fitted on each window). A shape that changes otherwise is an
  incompatibility (the architecture changed), never a silent partial load.
* **Numeric standardisation is re-fitted** on the new window, as a fresh model would, and the
  change is folded into each encoder's projection so the warm model computes the same function:
  with ``x = (r - m) / s`` before and ``x' = (r - m') / s'`` now,
  ``W x + b = (W s'/s) x' + b + W (m' - m)/s``. Keeping the start model's statistics would also
  preserve the function (bit for bit), but a chain of warm starts would then standardise with
  the first scratch model's window forever; re-fitting keeps the inputs standardised on the data
  the model trains on. (A missing value is filled with the new window's mean, as in a fresh model.)
* **Output biases** are not reset to the new base rates (``set_task_priors``): they are trained.

A start model whose weights were changed after training (``train.post_training``, e.g. LightGODE's
ODE baked into the id tables) is incompatible: training on top would apply the step twice.

Optimizer state (``train.warm_start_optimizer``): a run with the setting saves its optimizer's
state by parameter name (``optimizer.pt``, :func:`named_optimizer_state`); the next run restores
it when the optimizer is the same (:func:`restore_optimizer_state`): the moments of kept rows are
carried like the rows, grown rows start at zero moments, the step count continues.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ml_core.contracts.vocabulary import FeatureSpec, SideSpec
from ml_core.graph.csr import lookup
from ml_core.models.base import RecModel
from ml_core.nn.dense import FeatureEncoder
from ml_core.registry.bundles import load_model

OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class WarmStart:
    """Where a run may start, as the stage resolved it: a trained model directory, what the
    manifest calls it (``source``: partition day or bundle version) and its data version;
    ``directory`` None = from scratch, ``reason`` says why."""

    directory: Path | None = None
    source: str | None = None
    version: str | None = None
    reason: str = ""


def scratch_init(reason: str, base: dict | None = None) -> dict:
    """The ``init`` record of a run from scratch (``base``: the start model that was refused)."""
    base = base or {}
    return {"mode": "scratch", "from": base.get("from"), "from_version": base.get("from_version"), "reason": reason}


@dataclass
class StartModel:
    """A trained model directory loaded to start a training run: its weights (``state``), specs,
    ``model.json`` (``meta``) and, when saved, its optimizer state by parameter name."""

    source: str  # what the manifest calls it: a trained_model partition day or a bundle version
    version: str  # its data version
    name: str
    args: dict
    fspec: FeatureSpec
    dim: int
    fanouts: list[int]
    state: dict[str, torch.Tensor]
    meta: dict
    optimizer: dict | None = None


def load_start(directory: Path, source: str, version: str) -> StartModel:
    """The start model in ``directory`` (FileNotFoundError / ValueError when it does not load)."""
    directory = Path(directory)
    model, fspec, mspec, meta = load_model(directory)
    opt = directory / OPTIMIZER_FILE
    return StartModel(source, version, meta["model"], dict(meta.get("model_args") or {}), fspec, mspec.dim,
                      list(mspec.fanouts), {k: v.detach().clone() for k, v in model.state_dict().items()}, meta,
                      torch.load(opt, map_location="cpu", weights_only=True) if opt.exists() else None)


def open_start(warm: WarmStart | None, cfg, fspec: FeatureSpec, choice) -> tuple[StartModel | None, dict]:
    """(the start model, the ``init`` record) when ``warm`` names a compatible one for ``cfg`` (a
    TrainConfig, its model ``choice``: :class:`~ml_core.train.start.ModelChoice`) and data fitted
    as ``fspec``; else (None, a scratch record with the reason)."""
    if cfg.warm_start == "none":
        return None, scratch_init("train.warm_start = none")
    if warm is None or warm.directory is None:
        return None, scratch_init(warm.reason if warm is not None and warm.reason else "no start model given")
    base = {"from": warm.source, "from_version": warm.version}
    try:
        start = load_start(warm.directory, warm.source or "", warm.version or "")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        return None, scratch_init(f"incompatible: the start model at {warm.directory} does not load: {e}", base)
    why = incompatibility(start, cfg, choice, fspec)
    if why:
        return None, scratch_init(f"incompatible: {why}", base)
    return start, {"mode": "warm", **base, "reason": ""}


def incompatibility(start: StartModel, cfg, choice, fspec: FeatureSpec) -> str | None:
    """Why ``start`` cannot start training ``cfg`` (a TrainConfig, its model ``choice``) on data
    fitted as ``fspec``, or None."""
    if start.name != choice.name:
        return f"model {start.name} -> {choice.name}"
    if choice.cls.warm_start_blocker:
        return choice.cls.warm_start_blocker
    if choice.configure(choice.cls, start.args) != choice.config:
        return f"model_args {start.args} -> {dict(cfg.model_args)}"
    for key, before, now in (("dim", start.dim, cfg.dim), ("fanouts", start.fanouts, list(cfg.fanouts)),
                             ("tasks", start.fspec.tasks, list(fspec.tasks))):
        if before != now:
            return f"{key} {before} -> {now}"
    for old, new in ((start.fspec.user, fspec.user), (start.fspec.item, fspec.item)):
        if (old.cats, old.nums) != (new.cats, new.nums):
            return f"{new.prefix} feature columns {old.cats + old.nums} -> {new.cats + new.nums}"
        if old.cat_vocabs is None:
            return "the start model was saved before categorical vocabularies existed"
    columns = lambda s: None if s.pair is None else list(s.pair.columns)
    if columns(start.fspec) != columns(fspec):
        return f"pair input columns {columns(start.fspec)} -> {columns(fspec)}"
    if start.fspec.sequence_length != fspec.sequence_length:
        return f"sequence_length {start.fspec.sequence_length} -> {fspec.sequence_length}"
    post = start.meta.get("train_config", {}).get("post_training") or []
    if post:
        return f"its weights were changed after training by post_training {post}; training on top would apply them twice"
    return None


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.union1d(np.asarray(a, np.int64), np.asarray(b, np.int64)).astype(np.int64)


def grown_side(old: SideSpec, new: SideSpec) -> SideSpec:
    """``new`` (fitted on the new window) with the union of both id and categorical vocabularies."""
    vocabs = [_union(o, n) for o, n in zip(old.cat_vocabs, new.cat_vocabs)]
    return dataclasses.replace(new, ids=_union(old.ids, new.ids), cat_vocabs=vocabs,
                               cat_sizes=[len(v) + 1 for v in vocabs])


def grown_feature_spec(old: FeatureSpec, new: FeatureSpec) -> FeatureSpec:
    """The feature spec of a warm start: vocabularies grown, numeric statistics of the new window;
    the pair input keeps the start model's scaling (its encoder was trained on it)."""
    pair = old.pair if old.pair is not None and new.pair is not None else new.pair
    return FeatureSpec(list(new.tasks), grown_side(old.user, new.user), grown_side(old.item, new.item), pair,
                       new.sequence_length)


def row_map(old_vocab: np.ndarray, new_vocab: np.ndarray) -> np.ndarray:
    """For each row of a table over ``new_vocab`` (row 0 = unknown, row ``j + 1`` = ``new_vocab[j]``),
    the row of the table over ``old_vocab`` holding the same id or code, -1 for one it lacks."""
    rows = lookup(np.asarray(old_vocab, np.int64), np.asarray(new_vocab, np.int64))
    return np.concatenate([[0], np.where(rows >= 0, rows + 1, -1)]).astype(np.int64)


def vocabulary_rows(model: torch.nn.Module, old: FeatureSpec, new: FeatureSpec) -> dict[str, np.ndarray]:
    """``{state key: row map}`` of every vocabulary-indexed table of ``model`` (every prefix of a
    shared encoder): the FeatureEncoders' ``id_emb`` and ``cat_embs[j]``, by their ``side``."""
    maps: dict[str, np.ndarray] = {}
    for prefix, enc in model.named_modules(remove_duplicate=False):
        if not isinstance(enc, FeatureEncoder):
            continue
        if enc.side not in ("user", "item"):
            raise ValueError(f"FeatureEncoder {prefix!r} has no side ('user' or 'item'): build it from ModelSpec.user/item")
        o, n = getattr(old, enc.side), getattr(new, enc.side)
        if enc.id_emb is not None:
            maps[f"{prefix}.id_emb.weight"] = row_map(o.ids, n.ids)
        for j in range(len(enc.cat_embs)):
            maps[f"{prefix}.cat_embs.{j}.weight"] = row_map(o.cat_vocabs[j], n.cat_vocabs[j])
    return maps


def _grow(old: torch.Tensor, fresh: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    out = fresh.detach().clone()
    dst = np.flatnonzero(rows >= 0)
    src = torch.from_numpy(rows[dst]).to(old.device)
    out[torch.from_numpy(dst).to(out.device)] = old[src].to(out.device, out.dtype)
    return out


def _fold_standardisation(state: dict, model: torch.nn.Module, old: FeatureSpec, new: FeatureSpec) -> None:
    """Rewrite each encoder projection's numeric columns for the new window's mean / std (module docstring)."""
    for prefix, enc in model.named_modules(remove_duplicate=False):
        if not isinstance(enc, FeatureEncoder) or enc.proj is None:
            continue
        o, n = getattr(old, enc.side), getattr(new, enc.side)
        if not o.nums:
            continue
        w, b = state[f"{prefix}.proj.weight"].double(), state[f"{prefix}.proj.bias"].double()
        off = w.shape[1] - len(o.nums)  # the numeric columns come last: [emb(c_1) || ... || nums]
        m0, s0 = torch.tensor(o.num_mean, dtype=torch.float64), torch.tensor(o.num_std, dtype=torch.float64)
        m1, s1 = torch.tensor(n.num_mean, dtype=torch.float64), torch.tensor(n.num_std, dtype=torch.float64)
        if torch.equal(m0, m1) and torch.equal(s0, s1):
            continue
        w_num = w[:, off:]  # [dim, F]
        b = b + w_num @ ((m1 - m0) / s0)
        w = torch.cat([w[:, :off], w_num * (s1 / s0)], dim=1)
        state[f"{prefix}.proj.weight"] = w.float()
        state[f"{prefix}.proj.bias"] = b.float()


def transfer(start: StartModel, model: RecModel, fspec: FeatureSpec) -> tuple[dict, dict[str, np.ndarray]]:
    """Load ``start``'s weights into ``model`` (a fresh model built on the grown ``fspec``): vocabulary
    rows mapped, numeric standardisation folded, derived state left fresh, everything else copied.
    Returns (how many ids and codes were kept and added, the row maps of :func:`vocabulary_rows`);
    ValueError when a state entry does not fit."""
    fresh = model.state_dict()
    maps = vocabulary_rows(model, start.fspec, fspec)
    derived = type(model).derived_state
    missing = sorted(set(fresh) ^ set(start.state))
    if missing:
        raise ValueError(f"the state entries differ (architecture changed?): {missing[:5]}")
    state = {}
    for key, value in fresh.items():
        old = start.state[key]
        if key in maps:
            state[key] = _grow(old, value, maps[key])
        elif key in derived or key.rsplit(".", 1)[-1] in derived:
            state[key] = value
        elif old.shape != value.shape:
            raise ValueError(f"state entry {key} has shape {tuple(old.shape)}, a fresh model's {tuple(value.shape)}, "
                             "and is no declared vocabulary table")
        else:
            state[key] = old.to(value.dtype)
    _fold_standardisation(state, model, start.fspec, fspec)
    model.load_state_dict(state)
    grown = {}
    for side in ("user", "item"):
        o, n = getattr(start.fspec, side), getattr(fspec, side)
        grown[f"{side}_ids"] = {"kept": len(o.ids), "new": len(n.ids) - len(o.ids)}
        for c, vo, vn in zip(n.cats, o.cat_vocabs, n.cat_vocabs):
            grown[c] = {"kept": len(vo), "new": len(vn) - len(vo)}
    return grown, maps


def named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, name: str) -> dict:
    """``{"optimizer": name, "state": {parameter name: {key: value}}}``: what ``optimizer.pt`` holds."""
    names = {id(p): n for n, p in model.named_parameters()}
    state = {names[id(p)]: {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for p, s in optimizer.state.items() if id(p) in names}
    return {"optimizer": name, "state": state}


def restore_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module, start: StartModel,
                            name: str, maps: dict[str, np.ndarray]) -> str:
    """Restore ``start``'s optimizer moments into ``optimizer`` (built on ``model`` after :func:`transfer`,
    whose row ``maps`` these are): kept rows keep their moments, grown rows start at zero. Returns
    what was done, for the manifest."""
    saved = start.optimizer
    if saved is None:
        return "fresh: the start model saved no optimizer state (train.warm_start_optimizer was off for it)"
    if saved.get("optimizer") != name:
        return f"fresh: the start model's optimizer was {saved.get('optimizer')!r}, this run's is {name!r}"
    restored = 0
    for pname, p in model.named_parameters():
        old = saved["state"].get(pname)
        if old is None:
            continue
        new = {}
        for k, v in old.items():
            if torch.is_tensor(v) and v.dim() > 0 and pname in maps:
                new[k] = _grow(v, torch.zeros_like(p), maps[pname])
            else:
                new[k] = v.to(p.device) if torch.is_tensor(v) and v.dim() > 0 else v
        optimizer.state[p] = new
        restored += 1
    return f"restored for {restored} parameters"
