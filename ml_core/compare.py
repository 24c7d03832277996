"""Side-by-side comparison of model variants: the MoGE paper's Table 2 for our own data.

Every variant is trained by the same trainer on the same days (each day scored with its own
graphs), with the same budget (epochs, steps, batch size, learning rate) and the same seeds, and
evaluated on the same held-out day. A *variant* is a registered model plus optional model
arguments and trainer settings (optimizer, post-training steps), e.g. ``mmoe+sevo`` = MMoE
trained with the AdamW-SEvo optimizer.

Configured by ``[comparison]`` (see :class:`ml_core.config.ComparisonConfig`)::

    [comparison]
    variants = ["moge", "mmoe", "mmoe+sevo", {name = "moge_con", model = "moge", model_args = {interaction = "con"}}]
    seeds = [0, 1, 2]
    epochs = 2

An empty ``variants`` list means every registered model plus the :data:`PRESETS`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ml_core.models.registry import available_models, validate_model_args

#: The MoGE paper's baselines (section 5.2); the "+Graph" variants are these names + "_graph".
PAPER_BASELINES = ("mlp", "ngcf", "shared_bottom", "cross_stitch", "esmm", "mmoe", "snr_trans", "cgc")
#: The other systems of our papers; MoGE is "ours" in the paper's Table 2.
SYSTEMS = ("e2e_grec", "lightgode", "mgoe")


@dataclass
class Variant:
    """One row of the comparison: ``model`` with ``model_args``, trained with ``train`` overrides."""

    name: str
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """``moge``, ``baseline``, ``baseline+graph`` or ``system`` (E2E-GRec, LightGODE, MGOE and
        any model trained with another optimizer or a post-training step, e.g. SEvo)."""
        base = self.model.removesuffix("_graph")
        if self.train:
            return "system"
        if self.model == "moge":
            return "moge"
        if base in PAPER_BASELINES:
            return "baseline+graph" if self.model.endswith("_graph") else "baseline"
        return "system"

    @property
    def is_baseline(self) -> bool:
        return self.family.startswith("baseline") and not self.model_args


#: Named variants that are not just a registered model: the optimizer / post-training systems.
PRESETS: dict[str, Variant] = {
    "mmoe+sevo": Variant("mmoe+sevo", "mmoe", train={"optimizer": "sevo"}),
    "moge+sevo": Variant("moge+sevo", "moge", train={"optimizer": "sevo"}),
    # rescale="norm" keeps the integrated rows at their trained norms: without it the (1 + T)
    # growth of the id rows against the (unchanged) feature projection lowered MMoE's GAUC
    "mmoe+lightgode": Variant("mmoe+lightgode", "mmoe", train={"post_training": ["lightgode"],
                                                               "post_training_args": {"lightgode": {"rescale": "norm"}}}),
}


def parse_variants(entries: list) -> list[Variant]:
    """Config entries -> variants: a registered model name, a :data:`PRESETS` name, or a table
    ``{name, model, model_args, train}``. Empty = every registered model + every preset."""
    models = available_models()
    if not entries:
        return [Variant(m, m) for m in models] + list(PRESETS.values())
    out = []
    for e in entries:
        if isinstance(e, str):
            if e in PRESETS:
                out.append(PRESETS[e])
            elif e in models:
                out.append(Variant(e, e))
            else:
                raise ValueError(f"comparison variant {e!r} is neither a registered model {models} nor a preset {sorted(PRESETS)}")
        elif isinstance(e, dict):
            unknown = set(e) - {"name", "model", "model_args", "train"}
            if unknown or "model" not in e:
                raise ValueError(f"comparison variant table needs 'model' (and optional name, model_args, train); got {sorted(e)}")
            if e["model"] not in models:
                raise ValueError(f"comparison variant {e!r}: unknown model {e['model']!r}; registered: {models}")
            try:
                validate_model_args(e["model"], e.get("model_args", {}))  # keys, types, ranges: before any training
            except ValueError as err:
                raise ValueError(f"comparison variant {e.get('name', e['model'])!r}: {err}") from err
            out.append(Variant(e.get("name", e["model"]), e["model"], dict(e.get("model_args", {})), dict(e.get("train", {}))))
        else:
            raise ValueError(f"comparison variant must be a name or a table, got {e!r}")
    names = [v.name for v in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"comparison variant names must be unique; repeated: {dup}")
    return out


def variant_train_config(base, variant: Variant, seed: int, budget: dict[str, Any]):
    """The TrainConfig of one (variant, seed): ``base`` + the comparison budget + the variant's own
    settings. ``base.model_args`` belong to the daily model and are not inherited."""
    from ml_core.train.extensions import validate

    known = set(base.__dataclass_fields__)
    bad = set(variant.train) - known
    if bad:
        raise ValueError(f"variant {variant.name!r}: unknown train settings {sorted(bad)}")
    cfg = replace(base, **budget, **variant.train, model=variant.model, model_args=dict(variant.model_args), seed=seed)
    validate(cfg)
    return cfg


def run_comparison(train_days, eval_day, tasks: list[str], base_train, variants: list[Variant], seeds: list[int],
                   budget: dict[str, Any] | None = None, log=None, cf=None) -> dict:
    """Train and evaluate every (variant, seed) on the same data. ``train_days`` / ``eval_day``
    are :class:`~ml_core.contracts.day.DayInputs` with graphs; ``cf``: the ``[cf]`` settings of the
    CF scorers scored beside the sanity rules (None: the defaults). Returns ``{"runs": [...],
    "summary": [...], "sanity": ..., "cf": ..., "cf_info": ...}``."""
    from ml_core.cf import cf_metrics
    from ml_core.inference import score_day
    from ml_core.sanity import sanity_metrics
    from ml_core.train.trainer import train

    log = log or (lambda msg: None)
    budget = budget or {}
    runs, probs = [], {}
    scored = None
    for v in variants:
        for seed in seeds:
            cfg = variant_train_config(base_train, v, seed, budget)
            t0 = time.perf_counter()
            res = train(train_days, cfg, tasks)
            t1 = time.perf_counter()
            scored = score_day(res, res.feature_spec, eval_day, cfg.fanouts, seed=seed)
            metrics = scored.metrics
            probs[v.name, seed] = scored.probs
            runs.append({
                "variant": v.name, "model": v.model, "family": v.family, "model_args": v.model_args, "train": v.train,
                "seed": seed, "train_seconds": round(res.seconds, 3), "eval_seconds": round(time.perf_counter() - t1, 3),
                "n_params": res.n_params, "samples_seen": res.samples_seen, "post_training": res.post_training,
                "metrics": {t: {k: float(x) for k, x in m.items() if k in ("gauc", "auc", "logloss")
                                or (k.startswith("gauc_within_") and not k.endswith("_users"))}
                            for t, m in metrics.items()},
            })
            log(f"{v.name} seed {seed}: " + " ".join(f"{t} GAUC {m['gauc']:.4f}" for t, m in metrics.items())
                + f" ({t1 - t0:.1f} s train)")
    summary = summarize(runs, tasks, variants)
    out = {"tasks": list(tasks), "seeds": list(seeds), "budget": budget, "runs": runs, "summary": summary,
           "sanity": sanity_metrics(eval_day, list(tasks)) if eval_day.graph is not None else {}}
    if eval_day.graph is not None and eval_day.user_sim is not None and eval_day.item_sim is not None:
        out["cf"], out["cf_info"] = cf_metrics(eval_day, list(tasks), cf)
    if scored is not None:
        out["differences"] = paired_differences(summary, tasks, seeds, probs, scored.users, scored.labels)
    return out


def paired_differences(summary: list[dict], tasks: list[str], seeds: list[int], probs: dict,
                       users, labels, n_boot: int = 1000) -> dict[str, list[dict]]:
    """Per task, the best variant and MoGE each against the best paper baseline: the GAUC
    difference of each seed's models on the same samples with its paired bootstrap interval
    over users (:func:`ml_core.eval.bootstrap.gauc_difference`, 95%)."""
    from ml_core.eval.bootstrap import gauc_difference

    imp = improvements(summary, tasks)
    out = {}
    for k, t in enumerate(tasks):
        e = imp[t]
        if "best_baseline" not in e:
            continue
        rows = []
        for name in dict.fromkeys(x for x in (e["best"], "moge" if "moge_improvement" in e else None) if x):
            if name == e["best_baseline"]:
                continue
            for seed in seeds:
                d = gauc_difference(users, labels[:, k], probs[name, seed][:, k], probs[e["best_baseline"], seed][:, k],
                                    n_boot=n_boot, seed=seed)
                rows.append({"variant": name, "baseline": e["best_baseline"], "seed": seed,
                             **{x: d[x] for x in ("diff", "low", "high", "n_groups")}})
        out[t] = rows
    return out


def summarize(runs: list[dict], tasks: list[str], variants: list[Variant]) -> list[dict]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) over seeds, per variant."""
    rows = []
    for v in variants:
        rs = [r for r in runs if r["variant"] == v.name]
        if not rs:
            continue
        row = {"variant": v.name, "family": v.family, "baseline": v.is_baseline, "seeds": len(rs),
               "train_seconds": float(np.mean([r["train_seconds"] for r in rs])), "n_params": rs[0]["n_params"]}
        for t in tasks:
            nested = [k for k in rs[0]["metrics"][t] if k.startswith("gauc_within_")]  # e.g. purchase within click
            for k in ("gauc", "auc", "logloss", *nested):
                vals = np.array([r["metrics"][t][k] for r in rs])
                row[f"{k}_{t}"] = float(vals.mean())
                row[f"{k}_{t}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def improvements(summary: list[dict], tasks: list[str]) -> dict[str, dict]:
    """Per task: the best variant, the best paper baseline, and the relative GAUC improvement of
    the best over the best baseline (the paper's "Impr." row), plus MoGE's own improvement."""
    out = {}
    for t in tasks:
        key = f"gauc_{t}"
        best = max(summary, key=lambda r: r[key])
        baselines = [r for r in summary if r["baseline"]]
        entry = {"best": best["variant"], "best_gauc": best[key]}
        if baselines:
            bb = max(baselines, key=lambda r: r[key])
            entry.update({"best_baseline": bb["variant"], "best_baseline_gauc": bb[key],
                          "improvement": (best[key] - bb[key]) / bb[key]})
            moge = next((r for r in summary if r["variant"] == "moge"), None)
            if moge is not None:
                entry["moge_improvement"] = (moge[key] - bb[key]) / bb[key]
        out[t] = entry
    return out


def markdown_report(result: dict, title: str = "Model comparison") -> str:
    """Table 2 for our data: GAUC/AUC/logloss per task (mean ± std over seeds), the nested-task
    GAUC (purchase within click), training time, parameters, the sanity and the CF scorers on the
    same samples, the relative improvement of the best over the best baseline, and the paired
    bootstrap intervals of those differences per seed."""
    tasks, summary = result["tasks"], result["summary"]
    # nested-task GAUCs: (metric key, task), e.g. ("gauc_within_click", "purchase")
    within = sorted({(k.removesuffix(f"_{t}"), t) for r in summary for t in tasks for k in r
                     if k.startswith("gauc_within_") and k.endswith(f"_{t}")})
    head = ["variant", "family"] + [f"GAUC {t}" for t in tasks] \
        + [f"GAUC {t} {k.removeprefix('gauc_').replace('_', ' ')}" for k, t in within] \
        + [f"AUC {t}" for t in tasks] + [f"logloss {t}" for t in tasks] + ["train s", "params"]
    lines = [f"# {title}", ""]
    meta = result.get("meta", {})
    if meta:
        lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    budget = result["budget"] or "the [train] settings"
    lines += [f"Seeds {result['seeds']}; mean ± sample std over seeds; every variant trained with {budget}.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = sorted(summary, key=lambda r: -np.mean([r[f"gauc_{t}"] for t in tasks]))
    best = {t: max(r[f"gauc_{t}"] for r in summary) for t in tasks}
    for r in ranked:
        cells = [r["variant"], r["family"]]
        for t in tasks:
            g = f"{r[f'gauc_{t}']:.4f} ± {r[f'gauc_{t}_std']:.4f}"
            cells.append(f"**{g}**" if r[f"gauc_{t}"] == best[t] else g)
        cells += [f"{r[f'{k}_{t}']:.4f}" if f"{k}_{t}" in r else "-" for k, t in within]
        cells += [f"{r[f'auc_{t}']:.4f}" for t in tasks] + [f"{r[f'logloss_{t}']:.4f}" for t in tasks]
        cells += [f"{r['train_seconds']:.1f}", f"{r['n_params']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    # rules that need no model and the classical CF scorers, on the same samples
    for kind, name, per_task in [(k, n, m) for k in ("sanity", "cf") for n, m in (result.get(k) or {}).items()]:
        cells = [f"{kind}: {name}", kind] + [f"{per_task[t]['gauc']:.4f}" for t in tasks]
        cells += [f"{per_task[t][k]:.4f}" if k in per_task[t] else "-" for k, t in within]
        cells += [f"{per_task[t]['auc']:.4f}" for t in tasks] + ["-"] * len(tasks) + ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    imp = improvements(summary, tasks)
    lines.append("")
    for t, e in imp.items():
        text = f"- {t}: best {e['best']} ({e['best_gauc']:.4f})"
        if "best_baseline" in e:
            text += f", best paper baseline {e['best_baseline']} ({e['best_baseline_gauc']:.4f}), " \
                    f"improvement {100 * e['improvement']:+.2f}%"
            if "moge_improvement" in e:
                text += f"; MoGE vs best baseline {100 * e['moge_improvement']:+.2f}%"
        lines.append(text)
    for t, rows in (result.get("differences") or {}).items():
        for r in rows:
            lines.append(f"  - {t}: {r['variant']} - {r['baseline']}, seed {r['seed']}: {r['diff']:+.4f} "
                         f"(95% paired bootstrap over {r['n_groups']} users: [{r['low']:+.4f}, {r['high']:+.4f}])")
    return "\n".join(lines) + "\n"
