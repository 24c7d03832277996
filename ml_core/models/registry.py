"""One registry of models by name. Adding a model = one file in ``ml_core/models/`` with one ``@register`` line.

Every registered class is built as ``cls(spec: ModelSpec, **model_args)``, takes a
:class:`~ml_core.contracts.batch.Batch` and returns per-task logits ``[B, K]``.
"""

from __future__ import annotations

import importlib
import pkgutil

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import RecModel

MODELS: dict[str, type[RecModel]] = {}

# Every module of the ml_core.models package may register models; they are imported lazily (on
# the first lookup) so the registry is complete when asked and a new model file needs no list edit.
_INFRA = {"base", "registry", "mgnn", "hetero"}


def register(name: str):
    def deco(cls: type[RecModel]) -> type[RecModel]:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def _load_all() -> None:
    import ml_core.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _INFRA and not info.name.startswith("_"):
            importlib.import_module(f"ml_core.models.{info.name}")


def available_models() -> list[str]:
    _load_all()
    return sorted(MODELS)


def model_class(name: str) -> type[RecModel]:
    """The class registered as ``name`` (every model module loaded first); ValueError names the
    registered models when ``name`` is unknown."""
    _load_all()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, spec: ModelSpec, **model_args) -> RecModel:
    return model_class(name)(spec, **model_args)
