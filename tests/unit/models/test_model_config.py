"""Typed model arguments: every registered model declares a config dataclass; ``train.model_args``
are checked against it (key, type, range) before a model is built; bundles keep a plain dict."""

import dataclasses

import pytest

from ml_core.contracts.spec import ModelSpec, SideShape
from ml_core.models.base import GraphNeeds, RecModel
from ml_core.models.registry import (
    MODELS,
    available_models,
    build_model,
    model_class,
    validate_model_args,
)
from ml_core.typed import ConfigError

SPEC = ModelSpec(["click", "buy"], SideShape(20, [3], 2, ["u_cat"]), SideShape(30, [4], 1, ["category"]), dim=8,
                 fanouts=[3, 2])


def test_every_model_declares_a_config_whose_defaults_build():
    for name in available_models():
        cls = model_class(name)
        assert dataclasses.is_dataclass(cls.config_cls), name
        assert isinstance(validate_model_args(name, {}), cls.config_cls)
        assert isinstance(cls.graph_needs, GraphNeeds)


def test_wrong_key_or_type_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown key train\.model_args\.n_expert\b"):
        validate_model_args("mmoe", {"n_expert": 3})
    with pytest.raises(ConfigError, match=r"train\.model_args\.n_experts = '3' \(str\): expected int"):
        validate_model_args("moge", {"n_experts": "3"})
    with pytest.raises(ConfigError, match=r"train\.model_args\.expert_hidden\[1\]"):
        validate_model_args("cgc", {"expert_hidden": [32, "x"]})
    with pytest.raises(ConfigError, match="interaction"):  # a range check of __post_init__, named by the field
        validate_model_args("moge", {"interaction": "dot"})
    with pytest.raises(ValueError, match="unknown model"):
        validate_model_args("nope", {})


def test_graph_variants_add_the_mgnn_options_to_their_body():
    for name, cls in MODELS.items():
        if name.endswith("_graph"):
            body = {f.name for f in dataclasses.fields(MODELS[name.removesuffix("_graph")].config_cls)}
            graph = {f.name for f in dataclasses.fields(cls.config_cls)}
            assert graph == body | {"layers", "combine", "channels", "graph_features"}, name
    with pytest.raises(ConfigError, match="combine"):
        validate_model_args("mmoe_graph", {"combine": "rnn"})


def test_config_and_keywords_build_the_same_model():
    import torch

    for name in ("moge", "e2e_grec", "snr_trans_graph"):
        cls = model_class(name)
        args = {"n_experts": 2} if name != "snr_trans_graph" else {"n_experts": 2, "layers": 1}
        torch.manual_seed(0)
        a = build_model(name, SPEC, args)
        torch.manual_seed(0)
        b = cls(SPEC, **args)
        assert isinstance(a, RecModel) and a.config == b.config
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(TypeError, match="not both"):
        model_class("moge")(SPEC, validate_model_args("moge", {}), n_experts=2)
