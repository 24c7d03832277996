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


def png_markdown(png: bytes, alt: str = "plot") -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
