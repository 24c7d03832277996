"""One registry of models by name. Adding a model = one file + one ``@register`` line.

Every registered class is built as ``cls(spec: ModelSpec, **model_args)``, takes a
:class:`~ml_core.train.data.Batch` and returns per-task logits ``[B, K]``.
"""

from __future__ import annotations

import importlib

from ml_core.models.blocks import ModelSpec, RecModel

MODELS: dict[str, type[RecModel]] = {}

# Modules that register models; imported lazily so the registry is complete when asked.
_MODEL_MODULES = ["ml_core.models.mmoe", "ml_core.models.moge", "ml_core.models.zoo"]


def register(name: str):
    def deco(cls: type[RecModel]) -> type[RecModel]:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        MODELS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def _load_all() -> None:
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def available_models() -> list[str]:
    _load_all()
    return sorted(MODELS)


def build_model(name: str, spec: ModelSpec, **model_args) -> RecModel:
    _load_all()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name](spec, **model_args)
