"""The explain report: ``explain.json`` (everything) and ``explain.md`` (tables and definitions).

Example:

```py
>>> from hf_unlearn.explain.report import write_explain_report
>>> write_explain_report(report, "runs/explain-wf-resnet")   # explain.json, explain.md
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluation.report import write_report

__all__ = ["DEFINITIONS", "markdown", "summary_line", "write_explain_report"]

DEFINITIONS = {
    "filter map": "1 - alpha[c, k] for every unit k of every filtered layer: how much of unit k forgetting "
    "class c removes (1 = fully switched off).",
    "mean 1-alpha / share off": "per class and layer, the mean of 1 - alpha over the layer's units, and the "
    "share of units with alpha < 0.5.",
    "row similarity": "cosine similarity of the classes' 1 - alpha vectors concatenated over all filtered "
    "layers (two all-zero rows count as identical, 1; an all-zero row and another as 0).",
    "clustering": "average-linkage hierarchical clustering (scipy) on the distance 1 - similarity; the "
    "heatmaps use its dendrogram leaf order.",
    "confusion vs similarity": "Spearman and Pearson correlation, over the class pairs i < j, between row "
    "similarity and the base model's symmetrised row-normalised confusion (C[i, j] + C[j, i]) / 2.",
    "filter saliency": "CNN: ReLU(sum_k (1 - alpha[c, k]) A_k) on the saliency layer's base output "
    "(CAM-style); ViT: per patch token sum_k (1 - alpha[c, k]) |A[token, k]|; bilinear upsampling to "
    "the input, min-max normalised per image. No class is selected while the activations are read.",
    "filter |A| saliency": "sum_k (1 - alpha[c, k]) |A_k| per location: the size of what row c removes from "
    "the layer's output there (for ViT tokens the same as the filter saliency). Unlike the CAM form it is "
    "never empty when the weighted pre-activation sum is negative everywhere.",
    "empty maps": "share of images whose map is constant (e.g. all zero after the ReLU); their pixels are "
    "deleted in random order, so they score like the random control.",
    "Grad-CAM": "on the base model and the same layer: CNN ReLU(sum_k mean_xy(dlogit_c/dA_k) A_k); ViT per "
    "token ReLU(sum_k dlogit_c/dA[token, k] * A[token, k]); upsampled and normalised the same way.",
    "random": "seeded uniform noise at the saliency layer's grid, upsampled the same way (a control).",
    "deletion / insertion AUC": "RISE (Petsiuk et al. 2018): the most salient pixels (all channels) are "
    "replaced by the baseline (deletion) or put back onto the baseline (insertion) in equal steps; the "
    "base model's softmax probability of the class is recorded; AUC = trapezoid rule over the fraction "
    "of pixels changed, 0..1. Lower deletion / higher insertion = more faithful.",
}


def _fmt(v, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` places, None and non-finite as a dash, pipes escaped."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "–"
    return str(v).replace("|", "\\|")


def markdown(r: Mapping[str, Any]) -> str:
    """The Markdown of an explain report: run, rows, similarity vs confusion, AUCs, figures, definitions."""
    lines = [f"# {r.get('title', 'Explaining the weight filters')}", ""]
    run = [(k, r[k]) for k in ("adapter", "base_model", "dataset", "split", "saliency_layer") if r.get(k)]
    s = r.get("settings", {})
    run += [("images per class / AUC images", f"{s.get('images_per_class')} / {r['faithfulness'].get('n_images')}"),
            ("steps, baseline, seed", f"{s.get('steps')}, {s.get('baseline')}, {s.get('seed')}"),
            ("base accuracy on the split", f"{_fmt(r['confusion']['base_accuracy'], 2)}% "
                                           f"({r['confusion']['n_samples']} samples)")]
    lines += ["| run | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in run] + [""]

    lines += ["## What each row switches off", "",
              "| class (row) | mean 1-α | share α<0.5 | most-used layer (mean 1-α) | nearest row (cos) | "
              "base: most confused with | base acc (%) |", "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(r["rows"]):
        lines.append(
            f"| {i} {_fmt(row['class'])} | {_fmt(row['mean_off'])} | {_fmt(row['share_off'])} | "
            f"{_fmt(row['most_used_layer'])} ({_fmt(row['most_used_layer_mean_off'])}) | "
            f"{_fmt(row['nearest_row'])} ({_fmt(row['nearest_row_similarity'])}) | "
            f"{_fmt(row['most_confused_with'])} | {_fmt(row['base_accuracy'], 1)} |")
    lines.append("")

    corr = r["similarity_vs_confusion"]
    lines += ["## Row similarity vs the base model's confusion", "",
              f"Dendrogram order: {', '.join(map(str, r['similarity']['order']))}", "",
              f"Spearman {_fmt(corr.get('spearman'))} (p {_fmt(corr.get('spearman_p'), 4)}), "
              f"Pearson {_fmt(corr.get('pearson'))} (p {_fmt(corr.get('pearson_p'), 4)}) over "
              f"{corr.get('n_pairs')} class pairs. Positive = classes whose rows switch off the same units are "
              "the ones the base model confuses.", ""]

    f = r["faithfulness"]
    lines += ["## Faithfulness: deletion / insertion AUC (RISE)", ""]
    if f.get("n_images"):
        lines += [f"{f['n_images']} images (seeded sample), probability of the true class under the base model; "
                  "mean ± standard error. Lower deletion and higher insertion = more faithful.", "",
                  "| saliency | deletion AUC ↓ | insertion AUC ↑ | empty maps |", "|---|---|---|---|"]
        empty = f.get("empty_maps") or {}
        for m, d in f["summary"].items():
            cell = lambda st: f"{_fmt(st['mean'])} ± {_fmt(st['sem'])}"  # noqa: E731
            share = empty.get(m)
            lines.append(f"| {m} | {cell(d['deletion'])} | {cell(d['insertion'])} | "
                         f"{'–' if share is None else f'{100 * share:.0f}%'} |")
        lines += ["", "Share of images on which the first method beats the second (lower deletion / higher "
                      "insertion AUC):", "", "| comparison | deletion | insertion |", "|---|---|---|"]
        for pair, w in (f.get("wins") or {}).items():
            lines.append(f"| {pair} | {100 * w['deletion']:.0f}% | {100 * w['insertion']:.0f}% |")
        lines.append("")
        high = [m for m, v in empty.items() if v is not None and v > 0.2 and m != "random"]
        if high:
            lines += [f"**Note**: {', '.join(high)} gave a constant (empty) map on more than 20% of the images; "
                      "those images score like the random control (equal-saliency pixels are deleted in random "
                      "order). For CNN layers read before their normalisation/ReLU, compare with `filter_abs`.", ""]
        names = r["class_names"]
        per = f["per_class"]
        lines += ["| class | " + " | ".join(f"{m} del" for m in per) + " | " + " | ".join(f"{m} ins" for m in per) + " |",
                  "|---|" + "---|" * (2 * len(per))]
        for c, name in enumerate(names):
            vals = [per[m]["deletion"][c] for m in per] + [per[m]["insertion"][c] for m in per]
            if all(v is None for v in vals):
                continue
            lines.append(f"| {c} {_fmt(name)} | " + " | ".join(_fmt(v) for v in vals) + " |")
        lines.append("")
    else:
        lines += ["No AUC images (auc_images = 0).", ""]

    if r.get("figures"):
        lines += ["## Figures", ""] + [f"- `{p}`" for p in r["figures"]] + [""]
    env = r.get("environment") or {}
    if env:
        versions = env.get("versions", {})
        lines += ["## Environment", "", f"python {env.get('python')} on {env.get('platform')}, "
                  f"{env.get('cpu_count')} CPUs" + (f", GPUs: {', '.join(env['gpus'])}" if env.get("gpus") else ""),
                  "", ", ".join(f"{k} {v}" for k, v in versions.items() if v), "",
                  f"{_fmt(r.get('seconds'), 1)} s", ""]
    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in r.get("definitions", DEFINITIONS).items()] + [""]
    return "\n".join(lines)


def write_explain_report(report: Mapping[str, Any], out_dir, *, name: str = "explain") -> tuple[Path, Path]:
    """Write ``{out_dir}/{name}.json`` (everything) and ``{name}.md`` (tables), atomically.

    The evaluation report writer does the JSON (strict, with the environment) and the atomic
    writes; this module only renders the Markdown.

    Example:

    ```py
    >>> report = explain_adapter(adapter, loader)
    >>> write_explain_report(report, "runs/explain")   # runs/explain/explain.json, explain.md
    ```
    """

    return write_report(report, out_dir, name=name, markdown=markdown)


def summary_line(report: Mapping[str, Any]) -> str:
    """One line for the console: the layer, the similarity/confusion correlation and the mean AUCs."""
    f = report["faithfulness"]
    corr = report["similarity_vs_confusion"]
    parts = [f"layer {report['saliency_layer']}", f"similarity~confusion spearman {_fmt(corr.get('spearman'))}"]
    if f.get("n_images"):
        for m, d in f["summary"].items():
            parts.append(f"{m} del {_fmt(d['deletion']['mean'])} ins {_fmt(d['insertion']['mean'])}")
    return "; ".join(parts)
