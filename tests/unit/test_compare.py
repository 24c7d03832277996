"""The comparison's variant parsing, aggregation and Table-2 arithmetic (no training here; the
asset test trains two variants for real)."""

from __future__ import annotations

import pytest

from ml_core.compare import PRESETS, Variant, improvements, markdown_report, parse_variants, summarize, variant_train_config
from ml_core.config import TrainConfig
from ml_core.models.registry import available_models


def test_parse_variants_names_presets_tables_and_errors():
    vs = parse_variants(["moge", "mmoe+sevo", {"name": "moge_con", "model": "moge", "model_args": {"interaction": "con"}}])
    assert [v.name for v in vs] == ["moge", "mmoe+sevo", "moge_con"]
    assert vs[1].train == {"optimizer": "sevo"} and vs[2].model_args == {"interaction": "con"}
    assert [v.name for v in parse_variants([])] == available_models() + list(PRESETS)
    with pytest.raises(ValueError, match="neither a registered model"):
        parse_variants(["nope"])
    with pytest.raises(ValueError, match="unknown model"):
        parse_variants([{"model": "nope"}])
    with pytest.raises(ValueError, match="unique"):
        parse_variants(["moge", "moge"])


def test_variant_config_takes_budget_and_own_settings_not_the_daily_model_args():
    base = TrainConfig(model="moge", epochs=5, model_args={"interaction": "con"})
    cfg = variant_train_config(base, PRESETS["mmoe+sevo"], seed=3, budget={"epochs": 1})
    assert (cfg.model, cfg.optimizer, cfg.seed, cfg.epochs, cfg.model_args) == ("mmoe", "sevo", 3, 1, {})
    with pytest.raises(ValueError, match="unknown train settings"):
        variant_train_config(base, Variant("x", "mmoe", train={"lrr": 1}), 0, {})


def _run(variant, seed, click, buy):
    return {"variant": variant, "seed": seed, "train_seconds": 1.0, "n_params": 10,
            "metrics": {"click": {"gauc": click, "auc": click, "logloss": 0.5},
                        "purchase": {"gauc": buy, "auc": buy, "logloss": 0.3}}}


def test_summary_and_improvement_over_the_best_baseline():
    variants = [Variant("mmoe", "mmoe"), Variant("cgc_graph", "cgc_graph"), Variant("moge", "moge"),
                Variant("mmoe+sevo", "mmoe", train={"optimizer": "sevo"})]
    runs = [_run("mmoe", 0, 0.60, 0.70), _run("mmoe", 1, 0.62, 0.72),
            _run("cgc_graph", 0, 0.70, 0.715), _run("cgc_graph", 1, 0.70, 0.715),
            _run("moge", 0, 0.77, 0.74), _run("moge", 1, 0.77, 0.76),
            _run("mmoe+sevo", 0, 0.90, 0.60), _run("mmoe+sevo", 1, 0.90, 0.60)]
    summary = summarize(runs, ["click", "purchase"], variants)
    mmoe = summary[0]
    assert mmoe["gauc_click"] == pytest.approx(0.61) and mmoe["gauc_click_std"] == pytest.approx(0.0141421, abs=1e-6)
    assert [r["family"] for r in summary] == ["baseline", "baseline+graph", "moge", "system"]
    assert [r["baseline"] for r in summary] == [True, True, False, False]  # sevo is not a paper baseline
    imp = improvements(summary, ["click", "purchase"])
    assert imp["click"]["best"] == "mmoe+sevo" and imp["click"]["best_baseline"] == "cgc_graph"
    assert imp["click"]["improvement"] == pytest.approx(0.9 / 0.7 - 1)
    assert imp["click"]["moge_improvement"] == pytest.approx(0.77 / 0.7 - 1)
    assert imp["purchase"]["best"] == "moge" and imp["purchase"]["best_baseline"] == "cgc_graph"
    assert imp["purchase"]["improvement"] == pytest.approx(0.75 / 0.715 - 1)
    report = markdown_report({"tasks": ["click", "purchase"], "seeds": [0, 1], "budget": {}, "summary": summary})
    assert report.count("\n| ") == 5  # header + 4 variants
    rule = {t: {"gauc": 0.6, "auc": 0.61} for t in ("click", "purchase")}
    with_rules = markdown_report({"tasks": ["click", "purchase"], "seeds": [0, 1], "budget": {}, "summary": summary,
                                  "sanity": {"seen_pair": rule}, "cf": {"item_knn": rule, "ease": rule}})
    assert "| sanity: seen_pair | sanity | 0.6000 | 0.6000 |" in with_rules and with_rules.count("\n| cf: ") == 2
    assert "| cf: ease | cf | 0.6000 | 0.6000 |" in with_rules
    assert "**0.9000 ± 0.0000**" in report and "+28.57%" in report
