"""The few plot shapes every command draws (headless, PNG), written atomically."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from inheritune.atomic import atomic_write_bytes


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def heatmap(
    matrix: np.ndarray,
    path: str | Path,
    title: str,
    xlabel: str = "head",
    ylabel: str = "layer",
    cbar: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """A rows x columns heatmap, row 0 at the top (layer 0 first)."""
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * matrix.shape[1] + 2), max(3, 0.22 * matrix.shape[0] + 1.5)))
    im = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=cbar)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _save(fig, path)


def curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Named (x, y) curves on one axis, with optional labelled horizontal reference lines. With
    ``ylim``, points above the top are drawn as markers on the top edge, with their value."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for index, (name, (x, y)) in enumerate(series.items()):
        (line,) = ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=name)
        for xi, yi in zip(x, y, strict=True):
            if ylim is not None and yi > ylim[1]:  # off the clipped axis: a marker at the edge, labelled
                ax.annotate(
                    f"{name}: {yi:.1f}",
                    (xi, ylim[1]),
                    xytext=(6, -10 - 9 * index),
                    textcoords="offset points",
                    fontsize=7,
                    color=line.get_color(),
                    annotation_clip=False,
                )
                ax.plot([xi], [ylim[1]], marker="^", color=line.get_color(), clip_on=False)
    for name, level in (hlines or {}).items():
        ax.axhline(level, linestyle="--", color="gray", linewidth=1)
        ax.annotate(name, (0.01, level), xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="gray")
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


def bars(
    values: Sequence[float], path: str | Path, title: str, xlabel: str, ylabel: str, highlight: Sequence[int] = ()
) -> Path:
    """One bar per index (e.g. per layer), highlighted indices in a second colour."""
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(values) + 2), 3.5))
    marked = set(highlight)
    colors = ["tab:red" if i in marked else "tab:blue" for i in range(len(values))]
    ax.bar(range(len(values)), values, color=colors)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def matrices(panels: Mapping[str, np.ndarray], path: str | Path, title: str, cbar: str = "") -> Path:
    """Square matrices side by side on one colour scale (e.g. attention maps of two heads)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    vmax = max(float(np.max(m)) for m in panels.values())
    for ax, (name, m) in zip(axes[0], panels.items(), strict=True):
        im = ax.imshow(np.asarray(m, dtype=float), cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set(title=name, xlabel="key position", ylabel="query position")
    fig.colorbar(im, ax=list(axes[0]), label=cbar)
    fig.suptitle(title)
    return _save(fig, path)


def panels(
    plots: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[Sequence[float]]]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
) -> Path:
    """One panel per name (e.g. per pruning criterion), side by side on a shared y axis, each with
    named (x, y, [low, high]) curves drawn with their interval as a shaded band, and the same
    labelled horizontal reference lines (e.g. chance) in every panel."""
    fig, axes = plt.subplots(1, len(plots), figsize=(4.2 * len(plots), 3.8), sharey=True, squeeze=False)
    for ax, (panel, series) in zip(axes[0], plots.items(), strict=True):
        for name, (x, y, band) in series.items():
            (line,) = ax.plot(x, y, marker="o", markersize=3, label=name)
            low, high = zip(*band, strict=True) if len(band) else ((), ())
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        for name, level in (hlines or {}).items():
            ax.axhline(level, linestyle="--", color="gray", linewidth=1)
            ax.annotate(name, (0.01, level), xycoords=("axes fraction", "data"), va="bottom", fontsize=7, color="gray")
        ax.set(title=panel, xlabel=xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def scatter(
    x: Sequence[float],
    y: Sequence[float],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    highlight: Sequence[int] = (),
    labels: Mapping[int, str] | None = None,
) -> Path:
    """One point per unit (e.g. per head), highlighted indices in a second colour, a few labelled."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    marked = set(highlight)
    colors = ["tab:red" if i in marked else "tab:blue" for i in range(len(x))]
    ax.scatter(x, y, c=colors, s=14, alpha=0.7)
    for i, text in (labels or {}).items():
        ax.annotate(text, (x[i], y[i]), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def strips(rows: Mapping[str, Sequence[int]], total: int, path: str | Path, title: str) -> Path:
    """One strip per model over the reference's ``total`` blocks: a filled cell is a block it holds."""
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * total + 2), 0.45 * len(rows) + 1.2))
    matrix = np.zeros((len(rows), total))
    for r, held in enumerate(rows.values()):
        matrix[r, list(held)] = 1
    ax.imshow(matrix, aspect="auto", cmap="Greens", vmin=0, vmax=1.3, interpolation="nearest")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xticks(range(total))
    ax.set_xticks(np.arange(-0.5, total), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set(title=title, xlabel="reference block")
    return _save(fig, path)
