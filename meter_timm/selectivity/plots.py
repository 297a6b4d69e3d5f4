"""Matplotlib figures of a dissection report (Agg backend, PNG files)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_report",
    "plot_unit_responses",
    "plot_selectivity_histogram",
    "plot_unit_bin_heatmap",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def matplotlib_colormap(name: str):
    """A private copy of a matplotlib colormap (safe to modify)."""
    import matplotlib

    return matplotlib.colormaps[name].copy()


def _save(fig, path: str | Path) -> Path:
    """Lay out, write as PNG, and close the figure."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _filename_part(name: str) -> str:
    """``name`` (a layer name) with every run of characters unfit for a file name replaced by _."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _bin_labels(edges: list[float]) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(edges, dtype=np.float64)
    return 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)


def plot_unit_responses(
    layer_name: str, layer: dict[str, Any], units: tuple[int, ...], path: str | Path
) -> Path:
    """The seed's figure: average response of chosen units per depth bin, one panel per unit.

    Bars are drawn at the bins' depth ranges; the assigned bin is orange, the argmax bin outlined.
    """
    plt = _pyplot()
    units = [u for u in units if 0 <= u < layer["num_units"]] or [0]
    resp = np.asarray(layer["responses"], dtype=np.float64)
    centres, widths = _bin_labels(layer["bin_edges"])
    fig, axes = plt.subplots(1, len(units), figsize=(4.2 * len(units), 3.4), squeeze=False)
    for ax, unit in zip(axes[0], units):
        colors = ["tab:blue"] * layer["num_bins"]
        colors[layer["assigned_bin"][unit]] = "tab:orange"
        bars = ax.bar(centres, resp[unit], width=widths * 0.9, color=colors)
        bars[layer["argmax_bin"][unit]].set_edgecolor("black")
        bars[layer["argmax_bin"][unit]].set_linewidth(1.5)
        assigned = layer["selectivity_assigned"][unit]
        assigned = "n/a" if assigned is None else f"{assigned:.2f}"
        ax.set_title(
            f"unit {unit}: SI assigned {assigned}, argmax {layer['selectivity_argmax'][unit]:.2f}",
            fontsize=9,
        )
        ax.set_xlabel("depth (m)")
        ax.set_xlim(layer["bin_edges"][0], layer["bin_edges"][-1])
    axes[0][0].set_ylabel("average response")
    fig.suptitle(
        f"{layer_name}: average response per depth bin (orange = assigned bin, outlined = argmax)",
        fontsize=10,
    )
    return _save(fig, path)


def plot_selectivity_histogram(layer_name: str, layer: dict[str, Any], path: str | Path) -> Path:
    """Histogram of the units' selectivity index, against the argmax and the assigned bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    bins = np.linspace(-1, 1, 41)
    sel_max = np.asarray(layer["selectivity_argmax"])
    sel_asg = np.asarray([v for v in layer["selectivity_assigned"] if v is not None], dtype=float)
    ax.hist(sel_max, bins=bins, alpha=0.7, label=f"argmax bin (mean {sel_max.mean():.3f})")
    if len(sel_asg):
        ax.hist(sel_asg, bins=bins, alpha=0.6, label=f"assigned bin (mean {sel_asg.mean():.3f})")
    ax.set_xlabel("depth selectivity index")
    ax.set_ylabel("units")
    title = f"{layer_name}: {layer['num_units']} units, {layer['num_bins']} bins"
    if len(sel_asg) < len(sel_max):  # the others' assigned bin has no pixel: no index there
        title += f" ({len(sel_asg)} with pixels in their assigned bin)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_unit_bin_heatmap(layer_name: str, layer: dict[str, Any], path: str | Path) -> Path:
    """Units x bins map of responses, each unit scaled to its own maximum, units sorted by
    argmax bin (a selective layer shows a diagonal)."""
    plt = _pyplot()
    resp = np.abs(np.asarray(layer["responses"], dtype=np.float64))
    peak = resp.max(axis=1, keepdims=True)
    norm = np.divide(resp, peak, out=np.zeros_like(resp), where=peak > 0)
    order = np.lexsort((np.arange(len(resp)), np.asarray(layer["argmax_bin"])))
    height = min(max(3.0, 0.06 * len(resp)), 12.0)
    fig, ax = plt.subplots(figsize=(6.5, height))
    empty = np.asarray(layer["counts"]) <= 0
    shown = np.ma.masked_array(norm[order], mask=np.broadcast_to(empty, norm.shape))
    cmap = matplotlib_colormap("viridis").with_extremes(bad="lightgrey")
    image = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0.0, vmax=1.0)
    edges = layer["bin_edges"]
    ticks = np.linspace(0, layer["num_bins"] - 1, min(layer["num_bins"], 8)).round().astype(int)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{0.5 * (edges[t] + edges[t + 1]):.1f}" for t in ticks], fontsize=8)
    ax.set_xlabel("depth bin centre (m)")
    # rows are units in argmax-bin order: the ticks name the units, not the row numbers
    rows = np.linspace(0, len(order) - 1, min(len(order), 12)).round().astype(int)
    ax.set_yticks(rows)
    ax.set_yticklabels([str(order[r]) for r in rows], fontsize=7)
    ax.set_ylabel("unit (sorted by argmax bin)")
    title = f"{layer_name}: |response| / unit max"
    ax.set_title(title + (" (grey: bins without pixels)" if empty.any() else ""), fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_report(
    report,
    out_dir: str | Path,
    units: tuple[int, ...] = (12, 24, 40),
    prefix: str = "",
    layers: list[str] | None = None,
) -> list[Path]:
    """All figures of the ``layers`` (default all) of a :class:`DissectionReport`; returns the
    PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, layer in report.layers.items():
        if layers is not None and name not in layers:
            continue
        stem = f"{prefix}{_filename_part(name)}"
        paths.append(plot_unit_responses(name, layer, tuple(units), out_dir / f"{stem}_units.png"))
        paths.append(
            plot_selectivity_histogram(name, layer, out_dir / f"{stem}_selectivity_hist.png")
        )
        paths.append(plot_unit_bin_heatmap(name, layer, out_dir / f"{stem}_heatmap.png"))
    return paths
