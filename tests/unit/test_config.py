import os
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from ml_core.config import (
    DEFAULT_CONFIG_PATH,
    SOURCE_KINDS,
    SyntheticSource,
    TableSource,
    TaobaoSource,
    load_config,
    source_config,
)
from ml_core.data.schema import BEHAVIORS
from ml_core.data.synthetic import PRESETS
from ml_core.preflight import check_runnable
from ml_core.typed import ConfigError
from tests.conftest import REPO


def test_defaults_and_overrides(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.toml"):
        load_config(tmp_path / "none.toml")
    cfg = load_config(None, ["train.epochs=5", "train.fanouts=[3, 2]", 'source.kind="taobao"'])
    assert cfg.train.epochs == 5 and cfg.train.fanouts == [3, 2] and cfg.source.kind == "taobao"
    assert cfg.samples.tasks == {"click": ["view", "cart", "fav", "buy"], "purchase": ["buy"]}


def test_toml_file_and_errors(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[graph]\ntopk = 7\n[samples]\ntasks = { fav = ["fav"], buy = ["buy"] }\n')
    cfg = load_config(p)
    assert cfg.graph.topk == 7 and list(cfg.samples.tasks) == ["fav", "buy"]
    with pytest.raises(ValueError, match="unknown key graph.top_k"):
        load_config(p, ["graph.top_k=3"])
    with pytest.raises(ValueError, match="unknown behaviours"):
        load_config(p, ['samples.tasks={x = ["like"]}'])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(p, ["epochs=3"])


def test_unknown_optimizer_and_post_training_steps_are_rejected_at_load():
    # the training extensions live above the config layer: checked by check_runnable, which runs
    # when the code location loads and when the pipeline resource builds a run's config
    with pytest.raises(ValueError, match="train.optimizer"):
        check_runnable(load_config(None, ['train.optimizer="sgdx"']))
    with pytest.raises(ValueError, match="post_training"):
        check_runnable(load_config(None, ['train.post_training=["nope"]']))
    with pytest.raises(ValueError, match="post_training_args"):
        check_runnable(load_config(None, ["train.post_training_args={lightgode = {t = 1.0}}"]))


# ----------------------------------------------------------------------------- typed loading


@pytest.mark.parametrize(("overrides", "message"), [
    (['train.epochs="2"'], "train.epochs = '2' (str): expected int"),
    (["train.lr=true"], "train.lr = True (bool): expected float"),
    (['train.fanouts=[10, "5"]'], "train.fanouts[1] = '5' (str): expected int"),
    (['graph.similarity="dot"'], "graph.similarity = 'dot': expected one of ['cosine', 'jaccard']"),
    (["graph.incremental=1"], "graph.incremental = 1 (int): expected bool"),
    (['samples.tasks={click = "view"}'], "samples.tasks.click = 'view' (str): expected list[str]"),
    (["storage.root=3"], "storage.root = 3 (int): expected str"),
    (['train.device="gpu"'], "train.device = 'gpu'"),
    (["graph.nope=1"], "unknown key graph.nope"),
    (["source.seed=1.5"], "source.seed = 1.5 (float): expected int"),
    (['source.preset="huge"'], "source.preset = 'huge': expected one of ['small', 'medium', 'large']"),
    (['source.kind="orc"'], "source.kind = 'orc': expected one of ['synthetic', 'taobao', 'tmall', 'table']"),
    (['source.timezone="Mars/Olympus"'], "source.timezone = 'Mars/Olympus'"),
    (['source.start_date="2026-13-01"'], "source.start_date = '2026-13-01'"),
    (['source.end_date="2025-12-31"'], "source.end_date 2025-12-31 is before source.start_date"),
])
def test_wrong_values_fail_at_load_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_section_must_be_a_table(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('train = "fast"\n')
    with pytest.raises(ConfigError, match=r"\[train\] = 'fast'"):
        load_config(p)


def test_source_kind_selects_its_dataclass():
    cfg = load_config(None, ['source.kind="table"', 'source.columns={user_id = "u"}', 'source.ts_format="unix_ms"'])
    assert isinstance(cfg.source, TableSource) and cfg.source.columns == {"user_id": "u"}
    assert isinstance(load_config(None).source, SyntheticSource)
    # common fields read the same on every kind
    assert cfg.source.start_date == load_config(None).source.start_date == "2026-01-01"
    assert set(SOURCE_KINDS) == {"synthetic", "taobao", "tmall", "table"}


@pytest.mark.parametrize(("kind", "key", "value", "owner"), [
    ("taobao", "columns", '{user_id = "u"}', "'table'"),
    ("taobao", "year", "2015", "'tmall' / 'table'"),
    ("tmall", "preset", '"small"', "'synthetic'"),
    ("synthetic", "path", '"x.csv"', "'taobao' / 'tmall' / 'table'"),
    ("table", "seed", "3", "'synthetic'"),
])
def test_field_of_another_source_is_named(kind, key, value, owner):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f'source.kind="{kind}"', f"source.{key}={value}"])
    msg = str(e.value)
    assert f"source.{key} = " in msg and f"not a field of a '{kind}' source" in msg and owner in msg


def test_overriding_the_kind_drops_the_files_fields_of_the_old_kind(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[source]\nkind = "synthetic"\npreset = "medium"\nseed = 3\nstart_date = "2025-01-01"\n')
    cfg = load_config(p, ['source.kind="taobao"', 'source.path="x.csv"'])
    assert cfg.source == TaobaoSource(path="x.csv", start_date="2025-01-01")
    # the default file (synthetic, with preset and seed) switched to taobao on the command line
    if DEFAULT_CONFIG_PATH.exists():
        assert isinstance(load_config(DEFAULT_CONFIG_PATH, ['source.kind="taobao"']).source, TaobaoSource)


def test_config_vocabularies_match_the_code():
    assert list(get_args(get_type_hints(SyntheticSource)["preset"])) == list(PRESETS)
    assert BEHAVIORS == ("view", "cart", "fav", "buy")


def test_shipped_configs_load_and_fingerprint():
    shipped = ["data/pipeline.toml", *sorted(str(p) for p in Path("data/configs").glob("*.toml"))]
    assert len(shipped) >= 4  # taobao, cikm2019, tmall_history
    for p in shipped:
        cfg = load_config(p)
        assert len(cfg.fingerprint()) == 12 and cfg.to_dict()["source"]["kind"] == cfg.source.kind


# ----------------------------------------------------------------------------- check_runnable


@pytest.mark.parametrize(("override", "message"), [
    ('train.model_args={interaction = "dot"}', "[train.model_args] interaction must be one of ('ep', 'add', 'con', 'mlp'), got 'dot'"),
    ("train.model_args={n_experts = 2.5}", "train.model_args.n_experts = 2.5 (float): expected int"),
    ("train.model_args={no_such_arg = 1}", "unknown key train.model_args.no_such_arg"),
])
def test_model_args_are_checked_against_the_model_config_at_load(override, message):
    with pytest.raises(ValueError) as e:
        check_runnable(load_config(None, ['train.model="moge"', override]))
    assert message in str(e.value)



def test_unknown_model_is_named():
    with pytest.raises(ConfigError, match=r"train.model = 'mogee': not a registered model; available: \[.*'moge'"):
        check_runnable(load_config(None, ['train.model="mogee"']))
    check_runnable(load_config(None))  # the test config runs


def test_missing_source_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "UserBehavior.csv"
    cfg = load_config(None, ['source.kind="taobao"', f'source.path="{missing}"'])
    with pytest.raises(ConfigError) as e:
        check_runnable(cfg)
    assert "source.path" in str(e.value) and "nope/UserBehavior.csv" in str(e.value)
    with pytest.raises(ConfigError, match="source.path is empty"):
        check_runnable(load_config(None, ['source.kind="tmall"']))


def test_table_source_layout_is_checked_at_load(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("uid,iid,act,when\nu1,i1,view,1511661600\n")
    base = ['source.kind="table"', f'source.path="{f}"']
    cols = 'source.columns={user_id = "uid", item_id = "iid", behavior = "act"'
    with pytest.raises(ConfigError, match=r"source.columns is missing the mapping for \['ts'\]"):
        check_runnable(load_config(None, [*base, cols + "}"]))
    with pytest.raises(ConfigError, match="column 'time' .* is not in the header"):
        check_runnable(load_config(None, [*base, cols + ', ts = "time"}']))
    with pytest.raises(ConfigError, match="source.ts_format 'seconds'"):
        check_runnable(load_config(None, [*base, cols + ', ts = "when"}', 'source.ts_format="seconds"']))
    with pytest.raises(ConfigError, match="unknown behaviours"):
        check_runnable(load_config(None, [*base, cols + ', ts = "when"}', 'source.behavior_map={v = "like"}']))
    check_runnable(load_config(None, [*base, cols + ', ts = "when"}']))


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = load_config(None, ['train.model="nope"', 'train.optimizer="sgdx"', 'source.kind="taobao"',
                             f'source.path="{tmp_path / "none.csv"}"'])
    with pytest.raises(ConfigError) as e:
        check_runnable(cfg)
    msg = str(e.value)
    assert "train.model = 'nope'" in msg and "train.optimizer" in msg and "none.csv" in msg


def test_source_config_builds_typed_sources():
    assert source_config(kind="taobao", path="x").path == "x"
    with pytest.raises(ConfigError, match="source.columns"):
        source_config(kind="taobao", columns={"user_id": "u"})


def test_code_location_load_reports_a_bad_model_and_source(tmp_path):
    """assets/partitions.py checks the config when the code location loads: a wrong train.model
    or source path stops the load with the key named, before any run."""
    p = tmp_path / "bad.toml"
    p.write_text(f'[source]\nkind = "taobao"\npath = "{tmp_path / "none.csv"}"\n[train]\nmodel = "mogee"\n')
    out = subprocess.run([sys.executable, "-c", "import assets.partitions"], check=False, cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "MOGE_CONFIG": str(p)}, timeout=300)
    assert out.returncode != 0
    assert "train.model = 'mogee': not a registered model" in out.stderr and "none.csv" in out.stderr


def test_tracking_uris_are_printed_without_credentials():
    from ml_core.config.registry import redacted_uri

    assert redacted_uri("https://alice:s3cret@mlflow.internal:5000/path") == "https://***@mlflow.internal:5000/path"
    assert redacted_uri("http://token@host") == "http://***@host"
    assert redacted_uri("http://mlflow.internal:5000") == "http://mlflow.internal:5000"
    assert redacted_uri("") == ""
