"""Hyper-parameter search of one model with Optuna: the library of the ``hyperparameter_search`` asset.

Every trial trains ``tuning.model`` at one point of the search space with the same trainer, the
same training days, seed and budget, and is scored by its GAUC on a validation day it never trained
on. The sampler is Optuna's TPE with ``tuning.seed`` (``tuning.startup_trials`` random trials
first), and the first trial is the default configuration when it lies in the space, so the search
reports how the default does on the same footing. A trial whose configuration cannot train (an
invalid combination, a non-finite loss) is recorded as failed and the search goes on.

The space (:func:`resolve_space`) is ``tuning.space`` or the model's default space
(:func:`default_space`), every name and bound checked against :class:`~ml_core.config.TrainConfig`
and the model's config dataclass before anything trains. Configured by ``[tuning]``
(:class:`ml_core.config.tuning.TuningConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import typing
from dataclasses import dataclass
from typing import Any, Literal

from ml_core.compare import Variant, variant_train_config
from ml_core.config import TrainConfig, TuningConfig
from ml_core.config.tuning import MODEL_SPACES, TRAIN_SPACE, ParamRange, param_range
from ml_core.models.registry import model_class
from ml_core.typed import ConfigError, build

#: ``[train]`` settings a search never varies: the model itself, the window, the budget (set by
#: ``tuning.epochs`` / ``tuning.max_steps_per_epoch``), the seed and the machine's settings.
FIXED_TRAIN = ("model", "model_args", "train_days", "epochs", "max_steps_per_epoch", "seed", "device", "threads",
               "prefetch", "amp", "log_every_steps", "optimizer_args", "post_training_args")
MODEL_ARGS = "model_args."


@dataclass(frozen=True)
class Param:
    """One dimension of the space: ``name`` (``lr`` or ``model_args.l2``), its range and its kind."""

    name: str
    range: ParamRange
    kind: Literal["int", "float", "categorical"]

    @property
    def codes(self) -> list:
        """The choices as Optuna stores them: numbers, strings, booleans as they are, others as JSON."""
        return [c if c is None or isinstance(c, (bool, int, float, str)) else json.dumps(c) for c in self.range.choices]

    def suggest(self, trial) -> Any:
        r = self.range
        if self.kind == "int":
            return trial.suggest_int(self.name, int(r.low), int(r.high), log=r.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, float(r.low), float(r.high), log=r.log)
        code = trial.suggest_categorical(self.name, self.codes)
        return next(c for c, k in zip(r.choices, self.codes) if k == code and type(k) is type(code))

    def code(self, value: Any) -> Any:
        """``value`` as Optuna stores it (to enqueue a trial), or None when it is outside the range."""
        r = self.range
        if self.kind == "categorical":
            return next((k for c, k in zip(r.choices, self.codes) if c == value and type(c) is type(value)), None)
        return value if isinstance(value, (int, float)) and r.low <= value <= r.high else None

    def describe(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in dataclasses.asdict(self.range).items() if v is not None}}


def searched_model(tuning: TuningConfig, train: TrainConfig) -> tuple[str, dict]:
    """The model searched and the model arguments its trials start from (``train.model_args``
    when it is the daily model; another model starts from its own defaults)."""
    model = tuning.model or train.model
    try:
        model_class(model)
    except ValueError as exc:
        raise ConfigError(f"tuning.model = {tuning.model!r} (empty: train.model): {exc}") from None
    return model, dict(train.model_args) if model == train.model else {}


def derived_space(model: str) -> dict[str, ParamRange]:
    """A model's arguments searched when :data:`~ml_core.config.tuning.MODEL_SPACES` has no entry
    for it, by type: a float with a positive default d over d/10 .. 10 d (log), a ``Literal`` over
    its values. Integers, strings, lists and booleans (some are switches such as a leakage guard,
    not hyper-parameters) only when declared. A bound the model's config rejects leaves its
    argument out."""
    cls = model_class(model).config_cls
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, default = hints[f.name], f.default
        if typing.get_origin(tp) is Literal:
            r = ParamRange(choices=list(typing.get_args(tp)))
        elif tp is float and isinstance(default, float) and default > 0:
            r = ParamRange(default / 10, default * 10, log=True)
        else:
            continue
        try:
            for v in r.choices or (r.low, r.high):
                build(cls, {f.name: v}, "")
        except ConfigError:
            continue
        out[MODEL_ARGS + f.name] = r
    return out


def default_space(model: str) -> dict[str, ParamRange]:
    """:data:`~ml_core.config.tuning.TRAIN_SPACE` plus the model's entry in ``MODEL_SPACES``, or
    its :func:`derived_space`."""
    declared = MODEL_SPACES.get(model)
    spaces = {**TRAIN_SPACE, **declared} if declared is not None else TRAIN_SPACE
    out = {name: param_range(spec, f"default space of {model!r}: {name}") for name, spec in spaces.items()}
    return out if declared is not None else {**out, **derived_space(model)}


def _param(name: str, r: ParamRange, model: str, base_args: dict) -> Param:
    """``name``'s dimension, every bound / choice checked as a value of its setting."""
    from ml_core.train import extensions

    where = f"tuning.space.{name}"
    if name.startswith(MODEL_ARGS):
        key, cls = name.removeprefix(MODEL_ARGS), model_class(model).config_cls
        known = sorted(f.name for f in dataclasses.fields(cls))
        if key not in known:
            raise ConfigError(f"{where}: model {model!r} has no argument {key!r}; its arguments: {known}")

        def check(v):
            return getattr(build(cls, {**base_args, key: v}, "tuning.space.model_args"), key)
    else:
        tunable = sorted(f.name for f in dataclasses.fields(TrainConfig) if f.name not in FIXED_TRAIN)
        if name not in tunable:
            own = name in {f.name for f in dataclasses.fields(model_class(model).config_cls)}
            hint = f"{name!r} is an argument of {model!r}: write 'model_args.{name}'" if own else \
                f"or a model argument written 'model_args.<name>' (model {model!r})"
            raise ConfigError(f"{where}: not a searchable [train] setting; searchable: {tunable}; {hint}")

        def check(v):
            value = getattr(build(TrainConfig, {name: v}, "tuning.space"), name)
            try:
                extensions.validate(dataclasses.replace(TrainConfig(), **{name: value}))
            except ValueError as exc:
                raise ConfigError(f"{where} = {v!r}: {exc}") from None
            return value
    if r.choices is not None:
        for c in r.choices:
            check(c)
        return Param(name, r, "categorical")
    low, high = check(r.low), check(r.high)
    if isinstance(low, bool) or not isinstance(low, (int, float)):
        raise ConfigError(f"{where}: a range needs a numeric setting; write {{choices = [...]}}")
    return Param(name, r, "int" if isinstance(low, int) and isinstance(high, int) else "float")


def resolve_space(tuning: TuningConfig, train: TrainConfig) -> tuple[str, dict[str, Param]]:
    """The searched model and its space (``tuning.space``, else :func:`default_space`), checked:
    an unknown name, a bound of the wrong type or a value the setting rejects is a ConfigError."""
    model, base_args = searched_model(tuning, train)
    ranges = tuning.ranges() or default_space(model)
    if not ranges:
        raise ConfigError(f"tuning: the search space of {model!r} is empty; set tuning.space")
    return model, {name: _param(name, r, model, base_args) for name, r in ranges.items()}


def config_of(train: TrainConfig, tuning: TuningConfig, params: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one point: ``train`` + the search budget + ``params``, the searched model
    with its starting arguments, seeded with ``tuning.seed`` (through the comparison's variants)."""
    model, args = searched_model(tuning, train)
    own = {k: v for k, v in params.items() if not k.startswith(MODEL_ARGS)}
    args.update({k.removeprefix(MODEL_ARGS): v for k, v in params.items() if k.startswith(MODEL_ARGS)})
    return variant_train_config(train, Variant("tuning", model, args, own), tuning.seed, tuning.budget())


def default_params(train: TrainConfig, tuning: TuningConfig, space: dict[str, Param]) -> dict[str, Any]:
    """Each searched setting's value in the default configuration."""
    model, args = searched_model(tuning, train)
    margs = build(model_class(model).config_cls, args, "train.model_args")
    return {n: getattr(margs, n.removeprefix(MODEL_ARGS)) if n.startswith(MODEL_ARGS) else getattr(train, n)
            for n in space}


def objective_value(metrics: dict[str, dict[str, float]], metric: str) -> float:
    """``mean``: the mean GAUC over the tasks; a task name: that task's GAUC."""
    if metric == "mean":
        return float(sum(m["gauc"] for m in metrics.values()) / len(metrics))
    if metric not in metrics:
        raise ConfigError(f"tuning.metric = {metric!r}: expected 'mean' or a task of {sorted(metrics)}")
    return float(metrics[metric]["gauc"])


def _metrics(scored) -> dict[str, dict[str, float]]:
    return {t: {k: float(m[k]) for k in ("gauc", "auc", "logloss")} for t, m in scored.metrics.items()}


def run_search(train_days, valid_day, tasks: list[str], train: TrainConfig, tuning: TuningConfig, log=None) -> dict:
    """``tuning.trials`` trials trained on ``train_days`` and scored on ``valid_day``
    (:class:`~ml_core.contracts.day.DayInputs` with graphs). Returns the space, every trial
    (number, state, value, params, per-task metrics, seconds, error), the best trial's params and
    value, and the parameter importances (PED-ANOVA; empty when they cannot be computed)."""
    import optuna

    from ml_core.inference import score_day
    from ml_core.train.trainer import train as fit

    log = log or (lambda msg: None)
    objective_value({t: {"gauc": 0.0} for t in tasks}, tuning.metric)  # a bad metric fails before training
    model, space = resolve_space(tuning, train)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=tuning.seed, n_startup_trials=tuning.startup_trials)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    defaults = default_params(train, tuning, space)
    codes = {n: p.code(defaults[n]) for n, p in space.items()}
    enqueued = all(c is not None for c in codes.values())
    if enqueued:
        study.enqueue_trial(codes)  # trial 0: the default configuration

    def objective(trial) -> float:
        params = {n: p.suggest(trial) for n, p in space.items()}
        trial.set_user_attr("params", params)
        try:
            cfg = config_of(train, tuning, params)
            res = fit(train_days, cfg, tasks)
            metrics = _metrics(score_day(res, res.feature_spec, valid_day, cfg.fanouts, seed=tuning.seed))
        except (ValueError, RuntimeError) as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            log(f"trial {trial.number} ({trial.number + 1}/{tuning.trials}): failed: {exc}")
            raise
        value = objective_value(metrics, tuning.metric)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("train_seconds", round(res.seconds, 3))
        log(f"trial {trial.number} ({trial.number + 1}/{tuning.trials}): {tuning.metric} GAUC {value:.4f} with {params}")
        return value

    study.optimize(objective, n_trials=tuning.trials, catch=(ValueError, RuntimeError))
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "params": t.user_attrs.get("params", {}), "seconds": t.duration.total_seconds() if t.duration else None,
               "train_seconds": t.user_attrs.get("train_seconds"), "metrics": t.user_attrs.get("metrics", {}),
               "error": t.user_attrs.get("error")} for t in study.trials]
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None and math.isfinite(t["value"])]
    if not done:
        raise ValueError(f"all {len(trials)} trials failed; first error: {trials[0]['error']}")
    best = study.best_trial
    try:
        importances = {k: float(v) for k, v in optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()).items()} if len(done) > 1 else {}
    except (ValueError, RuntimeError, ZeroDivisionError):
        importances = {}
    return {"model": model, "metric": tuning.metric, "space": {n: p.describe() for n, p in space.items()},
            "default_params": defaults, "default_trial": 0 if enqueued else None, "trials": trials, "best_trial": best.number,
            "best_params": best.user_attrs["params"], "best_value": float(best.value), "importances": importances}


def evaluate_best(train_days, eval_day, tasks: list[str], train: TrainConfig, tuning: TuningConfig,
                  best_params: dict[str, Any], log=None) -> dict:
    """The default and the best configuration, each trained on ``train_days`` with the search's
    budget and seed and scored on ``eval_day``: per-task metrics and, per task, the paired
    bootstrap interval over users of GAUC(best) - GAUC(default). When the best configuration is
    the default one (``same``), it is trained once and the difference is 0."""
    from ml_core.eval.bootstrap import gauc_difference
    from ml_core.inference import score_day
    from ml_core.train.trainer import train as fit

    log = log or (lambda msg: None)
    same = config_of(train, tuning, {}) == config_of(train, tuning, best_params)
    scored, out = {}, {"same": same}
    for name, params in (("default", {}), ("best", best_params)):
        if name == "best" and same:
            scored["best"], out["best"] = scored["default"], out["default"]
            break
        cfg = config_of(train, tuning, params)
        t0 = time.perf_counter()
        res = fit(train_days, cfg, tasks)
        scored[name] = score_day(res, res.feature_spec, eval_day, cfg.fanouts, seed=tuning.seed)
        out[name] = {"metrics": _metrics(scored[name]), "train_seconds": round(res.seconds, 3),
                     "seconds": round(time.perf_counter() - t0, 3)}
        log(f"{name} configuration on {eval_day.day}: " + " ".join(
            f"{t} GAUC {m['gauc']:.4f}" for t, m in out[name]["metrics"].items()))
    users, labels = scored["best"].users, scored["best"].labels
    out["differences"] = {t: {k: float(v) for k, v in gauc_difference(
        users, labels[:, i], scored["best"].probs[:, i], scored["default"].probs[:, i], seed=tuning.seed).items()}
        for i, t in enumerate(tasks)}
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def markdown_report(result: dict, title: str = "Hyper-parameter search") -> str:
    """The search in Markdown: the setting, best vs default parameters, every trial, and the
    held-out day's default-vs-best GAUC with its paired bootstrap interval (when evaluated)."""
    lines = [f"# {title}", ""] + [f"- {k}: {v}" for k, v in result.get("meta", {}).items()] + [""]
    best, defaults = result["best_params"], result["default_params"]
    lines += [f"Best trial {result['best_trial']}: {result['metric']} GAUC {result['best_value']:.4f} on the "
              "validation day" + ("" if result["default_trial"] is None else
                                  f" (trial {result['default_trial']} is the default configuration)."), ""]
    lines += ["| parameter | range | default | best | importance |", "|---|---|---|---|---|"]
    for n, sp in result["space"].items():
        rng = sp["choices"] if "choices" in sp else f"{_fmt(sp['low'])} .. {_fmt(sp['high'])}" + (" (log)" if sp.get("log") else "")
        imp = result["importances"].get(n)
        lines.append(f"| {n} | {_fmt(rng)} | {_fmt(defaults[n])} | {_fmt(best[n])} | {'-' if imp is None else f'{imp:.2f}'} |")
    tasks = list(next((t["metrics"] for t in result["trials"] if t["metrics"]), {}))
    lines += ["", "| trial | state | value | " + " | ".join(f"GAUC {t}" for t in tasks) + " | seconds | "
              + " | ".join(result["space"]) + " |", "|---" * (4 + len(tasks) + len(result["space"])) + "|"]
    for t in result["trials"]:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        cells = [str(t["number"]), t["state"], value] + [f"{t['metrics'][k]['gauc']:.4f}" if k in t["metrics"] else "-"
                                                        for k in tasks]
        cells += ["-" if t["seconds"] is None else f"{t['seconds']:.1f}"] + [_fmt(t["params"].get(n, "-")) for n in result["space"]]
        lines.append("| " + " | ".join(cells) + " |")
    held = result.get("held_out")
    if held:
        what = "the best configuration is the default one (trained once)" if held.get("same") else \
            "the default and the best configuration, each trained on the whole window with the search's budget and seed"
        lines += ["", f"Held-out day {result['meta'].get('evaluation day', '')}: {what}.", "",
                  "| task | GAUC default | GAUC best | best - default | 95% paired bootstrap over users |",
                  "|---|---|---|---|---|"]
        for t, d in held["differences"].items():
            lines.append(f"| {t} | {held['default']['metrics'][t]['gauc']:.4f} | {held['best']['metrics'][t]['gauc']:.4f} "
                         f"| {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] ({int(d['n_groups'])} users) |")
    return "\n".join(lines) + "\n"
