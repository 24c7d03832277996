"""Small PNG plots for materialization metadata and reports (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import io

import numpy as np


def _fig_to_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def degree_plot(degrees: dict[str, np.ndarray], title: str = "degree distribution") -> bytes:
    """Log-log complementary CDF of each named degree array."""
    fig, ax = _figure(title, "degree", "share of nodes with degree >= x")
    for name, deg in degrees.items():
        deg = np.asarray(deg)
        deg = deg[deg > 0]
        if len(deg) == 0:
            continue
        xs = np.sort(deg)
        ccdf = 1.0 - np.arange(len(xs)) / len(xs)
        ax.loglog(xs, ccdf, label=name)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _fig_to_png(fig)


def curve_plot(points: list[tuple[float, float]], title: str, xlabel: str, ylabel: str) -> bytes:
    fig, ax = _figure(title, xlabel, ylabel)
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker=".")
    return _fig_to_png(fig)


def bar_plot(groups: dict[str, dict[str, float]], title: str, ylabel: str) -> bytes:
    """Grouped bars: ``groups[series][category] = value``."""
    fig, ax = _figure(title, "", ylabel)
    series = list(groups)
    cats = sorted({c for s in groups.values() for c in s})
    width = 0.8 / max(len(series), 1)
    for j, s in enumerate(series):
        ax.bar(np.arange(len(cats)) + j * width, [groups[s].get(c, np.nan) for c in cats], width, label=s)
    ax.set_xticks(np.arange(len(cats)) + 0.4 - width / 2, cats, rotation=30, ha="right")
    ax.legend(fontsize=7)
    return _fig_to_png(fig)


def comparison_plot(summary: list[dict], tasks: list[str], title: str = "GAUC per task (mean ± std over seeds)") -> bytes:
    """One panel per task: a horizontal bar per variant (sorted by GAUC) with its seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 0.28 * len(summary) + 1.2), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        rows = sorted(summary, key=lambda r: r[f"gauc_{t}"])
        y = np.arange(len(rows))
        colors = ["tab:red" if r["variant"] == "moge" else "tab:blue" if "graph" in r["family"] else "tab:gray"
                  for r in rows]
        ax.barh(y, [r[f"gauc_{t}"] for r in rows], xerr=[r[f"gauc_{t}_std"] for r in rows], color=colors)
        ax.set_yticks(y, [r["variant"] for r in rows], fontsize=7)
        lo = min(r[f"gauc_{t}"] - r[f"gauc_{t}_std"] for r in rows)
        ax.set_xlim(max(0.0, lo - 0.02), min(1.0, max(r[f"gauc_{t}"] + r[f"gauc_{t}_std"] for r in rows) + 0.01))
        ax.set_title(f"{t}", fontsize=9)
        ax.set_xlabel("GAUC")
    fig.suptitle(title, fontsize=9)
    return _fig_to_png(fig)



def _position(value, axis: dict) -> float:
    """``value`` on a parallel-coordinates axis scaled to 0..1 (log axes in log, choices by index)."""
    if axis.get("choices") is not None:
        idx = next((i for i, c in enumerate(axis["choices"]) if c == value), 0)
        return idx / max(len(axis["choices"]) - 1, 1)
    lo, hi, v = axis["low"], axis["high"], value
    if axis.get("log"):
        lo, hi, v = np.log(lo), np.log(hi), np.log(max(v, axis["low"]))
    return float((v - lo) / (hi - lo))


def tuning_plot(trials: list[dict], space: dict[str, dict], importances: dict[str, float], metric: str) -> bytes:
    """A hyper-parameter search at a glance: each trial's value and the best so far (optimisation
    history); every complete trial as a line over the parameters scaled to their ranges, coloured
    by its value, the best in red (parallel coordinates); the parameter importances when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None and np.isfinite(t["value"])]
    panels = 3 if importances else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    ax.plot([t["number"] for t in done], [t["value"] for t in done], "o", color="tab:blue", label="trial")
    best = np.maximum.accumulate([t["value"] for t in done]) if done else []
    ax.step([t["number"] for t in done], best, where="post", color="tab:red", label="best so far")
    failed = [t["number"] for t in trials if t not in done]
    if failed and done:
        ax.plot(failed, [min(t["value"] for t in done)] * len(failed), "x", color="gray", label="failed")
    ax.set(xlabel="trial", ylabel=f"{metric} GAUC (validation day)")
    ax.set_title("optimisation history", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0][1]
    names = list(space)
    if done and names:
        values = np.array([t["value"] for t in done])
        span = values.max() - values.min() or 1.0
        cmap = plt.get_cmap("viridis")
        top = max(done, key=lambda t: t["value"])
        for t in sorted(done, key=lambda t: t["value"]):
            ys = [_position(t["params"][n], space[n]) for n in names]
            style = {"color": "tab:red", "lw": 2.2, "zorder": 3} if t is top else \
                {"color": cmap((t["value"] - values.min()) / span), "lw": 1.0, "alpha": 0.8}
            ax.plot(range(len(names)), ys, marker=".", **style)
        for i, n in enumerate(names):
            ax.axvline(i, color="lightgray", lw=0.8, zorder=0)
            ends = space[n]["choices"] if space[n].get("choices") is not None else [space[n]["low"], space[n]["high"]]
            for j, label in ((0, ends[0]), (1, ends[-1])):
                ax.annotate(f"{label:.3g}" if isinstance(label, float) else str(label), (i, j), fontsize=6,
                            ha="center", va="top" if j == 0 else "bottom")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=7)
    ax.set_yticks([])
    ax.set_ylim(-0.1, 1.1)
    ax.set_title("parameters of the complete trials (red: best)", fontsize=9)
    if importances:
        ax = axes[0][2]
        items = sorted(importances.items(), key=lambda kv: kv[1])
        ax.barh(range(len(items)), [v for _, v in items], color="tab:blue")
        ax.set_yticks(range(len(items)), [k for k, _ in items], fontsize=7)
        ax.set_xlabel("share")
        ax.set_title("parameter importance (PED-ANOVA)", fontsize=9)
    return _fig_to_png(fig)


def png_markdown(png: bytes, alt: str = "plot") -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
