"""PNG figures for unlearning results (matplotlib, no display needed).

Figures are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas), never through pyplot, so
the caller's backend and open figures are left alone. Each function writes the PNG to a
temporary file next to ``path`` and renames it into place: no half-written file is ever left.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write

__all__ = [
    "new_figure", "plot_accuracy_matrix", "plot_filter_sparsity", "plot_forget_retain", "plot_probe_tradeoff",
    "save_figure",
]

_SERIES_COLORS = {"unlearned": "#d62728", "base": "#7f7f7f", "retrain": "#1f77b4"}
_CELL_TEXT_LIMIT = 30  # numbers in cells up to this many columns; beyond that they are unreadable


def new_figure(width: float, height: float):
    """A bare matplotlib ``Figure`` on an Agg canvas (no pyplot: the caller's backend is left alone).

    Example:
        >>> fig = new_figure(6.0, 4.0); ax = fig.subplots()
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: optional, only for plots
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (``hf_unlearn.files``); returns the path.

    Example:
        >>> save_figure(fig, "runs/eval/plot.png")
    """
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))


def _names(class_names: Sequence[str] | None, n: int, what: str = "class_names") -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"`{what}` has {len(names)} entries but the data has {n}.")
    return names


def _matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D array, got shape {arr.shape}.")
    return arr


def _cell_text(ax, M: np.ndarray, fmt: str, vmin: float, vmax: float, cmap) -> None:
    if M.shape[1] > _CELL_TEXT_LIMIT or M.shape[0] > 4 * _CELL_TEXT_LIMIT:
        return
    size = max(5, min(10, 200 / max(M.shape)))
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            v = M[i, j]
            if not np.isfinite(v):
                continue
            r, g, b, _ = cmap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=size, color=color)


def plot_accuracy_matrix(
    A: Any, class_names: Sequence[str] | None, path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Heatmap of the accuracy matrix ``A[c][y]`` (%): rows = forgotten class c, columns = test
    class y, with the value in each cell (up to 30 classes). A good model shows a dark diagonal
    (FA ~0) on a bright background (RA ~ base).

    Example::

        plot_accuracy_matrix(A, ["T-shirt", "Trouser", ...], "out/accuracy_matrix.png")
    """
    from matplotlib import colormaps  # matplotlib: optional, only for plots

    A = _matrix(A, "A")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"`A` must be square (N, N), got {A.shape}.")
    names = _names(class_names, A.shape[0])
    n = A.shape[0]
    side = min(max(4.0, 0.55 * n + 2.0), 40.0)
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["viridis"]
    im = ax.imshow(np.ma.masked_invalid(A), cmap=cmap, vmin=0.0, vmax=100.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    if n <= 60:
        ax.set_xticks(range(n), names, rotation=45 if n > 5 else 0, ha="right" if n > 5 else "center")
        ax.set_yticks(range(n), names)
    ax.set_xlabel("test class y")
    ax.set_ylabel("forgotten class c (row)")
    ax.set_title(title or "Accuracy A[c][y] (%): diagonal = forget accuracy")
    _cell_text(ax, A, ".0f" if n > 12 else ".1f", 0.0, 100.0, cmap)
    return save_figure(fig, path)


_FA_KEYS = ("forget_acc", "forget_acc_per_class")
_RA_KEYS = ("retain_acc", "retain_acc_per_class")


def _series_values(series: Any, keys: tuple[str, ...], label: str, n: int) -> np.ndarray | None:
    for key in keys:
        if key in series and series[key] is not None:
            arr = np.asarray(series[key], dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"Series {label!r}: `{key}` must have {n} values (one per class), got {arr.shape}.")
            return arr
    return None


def plot_forget_retain(
    per_class: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Grouped bars per class: forget accuracy (top) and retain accuracy (bottom) for each series.

    Args:
        per_class: ``{series_name: {"forget_acc": (N,), "retain_acc": (N,)}}``, e.g. series
            ``"unlearned"``, ``"base"`` and optionally ``"retrain"`` (any names, drawn in the
            given order). The output of :func:`summarize_matrix` works as a series as is
            (``forget_acc_per_class``/``retain_acc_per_class``). A series may lack one of the
            two; for the base model use ``{"forget_acc": base_per_class_acc,
            "retain_acc": base_retain_acc_per_class}``.
        class_names: N names (or None for indices).
        path: PNG path.

    Example::

        plot_forget_retain({"unlearned": summary,
                            "base": {"forget_acc": summary["base_forget_acc_per_class"],
                                     "retain_acc": summary["base_retain_acc_per_class"]}},
                           class_names, "out/forget_retain.png")
    """
    if not isinstance(per_class, Mapping) or not per_class:
        raise ValueError("`per_class` must be a non-empty dict {series_name: {'forget_acc': ..., 'retain_acc': ...}}.")
    first = next(iter(per_class.values()))
    n = None
    for key in _FA_KEYS + _RA_KEYS:
        if isinstance(first, Mapping) and first.get(key) is not None:
            n = len(first[key])
            break
    if n is None or n == 0:
        raise ValueError("Each series needs 'forget_acc' and/or 'retain_acc' with one value per class.")
    names = _names(class_names, n)
    values = {}
    for label, series in per_class.items():
        if not isinstance(series, Mapping):
            raise ValueError(f"Series {label!r} must be a dict with 'forget_acc'/'retain_acc'.")
        fa = _series_values(series, _FA_KEYS, label, n)
        ra = _series_values(series, _RA_KEYS, label, n)
        if fa is None and ra is None:
            raise ValueError(f"Series {label!r} has neither 'forget_acc' nor 'retain_acc'.")
        values[label] = (fa, ra)

    width_in = min(max(6.0, 0.5 * n * max(1, len(values)) * 0.6 + 2.0), 40.0)
    fig = new_figure(width_in, 7.0)
    x = np.arange(n)
    bar_w = 0.8 / len(values)
    for k, (panel, what) in enumerate((("forget accuracy (%)", 0), ("retain accuracy (%)", 1))):
        ax = fig.add_subplot(2, 1, k + 1)
        for i, (label, pair) in enumerate(values.items()):
            v = pair[what]
            if v is None:
                continue
            xpos = x - 0.4 + bar_w * (i + 0.5)
            bars = ax.bar(xpos, np.nan_to_num(v, nan=0.0), bar_w, label=label, color=_SERIES_COLORS.get(label))
            # a dash at each bar's value, so that 0 (the goal for FA) is visibly not "missing"
            ax.plot(xpos, v, linestyle="none", marker="_", markersize=max(4.0, 40.0 * bar_w),
                    markeredgewidth=2.0, color=bars.patches[0].get_facecolor())
        ax.set_ylabel(panel)
        ax.set_ylim(0, 105)
        ax.set_xlim(-0.6, n - 0.4)
        if n <= 60:
            ax.set_xticks(x, names if k == 1 else [""] * n, rotation=45 if n > 5 else 0,
                          ha="right" if n > 5 else "center")
        ax.grid(axis="y", alpha=0.3)
        if k == 0:
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, ncol=len(values), frameon=False)
            fig.suptitle(title or "Per-class forget and retain accuracy (row c forgets class c)")
    fig.axes[-1].set_xlabel("forgotten class c")
    return save_figure(fig, path)


def plot_filter_sparsity(
    share_off: Mapping[str, Any],
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Heatmap of the share of each row's filters switched off, per filtered layer.

    Args:
        share_off: ``{layer_name: (N,) array}``: for each layer, the fraction (0-1) of its
            filter components that row c switches off (how "off" is decided, e.g. alpha < 0.5,
            is the caller's choice; put it in the title). Layers are drawn top to bottom in the
            dict's order, classes left to right.
        class_names: N names (or None for indices).
        path: PNG path.

    Example::

        share = {name: (alpha < 0.5).float().mean(1).numpy() for name, alpha in filters.items()}
        plot_filter_sparsity(share, class_names, "out/filter_sparsity.png")
    """
    from matplotlib import colormaps  # matplotlib: optional, only for plots

    if not isinstance(share_off, Mapping) or not share_off:
        raise ValueError("`share_off` must be a non-empty dict {layer_name: array(num_classes)}.")
    layers = list(share_off)
    rows = []
    for name in layers:
        v = share_off[name]
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"share_off[{name!r}] must be 1-D (one value per class), got shape {v.shape}.")
        rows.append(v)
    n = len(rows[0])
    if n == 0 or any(len(r) != n for r in rows):
        raise ValueError("Every layer in `share_off` must give one value per class (same length).")
    M = np.stack(rows)
    finite = M[np.isfinite(M)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("`share_off` values are shares in [0, 1].")
    names = _names(class_names, n)
    M = 100.0 * M  # shown in percent, cells and colour bar alike
    vmax = max(100.0 * float(finite.max()) if finite.size else 0.0, 1e-4)
    fig = new_figure(min(max(5.0, 0.5 * n + 4.0), 40.0), min(max(3.0, 0.28 * len(layers) + 2.0), 60.0))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["magma"]
    im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax, label="filters switched off (%)")
    if n <= 60:
        ax.set_xticks(range(n), names, rotation=45 if n > 5 else 0, ha="right" if n > 5 else "center")
    ax.set_yticks(range(len(layers)), layers, fontsize=max(5, min(9, 400 / max(1, len(layers)))))
    ax.set_xlabel("forgotten class c (row)")
    ax.set_title(title or "Filters switched off (%), per layer and row")
    if len(layers) <= 40:
        _cell_text(ax, M, ".0f" if vmax >= 10 else ".1f", 0.0, vmax, cmap)
    return save_figure(fig, path)



def tradeoff_layout(points: Mapping[str, tuple[float, float]], max_drop: float | None):
    """Where :func:`plot_probe_tradeoff` draws each point: ``({label: (x, y_shown, off_scale)}, y_top)``.

    Points with a drop above ``max_drop`` go on the top edge (``y_top``: 0.5 pt above the highest
    other point); ``y_top`` is None when every point fits.

    Example:
        >>> tradeoff_layout({"wf": (66.0, 0.1), "ssd": (70.0, 31.8)}, 5.0)
        ({'wf': (66.0, 0.1, False), 'ssd': (70.0, 0.6, True)}, 0.6)
    """
    for label, xy in points.items():
        if not all(np.isfinite(float(v)) for v in xy):
            raise ValueError(f"point {label!r} has a non-finite coordinate {xy!r}.")
    ys = [float(y) for _, y in points.values()]
    if max_drop is None or max(ys) <= max_drop:
        return {label: (float(x), float(y), False) for label, (x, y) in points.items()}, None
    top = max([y for y in ys if y <= max_drop] + [0.0]) + 0.5
    return {label: (float(x), top if float(y) > max_drop else float(y), float(y) > max_drop)
            for label, (x, y) in points.items()}, top


def plot_probe_tradeoff(
    points: Mapping[str, tuple[float, float]],
    path: str | os.PathLike,
    *,
    kinds: Mapping[str, str] | None = None,
    shots: int = 5,
    title: str | None = None,
    max_drop: float | None = 5.0,
) -> Path:
    """Scatter of removal against cost in retained accuracy: few-shot probe (x) vs retain drop (y).

    ``points`` maps a label (a setting, a peer method, ``"base"``, ``"retrain"``) to
    ``(few_shot_probe_pct, retain_drop_pt)``; ``kinds`` maps labels to ``"base"``, ``"retrain"``,
    ``"wf"`` or ``"peer"`` for the marker (default: by label name). Lower-left is better: the retrain
    sits at the left end of x, the base at the right; a point near the retrain's x with a small y
    removed the class from the features at little retained cost. A point whose drop exceeds
    ``max_drop`` (a collapsed method) is drawn on the top edge with its value in the label, so that
    it does not squeeze every other point onto one line; ``None`` draws every point where it is.

    Example:
        >>> plot_probe_tradeoff({"base": (85.9, 0.0), "retrain": (46.2, -0.7), "wf": (70.7, -0.3)},
        ...                     "tradeoff.png")  # doctest: +SKIP
    """
    if not points:
        raise ValueError("`points` is empty: nothing to plot.")
    style = {"base": ("s", "#7f7f7f"), "retrain": ("*", "#1f77b4"), "wf": ("o", "#d62728"), "peer": ("^", "#2ca02c")}
    shown, top = tradeoff_layout(points, max_drop)
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    # Alternate the labels above and below their points, in x order: neighbours rarely overlap.
    for i, (label, (x, shown_y, off_scale)) in enumerate(sorted(shown.items(), key=lambda item: item[1][0])):
        y = float(points[label][1])
        kind = (kinds or {}).get(label) or (label if label in ("base", "retrain") else
                                             "wf" if label.startswith("wf") else "peer")
        marker, color = style.get(kind, style["peer"])
        ax.scatter([x], [shown_y], marker="^" if off_scale else marker, s=140 if kind in ("base", "retrain") else 60,
                   color=color, edgecolors="black", linewidths=0.5, alpha=0.8, clip_on=False)
        text = f"{label} ({y:.1f} pt, off scale)" if off_scale else label
        ax.annotate(text, (x, shown_y), textcoords="offset points", xytext=(5, 5 if i % 2 == 0 else -11), fontsize=8)
    if top is not None:
        ax.set_ylim(top=top)
    ax.axhline(0.0, color="black", linewidth=0.5, alpha=0.5)
    ax.set_xlabel(f"{shots}-shot probe on the forgotten class, % (retrain = gone, base = kept)")
    ax.set_ylabel("retain drop, points (lower = better)")
    ax.set_title(title or "Removal from the features vs retained accuracy", fontsize=10)
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)
