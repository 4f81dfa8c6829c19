"""The benchmark's outputs: the Markdown tables, the forget/retain scatter and the probe trade-off plot.

```py
>>> from hf_unlearn.benchmark.tables import markdown, scatter, tradeoff
>>> Path("benchmark.md").write_text(markdown(result))   # result: what run_benchmark returns
>>> scatter(result, Path("benchmark.png")); tradeoff(result, Path("tradeoff.png"))
```
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..baselines.tuning import best_trial
from ..evaluation.plots import plot_probe_tradeoff
from ..files import atomic_write

__all__ = ["markdown", "scatter", "tradeoff", "fmt", "format_bytes", "format_seconds"]


def fmt(v, digits=2):
    """A table cell: floats to ``digits`` decimals, None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_bytes(n):
    """Bytes in GB / MB / kB (decimal units)."""
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def format_seconds(s, extrapolated=False):
    """Seconds: one decimal from 1 s up, three below; marked when extrapolated from fewer classes."""
    if s is None:
        return "–"
    text = f"{s:.1f}" if s >= 1 else f"{s:.3f}"
    return text + (" (extrap.)" if extrapolated else "")


def representation_column_order(key: str) -> tuple:
    """CKA first, then relearning by mode and by shot count as a number (1, 5, 25; not 1, 25, 5).

    Example:
        >>> sorted(["relearn_full-25shot", "relearn_full-5shot", "cka_to_retrain"], key=representation_column_order)
        ['cka_to_retrain', 'relearn_full-5shot', 'relearn_full-25shot']
    """
    if not key.startswith("relearn_"):
        return (0, key, 0)
    mode, _, shots = key[len("relearn_"):].partition("-")
    digits = "".join(ch for ch in shots if ch.isdigit())
    return (1, mode, int(digits) if digits else 0)


def markdown(result: dict) -> str:
    """benchmark.md: the two summary tables, the definitions, the tuning record, the hyperparameters."""
    n = result["settings"]["num_classes"]
    names = result["settings"]["class_names"]
    lines = [f"# Unlearning benchmark: {result['settings']['dataset']}, {result['base']['model_type']} "
             f"({result['base']['num_parameters']:,} parameters, base test accuracy "
             f"{fmt(result['base'].get('test_accuracy_pct'))}%)", ""]
    s = result["settings"]
    lines.append(f"Machine: {s['machine']}; torch threads {s['torch_threads']}; device {s['device']}; seed {s['seed']}. "
                 f"Peer classes: {', '.join(f'{c} ({names[c]})' for c in s['peer_classes'])}.")
    lines.append("")
    shots = s.get("few_shot_shots", 5)
    extra = sorted({k for m in result["methods"].values() for key in ("summary_peer_classes", "summary_all")
                    for k in (m.get(key) or {}) if k == "cka_to_retrain" or k.startswith("relearn_")},
                   key=representation_column_order)
    extra_titles = [("CKA to retrain" if k == "cka_to_retrain" else
                     "relearn " + k[len("relearn_"):].replace("-", " ").replace("shot", "-shot") + " %") for k in extra]
    header = ["method", "classes", "FA %", "RA %", "RA drop pt", "test acc %", "MIA-eff. %", "ZRF",
              "probe bal. acc %", f"{shots}-shot probe %"] + extra_titles + [
              "s to forget 1 class", f"s to serve all {n}", f"storage for all {n}",
              f"ms / request ({s['latency_batch']})"]

    def table(key, title):
        lines.extend([f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        for name, m in result["methods"].items():
            summ = m.get(key) or {}
            if not summ:
                continue
            cost = m["cost"]
            lines.append("| " + " | ".join([
                name, str(len(summ["classes"])), fmt(summ["forget_acc"]), fmt(summ["retain_acc"]),
                fmt(summ.get("retain_drop")), fmt(summ["test_acc"]), fmt(summ["mia_efficacy"]),
                fmt(summ["zrf"], 3), fmt(summ["probe"]), fmt(summ.get("few_shot_probe")),
                *[fmt(summ.get(k), 3 if k == "cka_to_retrain" else 2) for k in extra],
                format_seconds(cost.get("seconds_one_class")),
                format_seconds(cost.get("seconds_all_classes"), cost.get("all_classes_extrapolated", False)),
                format_bytes(cost.get("storage_bytes_all_classes")), fmt(cost.get("latency_ms")),
            ]) + " |")
        lines.append("")

    table("summary_peer_classes", f"All methods on the same classes ({', '.join(map(str, s['peer_classes']))})")
    table("summary_all", "Every class each method was run on")
    lines += ["## Notes", ""]
    lines += [f"- {k}: {v}" for k, v in result["definitions"].items()]
    for name, m in result["methods"].items():
        if m.get("note"):
            lines.append(f"- {name}: {m['note']}")
    if result.get("tuning"):
        lines += ["", "## Tuning (equal budget per peer)", "",
                  "| method | class | trials | best hparams | val FA % | val RA % |", "|---|---|---|---|---|---|"]
        for name, t in result["tuning"].items():
            best = best_trial(t["trials"])
            lines.append(f"| {name} | {t['class']} | {t['budget_trials']} | `{json.dumps(t['best'])}` | "
                         f"{fmt(best['val_forget_acc'])} | {fmt(best['val_retain_acc'])} |")
    lines += ["", "## Hyperparameters used", ""]
    for name, m in result["methods"].items():
        lines.append(f"- {name}: `{json.dumps(m.get('hparams'), default=str)}`")
    return "\n".join(lines) + "\n"


def scatter(result: dict, path: Path) -> None:
    """Forget (x) vs retain (y) accuracy over the peer classes; marker area ~ log time to serve every class."""
    # matplotlib is optional and slow to import: only the plots need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = []
    for name, m in result["methods"].items():
        summ = m.get("summary_peer_classes") or m.get("summary_all") or {}
        if summ.get("forget_acc") is None or summ.get("retain_acc") is None:
            continue
        cost = m["cost"].get("seconds_all_classes") or 0.0
        points.append((name, summ["forget_acc"], summ["retain_acc"], cost))
    if points:
        costs = [p[3] for p in points if p[3] > 0]
        lo = min(costs) if costs else 1.0
        for name, fa, ra, cost in points:
            size = 40 + 120 * math.log10(1 + (cost / lo if lo > 0 else 0.0))
            color = "#d62728" if name == "wf" else ("#1f77b4" if name == "retrain" else
                                                    "#7f7f7f" if name in ("base", "logit_mask") else "#2ca02c")
            ax.scatter([fa], [ra], s=size, color=color, alpha=0.6, edgecolors="black", linewidths=0.5)
            ax.annotate(f"{name} ({format_seconds(cost)} s)", (fa, ra), textcoords="offset points", xytext=(6, 4),
                        fontsize=8)
    ax.set_xlabel("forget accuracy % (lower = more forgotten)")
    ax.set_ylabel("retain accuracy %")
    ax.set_title(f"{result['settings']['dataset']}: mean over the peer classes; marker area ~ log time to serve "
                 f"all {result['settings']['num_classes']} classes", fontsize=9)
    ax.grid(True, alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))


def tradeoff(result: dict, path: Path) -> None:
    """Few-shot probe (x) vs retain drop (y) over the peer classes, one point per method (issue 12)."""
    points = {}
    for name, m in result["methods"].items():
        summ = m.get("summary_peer_classes") or {}
        x = summ.get("few_shot_probe")
        y = 0.0 if name == "base" else summ.get("retain_drop")
        if x is not None and y is not None:
            points[name] = (x, y)
    if points:
        plot_probe_tradeoff(points, path, shots=result["settings"].get("few_shot_shots", 5),
                            title=f"{result['settings']['dataset']}: mean over the peer classes")
