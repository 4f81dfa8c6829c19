"""Write an evaluation report: machine-readable JSON plus a Markdown summary.

The report is a plain dict. These keys are recognised (all optional except that something should
be in it); anything else is kept in the JSON and listed under "Other results" in Markdown:

- run description: ``model``, ``adapter``, ``dataset``, ``split``, ``seed``, ``num_classes``,
  ``forget_classes``, ``class_names`` (list of N names), ``notes``;
- ``accuracy``: the unlearned model's :func:`~hf_unlearn.evaluation.metrics.summarize_matrix`
  output (exact) or :func:`~hf_unlearn.evaluation.metrics.sampled_retain_estimate` output, or a
  :func:`~hf_unlearn.evaluation.metrics.set_accuracy` dict for one forgotten set;
- ``retrain``: the same kind of dict for the retrain-from-scratch reference (per class:
  ``forget_acc_per_class``/``retain_acc_per_class``);
- ``mia_efficacy``, ``zrf``, ``probe``, ``cost``: a number, a dict of numbers (e.g. by model:
  ``{"unlearned": 98.0, "base": 11.0, "retrain": 99.0}``), a dict of per-class lists, or a dict
  of dicts (e.g. probe results by model);
- ``environment``: filled with :func:`environment_info` when absent.

Both files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..environment import environment_info
from ..files import atomic_write_text
from .definitions import format_definitions

__all__ = ["environment_info", "render_markdown", "to_jsonable", "write_report"]

# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch values, paths, sets and tuples to plain JSON types; NaN/inf -> None."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch.Tensor
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return str(obj)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x, digits) for x in v) if len(v) <= 8 else f"[{len(v)} values]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _class_name(names: Sequence[str] | None, i: int) -> str:
    if names is not None and i < len(names):
        return f"{i} {names[i]}"
    return str(i)


def _per_class(d: Any, key: str) -> list | None:
    if isinstance(d, Mapping) and isinstance(d.get(key), list):
        return d[key]
    return None


def _mean(values: list) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _accuracy_section(report: Mapping[str, Any], names: Sequence[str] | None) -> list[str]:
    acc = report.get("accuracy")
    retrain = report.get("retrain")
    if not isinstance(acc, Mapping) and not isinstance(retrain, Mapping):
        return []
    lines = ["## Forget and retain accuracy", ""]
    if isinstance(acc, Mapping) and "forget_acc" in acc and "retain_acc" in acc:  # one forgotten set
        rows = [["unlearned", acc.get("forget_acc"), acc.get("retain_acc"), acc.get("n_forget"), acc.get("n_retain")]]
        if isinstance(retrain, Mapping) and "forget_acc" in retrain:
            rows.append(["retrain", retrain.get("forget_acc"), retrain.get("retain_acc"),
                         retrain.get("n_forget"), retrain.get("n_retain")])
        if "base_retain_acc" in acc:
            rows.append(["base", acc.get("base_forget_acc"), acc.get("base_retain_acc"),
                         acc.get("n_forget"), acc.get("n_retain")])
        return lines + _table(["model", "FA (%)", "RA (%)", "n forget", "n retain"], rows) + [""]

    cols: list[tuple[str, list]] = []
    src = acc if isinstance(acc, Mapping) else {}
    for label, d, key in (
        ("FA", src, "forget_acc_per_class"),
        ("base acc", src, "base_forget_acc_per_class"),
        ("retrain FA", retrain, "forget_acc_per_class"),
        ("RA", src, "retain_acc_per_class"),
        ("base RA", src, "base_retain_acc_per_class"),
        ("drop", src, "retain_drop_per_class"),
        ("retrain RA", retrain, "retain_acc_per_class"),
    ):
        values = _per_class(d, key)
        if values is not None:
            cols.append((label, values))
    if cols:
        n = max(len(v) for _, v in cols)
        rows = [[_class_name(names, i)] + [v[i] if i < len(v) else None for _, v in cols] for i in range(n)]
        rows.append(["**mean**"] + [_mean(v) for _, v in cols])
        lines += _table(["class (row)"] + [label for label, _ in cols], rows) + [""]
        lines.append("All values in %. base acc = the original model's accuracy on class c; drop = base RA − RA in points.")
        lines.append("")

    if src:
        method = src.get("method", "exact")
        mean_ra = src.get("mean_retain_acc")
        stderr = src.get("stderr")
        summary = []
        if src.get("mean_forget_acc") is not None:
            summary.append(["mean FA (%)", src.get("mean_forget_acc")])
        if mean_ra is not None:
            text = _fmt(mean_ra)
            if method == "sampled":
                text += f" ± {_fmt(stderr)} (stderr; {src.get('n_pairs')} sampled pairs)"
            summary.append([f"mean RA (%), {method}", text])
        for key, label in (
            ("mean_base_retain_acc", "mean base RA (%)"),
            ("mean_retain_drop", "mean drop (points)"),
        ):
            if src.get(key) is not None:
                summary.append([label, src[key]])
        for key, row_key, label in (
            ("worst_forget_acc", "worst_forget_row", "worst FA (%)"),
            ("worst_retain_acc", "worst_retain_row", "worst RA (%)"),
            ("worst_retain_drop", "worst_drop_row", "worst drop (points)"),
        ):
            if src.get(key) is not None:
                summary.append([label, f"{_fmt(src[key])} (row {_class_name(names, int(src[row_key]))})"])
        if summary:
            lines += _table(["summary", "value"], summary) + [""]
    return lines


def _metric_block(title: str, value: Any, names: Sequence[str] | None) -> list[str]:
    lines = [f"## {title}", ""]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return lines + [f"**{title}**: {_fmt(value)}", ""]
    if isinstance(value, Mapping) and value:
        vals = list(value.values())
        if all(isinstance(v, (int, float, str, bool)) or v is None for v in vals):
            return lines + _table(["", "value"], [[k, v] for k, v in value.items()]) + [""]
        if all(isinstance(v, list) for v in vals):
            n = max(len(v) for v in vals)
            rows = [[_class_name(names, i)] + [v[i] if i < len(v) else None for v in vals] for i in range(n)]
            rows.append(["**mean**"] + [_mean(v) for v in vals])
            return lines + _table(["class"] + list(value), rows) + [""]
        if all(isinstance(v, Mapping) for v in vals):
            keys: list[str] = []
            for v in vals:
                keys += [k for k in v if k not in keys and not isinstance(v[k], (list, Mapping))]
            rows = [[k] + [v.get(c) for c in keys] for k, v in value.items()]
            return lines + _table([""] + keys, rows) + [""]
    if isinstance(value, list) and value:
        rows = [[_class_name(names, i), v] for i, v in enumerate(value)]
        rows.append(["**mean**", _mean(value)])
        return lines + _table(["class", title], rows) + [""]
    return lines + ["```json", json.dumps(to_jsonable(value), indent=2), "```", ""]


_HEADER_KEYS = ("model", "adapter", "dataset", "split", "seed", "num_classes", "forget_classes")
_SECTIONS = (
    ("mia_efficacy", "MIA-efficacy (%)"),
    ("zrf", "ZRF"),
    ("probe", "Linear probe"),
    ("few_shot_probe", "Few-shot probe (%)"),
    ("cka_to_retrain", "Linear CKA to the retrain (forget-class test features)"),
    ("cost", "Cost"),
)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown summary of a JSON-ready report (what :func:`write_report` writes as ``report.md``).

    Example:
        >>> render_markdown({"model": "org/resnet", "accuracy": {"forget_acc": 0.0, "retain_acc": 91.2}})[:30]
        '# Unlearning report: org/resnet'
    """
    names = report.get("class_names")
    names = list(names) if isinstance(names, (list, tuple)) else None
    title = report.get("title") or f"Unlearning report: {report.get('model', 'model')}"
    lines = [f"# {title}", ""]
    run = [[k, report[k]] for k in _HEADER_KEYS if k in report]
    if run:
        lines += _table(["run", ""], run) + [""]
    if report.get("notes"):
        lines += [str(report["notes"]), ""]
    lines += _accuracy_section(report, names)
    for key, heading in _SECTIONS:
        if key in report and report[key] is not None:
            if key == "few_shot_probe":
                shots = (report.get("settings") or {}).get("few_shot_shots")
                heading = f"{shots}-shot probe (%)" if shots else heading
            lines += _metric_block(heading, report[key], names)
    if isinstance(report.get("relearn"), Mapping):
        settings = report.get("settings") or {}
        steps = settings.get("relearn_steps")
        for setting, by_model in report["relearn"].items():
            mode, _, shots = str(setting).partition("-")
            heading = (f"k-shot relearning, {mode} fine-tune, {shots.replace('shot', '')} samples per class"
                       + (f", {steps} steps" if steps else "") + ": forget-class accuracy after (%)")
            lines += _metric_block(heading, by_model, names)
    known = set(_HEADER_KEYS) | {k for k, _ in _SECTIONS} | {"relearn"} | {
        "accuracy", "retrain", "environment", "class_names", "title", "notes", "definitions",  # -> Glossary
    }
    other = {k: v for k, v in report.items() if k not in known}
    if other:
        lines += ["## Other results", ""]
        for k, v in other.items():
            block = _metric_block(str(k), v, names)[2:]
            # scalars carry their name in bold already; tables need a title of their own
            lines += block if block[:1] and block[0].startswith("**") else [f"**{k}**", ""] + block
    env = report.get("environment") or {}
    if env:
        versions = env.get("versions", {})
        lines += ["## Environment", ""]
        lines += [
            f"python {env.get('python')} on {env.get('platform')}, {env.get('cpu_count')} CPUs"
            + (f", GPUs: {', '.join(env['gpus'])}" if env.get("gpus") else ""),
            "",
            ", ".join(f"{k} {v}" for k, v in versions.items() if v),
            "",
        ]
    lines += ["## Glossary", ""]
    lines += [f"- **{k}**: {v}" for k, v in _glossary(report).items()]
    lines.append("")
    return "\n".join(lines)


def _glossary(report: Mapping[str, Any]) -> Mapping[str, str]:
    """The report's own filled definitions (the suite writes them), else the table at its settings."""
    if isinstance(report.get("definitions"), Mapping):
        return report["definitions"]
    settings = report.get("settings") or {}
    fill = {"shots": settings.get("few_shot_shots"), "draws": settings.get("few_shot_draws"),
            "relearn_steps": settings.get("relearn_steps")}
    return format_definitions(**{k: v for k, v in fill.items() if v is not None})


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike, *, name: str = "report",
                 markdown=None) -> tuple[Path, Path]:
    """Write ``{out_dir}/{name}.json`` (everything, machine-readable) and ``{name}.md`` (summary).

    The JSON is strict (NaN and inf become ``null``) and gets an ``environment`` block from
    :func:`environment_info` unless the report has one. The Markdown has the run description,
    a per-class table of FA / base accuracy / retrain FA / RA / base RA / drop / retrain RA
    (whichever are present) with means and worst rows, sections for MIA-efficacy, ZRF, the
    probe and cost, and a short glossary of the metric definitions.

    Example::

        summary = summarize_matrix(A, base_acc, class_counts(labels, 10))
        write_report({"model": "org/resnet", "adapter": "out/adapter", "dataset": "fashion_mnist",
                      "split": "test", "seed": 0, "class_names": names, "accuracy": summary,
                      "mia_efficacy": {"unlearned": 97.1, "base": 8.3}, "zrf": {"unlearned": 0.61}},
                     "out/eval")
        # -> (Path("out/eval/report.json"), Path("out/eval/report.md"))
    """
    if not isinstance(report, Mapping):
        raise TypeError(f"`report` must be a dict, got {type(report).__name__}.")
    data = dict(report)
    if not data.get("environment"):
        data["environment"] = environment_info()
    data = to_jsonable(data)
    out = Path(out_dir)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_text(json_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    # ``markdown``: another renderer of the same JSON-ready dict (e.g. hf_unlearn.explain.report.markdown)
    atomic_write_text(md_path, (markdown or render_markdown)(data))
    return json_path, md_path
