"""One registry of models by name. Adding a model = one file in ``ml_core/models/`` with one ``@register`` line.

Every registered class declares its configuration dataclass (``@register(name, ConfigCls)``, the
dataclass next to the model, every field with its default and where the default comes from), is
built as ``cls(spec: ModelSpec, config)`` by :func:`build_model` from ``train.model_args`` (a
mapping, as saved in model bundles), takes a :class:`~ml_core.contracts.batch.Batch` and returns
per-task logits ``[B, K]``. :func:`validate_model_args` is the same check without building the
model (for configuration loading).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import RecModel
from ml_core.typed import Registry, build

# Every module of the ml_core.models package may register models; they are imported lazily (on
# the first lookup) so the registry is complete when asked and a new model file needs no list edit.
_INFRA = {"base", "registry", "mgnn", "hetero"}
MODELS: dict[str, type[RecModel]] = Registry("model", "ml_core.models", skip=_INFRA)
#: What this module imports by name, for the assets' code versions (assets/common.py).
__code_deps__ = ["ml_core.models"]


def register(name: str, config_cls: type):
    """Class decorator: register a :class:`RecModel` as ``name``, configured by the dataclass
    ``config_cls``."""

    return MODELS.register(name, registry_name=name, config_cls=config_cls)


def available_models() -> list[str]:
    return MODELS.names()


def model_class(name: str) -> type[RecModel]:
    """The class registered as ``name`` (every model module loaded first); ValueError names the
    registered models when ``name`` is unknown."""
    return MODELS.lookup(name)


def validate_model_args(name: str, args: Mapping[str, Any] | None) -> Any:
    """The configuration of model ``name`` built from ``args`` (``train.model_args``): raises
    ValueError for an unknown model, :class:`~ml_core.typed.ConfigError` naming the key for an
    unknown key, a wrong type or a value out of range. Checks that need the data's sizes (e.g.
    ``layers`` against the sampler's hops) are left to :func:`build_model`."""
    return build(model_class(name).config_cls, args or {}, "train.model_args")


def build_model(name: str, spec: ModelSpec, model_args: Mapping[str, Any] | None = None) -> RecModel:
    """Model ``name`` for ``spec``, configured by ``model_args`` (see :func:`validate_model_args`)."""
    return model_class(name)(spec, validate_model_args(name, model_args))
