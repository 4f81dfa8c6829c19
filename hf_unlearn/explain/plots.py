"""Figures of an explanation: filter usage, filter maps, similarity vs confusion, saliency, RISE curves.

Bare matplotlib ``Figure`` objects on the Agg canvas (no pyplot state, safe in threads and
servers), written atomically: a reader never sees a half-written PNG.

Example:

```py
>>> from hf_unlearn.explain import filters, plots
>>> maps = filters.filter_maps(adapter)
>>> plots.plot_filter_usage(filters.filter_usage(maps), class_names, "out/filter_usage.png")
>>> plots.plot_filter_maps(maps, class_names, "out/filter_maps")      # out/filter_maps_01.png, ...
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.cluster.hierarchy import dendrogram

from ..evaluation.plots import new_figure, save_figure
from .common import as_batch, to_numpy
from .faithfulness import curve_auc
from .filters import as_maps, cluster_rows

__all__ = [
    "plot_filter_usage",
    "plot_filter_maps",
    "plot_similarity_confusion",
    "plot_saliency_overlays",
    "plot_auc_curves",
]


def _short_layer_names(layers: Sequence[str]) -> list[str]:
    parts = [l.split(".") for l in layers]
    if len(parts) < 2:
        return [".".join(p[-2:]) for p in parts]
    pre = 0
    while all(len(p) > pre + 1 for p in parts) and len({p[pre] for p in parts}) == 1:
        pre += 1
    suf = 0
    while all(len(p) > pre + suf + 1 for p in parts) and len({p[-1 - suf] for p in parts}) == 1:
        suf += 1
    return [".".join(p[pre:len(p) - suf]) for p in parts]


def _names(class_names, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"`class_names` has {len(names)} entries but there are {n} classes.")
    return names


def plot_filter_usage(usage: Mapping[str, Any], class_names, path, *, title: Optional[str] = None) -> Path:
    """Two heatmaps, classes (rows) x filtered layers (columns): mean ``1 - alpha`` and share ``alpha < 0.5``."""

    mean_off, share_off = to_numpy(usage["mean_off"]), to_numpy(usage["share_off"])
    layers = list(usage["layers"])
    n, L = mean_off.shape
    names = _names(class_names, n)
    short = _short_layer_names(layers)
    width = min(max(8.0, 0.32 * L * 2 + 5.0), 60.0)
    fig = new_figure(width, min(max(3.5, 0.3 * n + 2.5), 40.0))
    cmap = colormaps["magma"]
    for i, (M, label) in enumerate(((mean_off, "mean of 1 - alpha"),
                                     (share_off, f"share of units with alpha < {usage.get('threshold', 0.5)}"))):
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=max(float(np.nanmax(M)), 1e-6), aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(label)
        if L <= 120:
            ax.set_xticks(range(L), short, rotation=90, fontsize=max(4, min(8, 500 / max(L, 1))))
        ax.set_xlabel("filtered layer")
        if n <= 60:
            ax.set_yticks(range(n), names if i == 0 else [""] * n)
        if i == 0:
            ax.set_ylabel("class c (row)")
    fig.suptitle(title or "How much of each filtered layer each class's row switches off")
    return save_figure(fig, path)


def plot_filter_maps(maps: Mapping[str, Any], class_names, path_prefix, *, per_page: int = 12,
                     order: Optional[Sequence[int]] = None) -> list[Path]:
    """Per layer, a heatmap classes x units of ``1 - alpha`` (which components each row switches off).

    Layers are drawn ``per_page`` to a figure: ``{path_prefix}_01.png``, ``_02.png``, ...
    ``order`` reorders the classes (e.g. the dendrogram order).
    """
    maps = as_maps(maps)
    layers = list(maps)
    n = next(iter(maps.values())).shape[0]
    names = _names(class_names, n)
    order = list(order) if order is not None else list(range(n))
    short = _short_layer_names(layers)
    cmap = colormaps["magma"]
    paths = []
    pages = [layers[i:i + per_page] for i in range(0, len(layers), per_page)]
    prefix = Path(path_prefix)
    for p, page in enumerate(pages):
        cols = min(3, len(page))
        rows = int(math.ceil(len(page) / cols))
        fig = new_figure(5.0 * cols, min(max(2.4, 0.22 * n + 1.4), 12.0) * rows + 0.6)
        fig.subplots_adjust(hspace=0.6, wspace=0.35)
        for j, layer in enumerate(page):
            ax = fig.add_subplot(rows, cols, j + 1)
            M = maps[layer][order]
            im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            ax.set_title(f"{short[layers.index(layer)]} ({M.shape[1]} units)", fontsize=8)
            if n <= 40:
                ax.set_yticks(range(n), [names[i] for i in order], fontsize=max(4, min(8, 240 / n)))
            ax.set_xlabel("unit k", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        fig.suptitle(f"1 - alpha per class (rows) and unit: what each row switches off "
                     f"(page {p + 1}/{len(pages)})")
        paths.append(save_figure(fig, prefix.with_name(f"{prefix.name}_{p + 1:02d}.png")))
    return paths


def plot_similarity_confusion(similarity, confusion, class_names, path, *, clustering: Optional[Mapping] = None,
                              correlation: Optional[Mapping] = None, title: Optional[str] = None) -> Path:
    """Row similarity in dendrogram order (with the dendrogram), next to the base model's confusion.

    The confusion is row-normalised (%), in the same class order, with the diagonal hidden (it
    would dominate the colour scale).
    """
    S = to_numpy(similarity)
    C = to_numpy(confusion)
    n = S.shape[0]
    names = _names(class_names, n)
    clustering = clustering or cluster_rows(S)
    order = list(clustering["order"])
    rows = C.sum(1, keepdims=True)
    Cn = 100.0 * np.divide(C, rows, out=np.zeros_like(C), where=rows > 0)
    Cn = Cn[np.ix_(order, order)]
    np.fill_diagonal(Cn, np.nan)
    So = S[np.ix_(order, order)]
    side = min(max(4.0, 0.4 * n + 2.5), 30.0)
    fig = new_figure(2 * side + 2.0, side * 1.3)
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 4], hspace=0.12, wspace=0.35)
    ax_d = fig.add_subplot(gs[0, 0])
    Z = clustering.get("linkage")
    if Z is not None and len(Z):
        dendrogram(np.asarray(Z), ax=ax_d, no_labels=True, color_threshold=0, above_threshold_color="#555555")
        ax_d.set_xlim(0, 10 * n)
    ax_d.axis("off")
    ax_d.set_title("hierarchical clustering of rows (average linkage on 1 - similarity)", fontsize=9)
    labels = [names[i] for i in order]
    tick_kw = dict(rotation=90, fontsize=max(4, min(9, 300 / n)))
    ax_s = fig.add_subplot(gs[1, 0])
    im = ax_s.imshow(So, cmap=colormaps["viridis"], vmin=min(0.0, float(So.min())), vmax=1.0, aspect="auto")
    cax = ax_s.inset_axes([1.02, 0.0, 0.03, 1.0])
    fig.colorbar(im, cax=cax, label="cosine similarity of 1 - alpha")
    ax_s.set_title("filter-row similarity (dendrogram order)", fontsize=10)
    ax_c = fig.add_subplot(gs[1, 1])
    im2 = ax_c.imshow(np.ma.masked_invalid(Cn), cmap=colormaps["magma"], vmin=0.0,
                      vmax=max(float(np.nanmax(Cn)) if np.isfinite(Cn).any() else 0.0, 1e-6), aspect="auto")
    cax2 = ax_c.inset_axes([1.02, 0.0, 0.03, 1.0])
    fig.colorbar(im2, cax=cax2, label="% of true class (row) predicted as column")
    ax_c.set_title("base model confusion, same order (diagonal hidden)", fontsize=10)
    if n <= 80:
        for ax in (ax_s, ax_c):
            ax.set_xticks(range(n), labels, **tick_kw)
            ax.set_yticks(range(n), labels, fontsize=tick_kw["fontsize"])
    ax_c.set_xlabel("predicted")
    ax_c.set_ylabel("true")
    corr = correlation or {}
    text = "similarity vs symmetrised confusion (off-diagonal pairs): "
    text += ", ".join(f"{k} {corr[k]:.3f}" if corr.get(k) is not None else f"{k} n/a" for k in ("spearman", "pearson"))
    fig.suptitle((title or "Which classes share filters, and which the base model confuses") + "\n" + text, fontsize=11)
    return save_figure(fig, path)


_METHOD_TITLES = {"filter": "filter saliency", "filter_abs": "filter |A| saliency", "gradcam": "Grad-CAM",
                  "random": "random"}


def _display_image(x, mean=None, std=None) -> np.ndarray:
    x = to_numpy(x)
    if mean is not None and std is not None and len(mean) == x.shape[0] and len(std) == x.shape[0]:
        x = x * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
        x = np.clip(x, 0.0, 1.0)
    else:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if x.shape[0] == 1:
        return x[0]
    return np.transpose(x[:3], (1, 2, 0))


def plot_saliency_overlays(images, maps: Mapping[str, Any], path, *, row_labels: Optional[Sequence[str]] = None,
                           cell_notes: Optional[Mapping[str, Sequence[str]]] = None, image_mean=None,
                           image_std=None, title: Optional[str] = None) -> Path:
    """One row per image: the original, then each map (e.g. filter saliency | Grad-CAM | random) over it.

    ``images``: ``(B, C, H, W)`` model inputs (un-normalised for display with ``image_mean``/``image_std``
    when given); ``maps``: ``{method: (B, H, W)}`` in [0, 1]; ``cell_notes``: ``{method: [text per image]}``.
    """
    x, _ = as_batch(images)
    b = x.shape[0]
    methods = list(maps)
    cols = 1 + len(methods)
    fig = new_figure(2.3 * cols, 2.4 * b + 0.8)
    for i in range(b):
        img = _display_image(x[i], image_mean, image_std)
        grey = img if img.ndim == 2 else img.mean(-1)
        ax = fig.add_subplot(b, cols, i * cols + 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if row_labels is not None:
            ax.set_ylabel(row_labels[i], fontsize=7)
        if i == 0:
            ax.set_title("original", fontsize=9)
        for j, m in enumerate(methods):
            ax = fig.add_subplot(b, cols, i * cols + 2 + j)
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
            ax.imshow(to_numpy(maps[m][i]), cmap=colormaps["jet"], alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_METHOD_TITLES.get(m, m), fontsize=9)
            if cell_notes and m in cell_notes:
                ax.set_xlabel(cell_notes[m][i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_auc_curves(fractions, curves: Mapping[str, Mapping[str, Any]], path, *, title: Optional[str] = None) -> Path:
    """Mean deletion and insertion curves per method: ``curves = {method: {"deletion": (B, S+1), "insertion": ...}}``."""
    fr = to_numpy(fractions)
    fig = new_figure(10.0, 4.0)
    colors = {"filter": "#d62728", "filter_abs": "#ff7f0e", "gradcam": "#1f77b4", "random": "#7f7f7f"}
    for k, mode in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, k + 1)
        for method, d in curves.items():
            c = to_numpy(d[mode])
            if c.size == 0:
                continue
            auc = float(curve_auc(torch.as_tensor(fr), torch.as_tensor(c)).mean())
            ax.plot(fr, c.mean(0), marker=".", color=colors.get(method), label=f"{method} (AUC {auc:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("probability of the class")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC = more faithful)", fontsize=10)
    fig.suptitle(title or "Mean RISE curves")
    return save_figure(fig, path)
