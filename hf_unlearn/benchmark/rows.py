"""The benchmark's rows: one evaluation per (method, class), their per-class rows, summaries and costs.

```py
>>> from hf_unlearn.benchmark.rows import evaluate, row_from_set_report, summarize
>>> row = row_from_set_report(evaluate(model, train_eval, test, processor, [3], args))
>>> summarize({3: row}, base_rows, [3])["forget_acc"]
0.0
```
"""

from __future__ import annotations

import math
from typing import Optional

from ..evaluation.suite import evaluate_unlearning

__all__ = ["representation_kwargs", "evaluate", "representation_values", "row_from_set_report",
           "rows_from_adapter_report", "mean", "summarize", "method_cost"]

SUMMARY_KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy", "zrf", "probe", "probe_auc", "few_shot_probe")


def representation_kwargs(args, retrain_models: dict, classes) -> dict:
    """The evaluation options of the representation tests: shots, relearning, and the retrain references
    of ``classes`` (for CKA and the relearning oracle) when they are loaded."""
    refs = {c: retrain_models[c] for c in classes if c in retrain_models}
    return {"few_shot_shots": args.few_shot_shots, "relearn_shots": args.relearn_shots,
            "relearn_steps": args.relearn_steps, "relearn_modes": args.relearn_modes,
            **({"retrain_dirs": refs} if refs else {})}


def evaluate(model, train_eval, test, processor, forget, args, retrain_models=None, **kwargs) -> dict:
    """``evaluate_unlearning`` of a plain model that forgot ``forget``, with the benchmark's options."""
    return evaluate_unlearning(model, train_eval, test, forget=forget, image_processor=processor, seed=args.seed,
                               progress=False, batch_size=args.eval_batch_size,
                               max_mia_samples=args.max_mia_samples, max_probe_samples=args.max_probe_samples,
                               **representation_kwargs(args, retrain_models or {}, forget), **kwargs)


def representation_values(report: dict, pick) -> dict:
    """CKA to the retrain and k-shot relearning results of the unlearned model (``pick`` selects the class)."""
    out = {}
    if report.get("cka_to_retrain", {}).get("unlearned") is not None:
        out["cka_to_retrain"] = pick(report["cka_to_retrain"]["unlearned"])
    for setting, by_model in (report.get("relearn") or {}).items():
        out[f"relearn_{setting}"] = pick(by_model["unlearned"])
    return out


def row_from_set_report(report: dict) -> dict:
    """The benchmark row of a plain model's (set-mode) report."""
    acc = report["accuracy"]
    n_f, n_r = acc["n_forget"], acc["n_retain"]
    return {
        "forget_acc": acc["forget_acc"], "retain_acc": acc["retain_acc"],
        "test_acc": (acc["forget_acc"] * n_f + acc["retain_acc"] * n_r) / max(n_f + n_r, 1),
        "mia_efficacy": report["mia_efficacy"]["unlearned"], "zrf": report["zrf"]["unlearned"],
        "probe": report["probe"]["unlearned"], "probe_auc": report["probe_auc"]["unlearned"],
        "few_shot_probe": report["few_shot_probe"]["unlearned"],
        **representation_values(report, lambda v: v),
    }


def rows_from_adapter_report(report: dict, classes, counts) -> dict:
    """Per-class rows from an adapter's rows-mode report; ``counts`` = test samples per class."""
    acc = report["accuracy"]
    matrix = acc["matrix"]
    out = {}
    total = float(sum(counts))
    for c in classes:
        row = matrix[c]
        fa = float(acc["forget_acc_per_class"][c])
        ra = float(acc["retain_acc_per_class"][c])
        test_acc = sum(float(row[y]) * counts[y] for y in range(len(counts)) if counts[y]) / max(total, 1.0)
        out[c] = {"forget_acc": fa, "retain_acc": ra, "test_acc": test_acc,
                  "mia_efficacy": report["mia_efficacy"]["unlearned"][c], "zrf": report["zrf"]["unlearned"][c],
                  "probe": report["probe"]["unlearned"][c], "probe_auc": report["probe_auc"]["unlearned"][c],
                  "few_shot_probe": report["few_shot_probe"]["unlearned"][c],
                  **representation_values(report, lambda v, c=c: v[c])}
    return out


def mean(values) -> Optional[float]:
    """The mean of the values that are neither None nor NaN (None when none is left)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def summarize(per_class: dict, base_rows: dict, classes) -> dict:
    """Means of a method's rows over ``classes`` (those it ran on), with the RA drop from the base model."""
    classes = [c for c in classes if c in per_class]
    if not classes:
        return {}
    extra = sorted({k for c in classes for k in per_class[c] if k == "cka_to_retrain" or k.startswith("relearn_")})
    out = {k: mean(per_class[c].get(k) for c in classes) for k in SUMMARY_KEYS + tuple(extra)}
    drops = [base_rows[c]["retain_acc"] - per_class[c]["retain_acc"] for c in classes if c in base_rows]
    out["retain_drop"] = mean(drops)
    out["classes"] = list(classes)
    return out


def method_cost(name: str, m: dict, latency: dict, all_classes: list, base_bytes: int) -> dict:
    """Time to forget one class and to serve all of them, storage for all of them, latency (see the
    benchmark's definitions); ``m["_seconds"]`` holds the measured times."""
    n = len(all_classes)
    if name == "wf":
        round_s = m["_seconds"]["round"]
        return {"seconds_one_class": round_s, "seconds_all_classes": round_s,
                "all_classes_extrapolated": False,
                "storage_bytes_all_classes": base_bytes + m["filter_bytes"],
                "latency_ms": latency.get("wf (adapter, one row per request)"),
                "latency_ms_exported": latency.get("wf (exported)"),
                "latency_ms_row_per_sample": latency.get("wf (adapter, a row per sample)")}
    secs = [s for s in m["_seconds"].values() if s is not None]
    mean_s = mean(secs)
    covered = set(m["_seconds"]) >= set(all_classes) and len(secs) == len(m["_seconds"])
    return {"seconds_one_class": mean_s,
            "seconds_all_classes": sum(secs) if covered else (n * mean_s if mean_s is not None else None),
            "all_classes_extrapolated": not covered,
            "storage_bytes_all_classes": n * base_bytes,
            "latency_ms": latency.get(name)}
