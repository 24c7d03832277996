import pytest

from ml_core.config import load_config


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
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(p, ["graph.top_k=3"])
    with pytest.raises(ValueError, match="unknown behaviours"):
        load_config(p, ['samples.tasks={x = ["like"]}'])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(p, ["epochs=3"])


def test_unknown_optimizer_and_post_training_steps_are_rejected_at_load():
    with pytest.raises(ValueError, match="train.optimizer"):
        load_config(None, ['train.optimizer="sgdx"'])
    with pytest.raises(ValueError, match="post_training"):
        load_config(None, ['train.post_training=["nope"]'])
    with pytest.raises(ValueError, match="post_training_args"):
        load_config(None, ["train.post_training_args={lightgode = {t = 1.0}}"])
