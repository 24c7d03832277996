"""Build dataclasses from plain mappings (TOML tables, JSON, keyword dicts) with their types checked.

One function, :func:`build`, serves every typed configuration of the project: the pipeline
sections of ``ml_core/config/`` and the per-model configuration dataclasses. A wrong key, a
value of the wrong type or a value outside a ``Literal`` raises :class:`ConfigError` naming
the full key (``train.epochs``), the value and the expected type, before anything runs::

    build(TrainConfig, {"epochs": "2"}, "train")
    # ConfigError: train.epochs = '2' (str): expected int

Supported annotations: ``int``, ``float`` (an int is accepted and converted), ``str``, ``bool``
(never from an int), ``Any``, ``Literal[...]``, ``X | None`` / ``Optional[X]`` and other unions,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, and nested dataclasses (built from a mapping).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value has an unknown key, a wrong type or a value out of range."""


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return repr(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to ``tp`` (only int -> float and mappings -> dataclasses), or ConfigError."""
    bad = ConfigError(f"{where} = {value!r} ({type(value).__name__}): expected {type_name(tp)}")
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp) and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in get_args(tp))):
            return value
        raise ConfigError(f"{where} = {value!r}: expected one of {list(get_args(tp))}")
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            try:
                return _check(value, arm, where)
            except ConfigError as exc:
                errors.append(exc)
        nested = [e for arm, e in zip(get_args(tp), errors) if dataclasses.is_dataclass(arm)]
        if isinstance(value, Mapping) and len(nested) == 1:
            raise nested[0]  # ``X | None`` given a table: X's own error names the wrong key
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return build(tp, value, where)
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (list, typing.List):  # noqa: UP006 - typing.List is what get_origin may return
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = get_args(tp) or (Any,)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where} = {value!r}: expected {len(args)} items ({type_name(tp)})")
        return tuple(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_check(k, k_tp, f"{where} key"): _check(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise bad
    raise TypeError(f"{where}: unsupported annotation {tp!r}")


def build(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**values)`` with every key known and every value of its field's type.

    ``where`` prefixes the keys in error messages (``"train"``, ``"train.model_args"``).
    Fields missing from ``values`` take their defaults; ``__post_init__`` runs as usual.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(f'{where}.{k}' for k in unknown)}; "
                          f"known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    checked = {k: _check(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**checked)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a missing required field, a __post_init__ check
        raise ConfigError(f"[{where}] {e}") from e


class Registry(dict):
    """Pluggable things of one ``kind`` by name (models, optimizers, post-training steps), each
    registered the same way: the :meth:`register` decorator in its own module, under ``package``
    (every module of it but ``skip`` and the ``_private`` ones, imported on the first lookup, so
    the registry is complete when asked and a new one is one decorated definition, no list edit)."""

    def __init__(self, kind: str, package: str, skip: frozenset[str] | set[str] = frozenset()):
        super().__init__()
        self.kind, self.package, self.skip = kind, package, set(skip)

    def register(self, name: str, **attrs):
        """Decorator: register the decorated class or function as ``name`` and set ``attrs`` on it
        (what the users of the registry read: a model's ``config_cls``, a step's ``graph_needs``)."""

        def deco(obj):
            if name in self and self[name] is not obj:
                raise ValueError(f"{self.kind} name {name!r} registered twice")
            self[name] = obj
            for key, value in attrs.items():
                setattr(obj, key, value)
            return obj

        return deco

    def load(self) -> Registry:
        """Every module of the package imported (each registers what it defines); returns self."""
        import importlib
        import pkgutil

        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name not in self.skip and not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        return self

    def names(self) -> list[str]:
        return sorted(self.load())

    def lookup(self, name: str):
        """What is registered as ``name``; ValueError naming the registered ones when nothing is."""
        if name not in self.load():
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {sorted(self)}")
        return self[name]
