"""The whole analysis of an adapter's filters, as a function and as the ``hf-unlearn explain`` job.

:func:`explain_adapter` takes an adapter and a loader and returns (and optionally writes) the
report: filter maps, row similarity vs the base model's confusion, saliency overlays and
deletion/insertion AUCs. :func:`run_explain` is the job behind ``hf-unlearn explain`` and
``recipes/explain.py``: it loads the adapter and the data named by the argument dataclasses of
:mod:`hf_unlearn.commands.explain` and calls :func:`explain_adapter`.

Example:

```py
>>> from hf_unlearn.commands.explain import ExplainArguments
>>> from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments
>>> from hf_unlearn.explain.job import run_explain
>>> report = run_explain(ExplainArguments(adapter="runs/wf-resnet", output_dir="runs/explain-wf-resnet"),
...                      DataArguments(dataset="fashion_mnist"), RuntimeArguments(no_progress=True))
```
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapter import UnlearnAdapter
from ..data.loaders import build_dataloader, subsample
from ..data.loading import check_labels_match, load_image_dataset
from .common import as_adapter, base_model_context, logits_of, model_device, unpack_batch
from .faithfulness import curve_auc, perturbation_curves
from .filters import (
    OFF_THRESHOLD,
    cluster_rows,
    filter_maps,
    filter_usage,
    row_similarity,
    similarity_confusion_correlation,
    top_components,
)
from .plots import plot_auc_curves, plot_filter_maps, plot_filter_usage, plot_saliency_overlays, \
    plot_similarity_confusion
from .report import DEFINITIONS, summary_line, write_explain_report
from .saliency import DEFAULT_METHODS, METHODS, default_saliency_layer, layer_kind, resolve_layer, saliency_maps

if TYPE_CHECKING:  # the command module imports this one; its dataclasses are only annotations here
    from ..commands.arguments import DataArguments, RuntimeArguments
    from ..commands.explain import ExplainArguments

__all__ = ["explain_adapter", "run_explain", "class_refs"]

MODES = ("deletion", "insertion")


def _keep_smallest(kept, keys, x, y, k):
    """Merge a batch into a kept set, keeping the k smallest random keys (seeded reservoir sample)."""
    if k <= 0 or keys.numel() == 0:
        return kept
    if kept is not None:
        keys = torch.cat([kept[0], keys])
        x = torch.cat([kept[1], x])
        y = torch.cat([kept[2], y])
    if keys.numel() > k:
        idx = torch.argsort(keys)[:k]
        keys, x, y = keys[idx], x[idx], y[idx]
    return keys, x, y


def _sort_by_key(kept):
    if kept is None:
        return None, None
    idx = torch.argsort(kept[0])
    return kept[1][idx], kept[2][idx]


def _stats(values) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "sem": std / math.sqrt(v.size), "n": int(v.size)}


def _sample_images(adapter, loader, wanted, *, images_per_class, auc_images, seed, progress):
    """One pass over ``loader``: the base model's confusion counts and a seeded choice of images.

    Returns ``(C, per_class, auc_kept)``: ``images_per_class`` kept images per wanted class and
    ``auc_images`` kept among all wanted classes, each as ``(keys, x, y)`` or None.
    """
    n = adapter.num_classes
    gen = torch.Generator().manual_seed(seed)
    device = model_device(adapter)
    C = np.zeros((n, n), dtype=np.int64)
    wanted_t = torch.tensor(wanted)
    per_class: dict[int, Any] = {c: None for c in wanted}
    auc_kept = None
    with torch.no_grad(), base_model_context(adapter):
        for batch in tqdm(loader, desc="confusion + sampling", disable=not progress, leave=False, dynamic_ncols=True):
            x, y = unpack_batch(batch)
            y = torch.as_tensor(y).long().cpu()
            logits = logits_of(adapter, x.to(device) if device is not None else x)
            np.add.at(C, (y.numpy(), logits.argmax(1).cpu().numpy()), 1)
            keys = torch.rand(y.shape[0], generator=gen)
            xs = x.detach().cpu()
            sel = torch.isin(y, wanted_t)
            if sel.any():
                auc_kept = _keep_smallest(auc_kept, keys[sel], xs[sel], y[sel], auc_images)
                for c in wanted:
                    m = y == c
                    if m.any():
                        per_class[c] = _keep_smallest(per_class[c], keys[m], xs[m], y[m], images_per_class)
    if C.sum() == 0:
        raise ValueError("The loader yielded no samples.")
    return C, per_class, auc_kept


@dataclass
class _Scoring:
    """How images are scored: the saliency layer and methods, the RISE settings, the random maps' stream."""

    adapter: UnlearnAdapter
    layer: str
    methods: tuple
    steps: int
    baseline: Any
    batch_size: int
    seed: int
    progress: bool
    generator: torch.Generator  # shared by all calls, in order: the random maps depend on it

    def score(self, x, y, desc: str):
        """Saliency maps of ``x`` for classes ``y`` and their deletion/insertion curves and AUCs.

        Returns ``(aucs, curves, maps, fractions, empty_share)``: ``{method: {mode: (B,)}}``,
        ``{method: {mode: (B, steps+1)}}``, ``{method: (B, H, W)}``, ``(steps+1,)`` and
        ``{method: share of constant maps}``.
        """
        methods = self.methods
        out = {m: {"deletion": [], "insertion": []} for m in methods}
        curves = {m: {"deletion": [], "insertion": []} for m in methods}
        sal_all = {m: [] for m in methods}
        empty = {m: [] for m in methods}
        chunk = max(1, self.batch_size // 2)
        starts = range(0, x.shape[0], chunk)
        for s0 in tqdm(starts, desc=desc, disable=not self.progress, leave=False, dynamic_ncols=True):
            xb, yb = x[s0:s0 + chunk], y[s0:s0 + chunk]
            sal = saliency_maps(self.adapter, xb, yb, layer=self.layer, methods=methods, batch_size=chunk,
                                generator=self.generator)
            for m in methods:
                sal_all[m].append(sal[m])
                empty[m].append(sal[m].flatten(1).amax(1) <= 0)
                for mode in MODES:
                    fr, cv = perturbation_curves(self.adapter, xb, sal[m], yb, mode=mode, steps=self.steps,
                                                 baseline=self.baseline, batch_size=self.batch_size,
                                                 seed=self.seed + s0)
                    curves[m][mode].append(cv)
                    out[m][mode].append(curve_auc(fr, cv))
        pixels = x.shape[-2] * x.shape[-1]
        fr = torch.tensor([round(i * pixels / self.steps) for i in range(self.steps + 1)]).double() / pixels

        def cat(parts):
            return torch.cat(parts).numpy() if parts else np.zeros((0,))

        return ({m: {k: cat(v) for k, v in d.items()} for m, d in out.items()},
                {m: {k: cat(v) for k, v in d.items()} for m, d in curves.items()},
                {m: torch.cat(v) if v else None for m, v in sal_all.items()}, fr.numpy(),
                {m: float(torch.cat(v).float().mean()) if v else None for m, v in empty.items()})


def _faithfulness(scoring: _Scoring, auc_kept, auc_images: int, wanted, n: int):
    """``(faithfulness section, mean curves or None, fractions or None)`` over the AUC images."""
    auc_x, auc_y = _sort_by_key(auc_kept)
    if auc_x is None or auc_images <= 0:
        return {"n_images": 0}, None, None
    methods = scoring.methods
    aucs, auc_curves, _, fractions, empty_share = scoring.score(auc_x, auc_y, "deletion/insertion AUC")
    labels = auc_y.numpy()
    section = {
        "n_images": int(len(labels)),
        "summary": {m: {mode: _stats(aucs[m][mode]) for mode in MODES} for m in methods},
        "per_class": {m: {mode: [(_stats(aucs[m][mode][labels == c])["mean"] if c in wanted else None)
                                 for c in range(n)] for mode in MODES} for m in methods},
        "empty_maps": empty_share,
        "wins": {
            f"{a} vs {b}": {
                "deletion": float(np.mean(aucs[a]["deletion"] < aucs[b]["deletion"])),
                "insertion": float(np.mean(aucs[a]["insertion"] > aucs[b]["insertion"])),
            }
            for a in methods for b in ("gradcam", "random") if b in methods and a != b and a != "random"
        },
        "mean_curves": {m: {mode: auc_curves[m][mode].mean(0) for mode in MODES} for m in methods},
        "fractions": fractions,
        "labels": labels,
        "per_image": {m: {mode: aucs[m][mode] for mode in MODES} for m in methods},
    }
    return section, auc_curves, fractions


def _overlays(scoring: _Scoring, per_class, wanted, names):
    """Per explained class: its kept images, their maps and AUCs, and the base model's probabilities."""
    adapter = scoring.adapter
    device = model_device(adapter)
    overlays, overlay_data = {}, {}
    for c in wanted:
        xc, yc = _sort_by_key(per_class[c])
        if xc is None:
            continue
        aucs_c, _, sal_c, _, _ = scoring.score(xc, yc, f"saliency {names[c]}")
        with torch.no_grad(), base_model_context(adapter):
            probs = logits_of(adapter, xc.to(device) if device is not None else xc).softmax(-1).cpu()
        overlay_data[c] = (xc, sal_c, aucs_c, probs)
        overlays[names[c]] = {m: {mode: aucs_c[m][mode] for mode in MODES} for m in scoring.methods}
    return overlays, overlay_data


def _row_summary(names, usage, sim, C) -> list[dict[str, Any]]:
    """Per class: how much its row switches off, where, its nearest row and the base model's confusion."""
    n = len(names)
    rows = []
    sim_off = sim.copy()
    np.fill_diagonal(sim_off, -np.inf)
    Coff = C.astype(np.float64).copy()
    np.fill_diagonal(Coff, -1)
    for c in range(n):
        j = int(np.argmax(usage["mean_off"][c]))
        rows.append({
            "class": names[c],
            "mean_off": float(usage["mean_off_overall"][c]),
            "share_off": float(usage["share_off_overall"][c]),
            "most_used_layer": usage["layers"][j],
            "most_used_layer_mean_off": float(usage["mean_off"][c, j]),
            "nearest_row": names[int(np.argmax(sim_off[c]))] if n > 1 else None,
            "nearest_row_similarity": float(np.max(sim_off[c])) if n > 1 else None,
            "most_confused_with": names[int(np.argmax(Coff[c]))] if n > 1 and Coff[c].max() > 0 else None,
            "base_accuracy": float(C[c, c] / C[c].sum() * 100.0) if C[c].sum() else None,
        })
    return rows


def _write_figures(out: Path, a: Mapping[str, Any], image_mean, image_std) -> list[str]:
    """The PNGs of an analysis ``a`` (the locals :func:`explain_adapter` gathers) under ``out``."""
    names, methods, layer_name = a["names"], a["methods"], a["layer_name"]
    figures = [str(plot_filter_usage(a["usage"], names, out / "filter_usage.png"))]
    figures += [str(p) for p in plot_filter_maps(a["maps"], names, out / "filter_maps", order=a["clustering"]["order"])]
    figures.append(str(plot_similarity_confusion(a["sim"], a["C"], names, out / "similarity_confusion.png",
                                                 clustering=a["clustering"], correlation=a["correlation"])))
    if a["auc_curves"] is not None:
        figures.append(str(plot_auc_curves(a["fractions"], a["auc_curves"], out / "auc_curves.png",
                                           title=f"Mean RISE curves over {a['faithfulness']['n_images']} images "
                                                 f"(layer {layer_name})")))
    for c, (xc, sal_c, aucs_c, probs) in a["overlay_data"].items():
        pred = probs.argmax(-1)
        row_labels = [f"{names[c]}: p={probs[i, c]:.2f}\npred {names[int(pred[i])]}" for i in range(len(xc))]
        notes = {m: [f"del {aucs_c[m]['deletion'][i]:.2f} / ins {aucs_c[m]['insertion'][i]:.2f}"
                     + (" (empty map)" if float(sal_c[m][i].max()) <= 0 else "")
                     for i in range(len(xc))] for m in methods}
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in names[c])
        figures.append(str(plot_saliency_overlays(
            xc, {m: sal_c[m] for m in methods}, out / f"saliency_{c:03d}_{safe}.png",
            row_labels=row_labels, cell_notes=notes, image_mean=image_mean, image_std=image_std,
            title=f"class {c} '{names[c]}' (row {c}), layer {layer_name}")))
    return figures


def _report(a: Mapping[str, Any], settings: dict[str, Any], extra: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The report dict of an analysis ``a`` (key order = the JSON's order)."""
    names, usage, clustering, C = a["names"], a["usage"], a["clustering"], a["C"]
    report: dict[str, Any] = dict(extra or {})
    report.update({
        "title": "What the weight filters say about each class",
        "num_classes": len(names),
        "class_names": names,
        "classes_explained": [names[c] for c in a["wanted"]],
        "saliency_layer": a["layer_name"],
        "saliency_methods": list(a["methods"]),
        "settings": settings,
        "filters": {
            "layers": usage["layers"],
            "units": usage["units"],
            "mean_off": usage["mean_off"],
            "share_off": usage["share_off"],
            "top_components": {l: [[{"unit": k, "off": v} for k, v in row] for row in rows]
                               for l, rows in a["tops"].items()},
        },
        "rows": _row_summary(names, usage, a["sim"], C),
        "similarity": {"matrix": a["sim"], "order": [names[i] for i in clustering["order"]],
                       "order_ids": clustering["order"], "linkage": clustering["linkage"],
                       "method": clustering["method"]},
        "confusion": {"counts": C, "n_samples": int(C.sum()),
                      "base_accuracy": float(np.trace(C) / C.sum() * 100.0)},
        "similarity_vs_confusion": a["correlation"],
        "faithfulness": a["faithfulness"],
        "overlay_aucs": a["overlays"],
        "definitions": DEFINITIONS,
    })
    return report


def _choose_methods(adapter, layer_name: str, example, methods: Optional[Sequence[str]]) -> tuple:
    if methods is None:  # filter_abs differs from filter only on CNN layers
        methods = METHODS if layer_kind(adapter, layer_name, example) == "spatial" else DEFAULT_METHODS
    methods = tuple(methods)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"Unknown saliency method(s) in {list(methods)}; choose from {list(METHODS)}.")
    return methods


def explain_adapter(
    adapter,
    loader,
    *,
    output_dir: Union[str, os.PathLike, None] = None,
    classes: Optional[Sequence[Any]] = None,
    layer: Optional[str] = None,
    images_per_class: int = 2,
    auc_images: int = 200,
    steps: int = 16,
    baseline: Any = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    image_mean=None,
    image_std=None,
    methods: Optional[Sequence[str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Filter maps, row similarity vs confusion, saliency overlays and deletion/insertion AUCs.

    Args:
        adapter: an :class:`~hf_unlearn.UnlearnAdapter`.
        loader: yields ``{"pixel_values", "labels"}`` (``build_dataloader``); one pass gives the base
            model's confusion matrix and a seeded random choice of images (``images_per_class`` per
            class for the overlays, ``auc_images`` for the AUCs, from ``classes``).
        classes: classes (ids or names) to explain (default: all).
        layer: saliency layer (default :func:`~hf_unlearn.explain.saliency.default_saliency_layer`).
        output_dir: where ``explain.json``, ``explain.md`` and the PNGs go (None: nothing written).
        methods: saliency methods to compare (default: ``filter``, ``gradcam``, ``random``, plus
            ``filter_abs`` when the layer is a CNN layer, where the two filter forms differ).

    Returns the report dict (also written as JSON).

    Example:

    ```py
    >>> report = explain_adapter(adapter, loader, classes=["Coat"], auc_images=50, output_dir="runs/explain")
    >>> report["faithfulness"]["summary"]["filter"]["deletion"]["mean"]
    ```
    """
    adapter = as_adapter(adapter, "explain_adapter")
    adapter.eval()
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    n = adapter.num_classes
    names = [adapter.id2label.get(i, str(i)) for i in range(n)]
    wanted = sorted({adapter.class_id(c) for c in classes}) if classes else list(range(n))
    layer_name = resolve_layer(adapter, layer) if layer is not None else None
    t0 = time.perf_counter()

    maps = filter_maps(adapter)
    usage = filter_usage(maps)
    sim = row_similarity(maps)
    clustering = cluster_rows(sim)
    tops = top_components(maps, k=5)
    C, per_class, auc_kept = _sample_images(adapter, loader, wanted, images_per_class=images_per_class,
                                            auc_images=auc_images, seed=seed, progress=progress)
    correlation = similarity_confusion_correlation(sim, C)
    example = next((v[1][:1] for v in per_class.values() if v is not None), None)
    if layer_name is None:
        layer_name = default_saliency_layer(adapter, example)
    generator = torch.Generator().manual_seed(seed + 1)
    methods = _choose_methods(adapter, layer_name, example, methods)
    scoring = _Scoring(adapter, layer_name, methods, steps, baseline, batch_size, seed, progress, generator)
    faithfulness, auc_curves, fractions = _faithfulness(scoring, auc_kept, auc_images, wanted, n)
    overlays, overlay_data = _overlays(scoring, per_class, wanted, names)

    analysis = {"names": names, "wanted": wanted, "layer_name": layer_name, "methods": methods, "maps": maps,
                "usage": usage, "sim": sim, "clustering": clustering, "tops": tops, "C": C,
                "correlation": correlation, "faithfulness": faithfulness, "auc_curves": auc_curves,
                "fractions": fractions, "overlays": overlays, "overlay_data": overlay_data}
    settings = {"images_per_class": images_per_class, "auc_images": auc_images, "steps": steps,
                "baseline": baseline if isinstance(baseline, (int, float, str)) else "tensor",
                "batch_size": batch_size, "seed": seed, "off_threshold": OFF_THRESHOLD}
    report = _report(analysis, settings, extra)
    if output_dir is not None:
        out = Path(output_dir)
        figures = _write_figures(out, analysis, image_mean, image_std) if plots else []
        report["figures"] = [os.path.relpath(f, out) for f in figures]
        report["seconds"] = time.perf_counter() - t0
        write_explain_report(report, out)
    else:
        report["seconds"] = time.perf_counter() - t0
    return report


def class_refs(values: Optional[Sequence[str]]) -> Optional[list[Union[int, str]]]:
    """Command-line class references: digit strings become ids, anything else stays a name."""
    if values is None:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def run_explain(args: "ExplainArguments", data: "DataArguments", runtime: "RuntimeArguments") -> dict[str, Any]:
    """``hf-unlearn explain``: load the adapter and the data, run :func:`explain_adapter`, write the report.

    Bad classes or layers fail before any data is read. Prints a one-line summary and returns the
    report (also in ``{args.output_dir}/explain.json``).
    """
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model)
    classes = class_refs(args.classes)
    for c in classes or ():
        adapter.class_id(c)
    if args.layer is not None:
        resolve_layer(adapter, args.layer)
    processor = adapter.image_processor
    if processor is None:
        raise ValueError(f"The adapter at {args.adapter} has no image processor (nor does its base model): "
                         "save one next to the adapter or the base model.")
    device = torch.device("cuda" if torch.cuda.is_available() and not runtime.cpu else "cpu")
    adapter.to(device).eval()
    dataset = load_image_dataset(data.dataset, split=args.split, image_column=data.image_column,
                                 label_column=data.label_column, revision=data.dataset_revision)
    check_labels_match(dataset, adapter.base_model.config)
    dataset = subsample(dataset, args.max_samples, seed=args.seed)
    loader = build_dataloader(dataset, processor, num_channels=getattr(adapter.base_model.config, "num_channels", 3),
                              batch_size=args.batch_size, shuffle=False, seed=args.seed,
                              progress=not runtime.no_progress)
    extra = {"adapter": str(args.adapter), "base_model": adapter.config.base_model_name_or_path,
             "dataset": data.dataset, "split": args.split,
             "arguments": {**dataclasses.asdict(args), **dataclasses.asdict(data), **dataclasses.asdict(runtime)}}
    report = explain_adapter(
        adapter, loader, output_dir=args.output_dir, classes=classes, layer=args.layer,
        images_per_class=args.images_per_class, auc_images=args.auc_images, steps=args.steps,
        baseline=args.baseline, batch_size=args.batch_size, seed=args.seed, progress=not runtime.no_progress,
        plots=not args.no_plots, image_mean=getattr(processor, "image_mean", None),
        image_std=getattr(processor, "image_std", None), methods=args.methods, extra=extra,
    )
    print(summary_line(report) + f"\nwrote {Path(args.output_dir) / 'explain.json'}, explain.md"
          + (f", {len(report.get('figures', []))} plots" if not args.no_plots else ""))
    return report
