"""What a model card says, read from an evaluation report: the numbers, the dataset, the run, and
the tables and lines they make.

The report is either an evaluation report as :func:`hf_unlearn.evaluation.report.write_report`
takes it (keys ``accuracy``, ``retrain``, ``mia_efficacy``, ``zrf``, ...) or, until the untraining
job writes that format too, the OLD ``untraining_metrics.json`` format (keys ``evaluation``,
``dataset``, ``base_model``, ``seed``, ...); or a path to either (a JSON file, or a folder holding
``report.json`` or ``untraining_metrics.json``). Missing keys are simply left out of the card.
The rendering is :mod:`hf_unlearn.hub.cards`.

Example:

```py
>>> from hf_unlearn.hub.card_data import load_report, summarize_report
>>> summary = summarize_report(load_report("runs/wf-resnet"))
>>> summary["mean_forget_acc"], summary["dataset"]
(0.4, 'fashion_mnist')
```
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from ..evaluation.report import render_markdown, to_jsonable
from ..files import atomic_write_json, atomic_write_text

__all__ = [
    "REPORT_FILENAMES", "find_report", "load_report", "summarize_report", "report_markdown", "write_report_files", "as_number", "mean_of",
    "looks_like_hub_id", "hub_dataset_id", "dataset_label", "format_cell", "markdown_table", "class_names",
    "class_list", "PER_CLASS_COLUMNS", "per_class_table", "representation_rows", "versions_line",
]

# Looked for, in this order, in a folder passed as the report (and next to a local adapter).
REPORT_FILENAMES = ("report.json", "untraining_metrics.json")
_DATASET_HUB_IDS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}
_DATASET_LABELS = {"digits": "scikit-learn digits (8x8)"}
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def load_report(report: Union[None, Mapping, str, os.PathLike]) -> Optional[dict]:
    """The report as a dict: a dict is copied; a path is read (a folder: its ``report.json`` or
    ``untraining_metrics.json``). ``None`` gives ``None``."""
    if report is None:
        return None
    if isinstance(report, Mapping):
        return dict(report)
    path = Path(report)
    if path.is_dir():
        for name in REPORT_FILENAMES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"No report in {path}: expected one of {', '.join(REPORT_FILENAMES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"Report file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"Report file {path} is not valid JSON: {err}") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"Report file {path} holds a JSON {type(data).__name__}, not an object.")
    return dict(data)


def find_report(folder: Union[str, os.PathLike, None]) -> Optional[Path]:
    """The report next to a local adapter: ``report.json``, else ``untraining_metrics.json``; else None.

    Example:

    ```py
    >>> find_report("runs/wf-resnet")
    PosixPath('runs/wf-resnet/untraining_metrics.json')
    ```
    """
    if folder is None or not Path(folder).is_dir():
        return None
    for name in REPORT_FILENAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def as_number(value: Any) -> Optional[float]:
    """``value`` as a finite float, else None (a bool, a string, NaN or inf is no number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _list(value: Any) -> Optional[list]:
    if isinstance(value, (list, tuple)) and value:
        return [as_number(v) for v in value]
    return None


def mean_of(values: Optional[list]) -> Optional[float]:
    """The mean of the numbers in ``values`` (None entries skipped); None when there are none."""
    vals = [v for v in values or [] if v is not None]
    return sum(vals) / len(vals) if vals else None


def _model_value(value: Any, keys: Sequence[str] = ("unlearned", "model", "adapter", "exported")) -> Optional[float]:
    """A metric of the unlearned model: a number, or ``{"unlearned": x, "base": y, ...}``, or a
    per-class list (its mean)."""
    if as_number(value) is not None:
        return as_number(value)
    if isinstance(value, Mapping):
        for key in keys:
            if key in value:
                inner = value[key]
                return as_number(inner) if as_number(inner) is not None else mean_of(_list(inner))
        return None
    return mean_of(_list(value))


def _mapping(r: Mapping, key: str) -> Mapping:
    return r[key] if isinstance(r.get(key), Mapping) else {}


def summarize_report(report: Optional[Mapping]) -> dict:
    """The numbers a card shows, from an evaluation report (``report.json``, or the untraining job's
    ``untraining_metrics.json``, which has the same format); absent values are ``None``.

    Keys: ``dataset``, ``split``, ``n_samples``, ``base_model``, ``seed``, ``class_names``,
    ``mean_forget_acc``, ``mean_retain_acc``, ``mean_base_retain_acc``, ``mean_retain_drop``,
    ``base_accuracy``, ``forget_acc`` / ``retain_acc`` / ``base_retain_acc`` (one forgotten set),
    per-class lists ``forget``, ``retain``, ``base_retain``, ``base_forget``, ``retrain_forget``,
    ``retrain_retain``, ``retrain_forget_acc`` / ``retrain_retain_acc``, ``mia``, ``mia_base``,
    ``mia_retrain``, ``zrf`` (means over classes for per-class reports), ``mia_per_class``,
    ``zrf_per_class``, ``classes`` (the set a one-set report is about), ``eval_command``,
    ``untraining_time_s``, ``epochs``, ``steps``, ``versions``, ``representation``.
    """
    r = dict(report or {})
    src: Mapping = _mapping(r, "accuracy")
    settings = _mapping(r, "settings")
    out = {
        "dataset": r.get("dataset") or src.get("dataset"),
        "split": src.get("split") or r.get("split"),
        "n_samples": src.get("n_samples") or r.get("n_samples") or settings.get("n_test"),
        "classes": list(src["classes"]) if isinstance(src.get("classes"), (list, tuple)) else None,
        "eval_command": settings.get("command"),
        "base_model": r.get("base_model") or r.get("model"),
        "seed": r.get("seed"),
        "class_names": list(r["class_names"]) if isinstance(r.get("class_names"), (list, tuple)) else None,
        "untraining_time_s": as_number(r.get("untraining_time_s")),
        "epochs": r.get("epochs"),
        "steps": r.get("steps"),
        "versions": r.get("versions") or _mapping(r, "environment").get("versions"),
        "representation": _representation(r, settings),
    }
    out.update(_accuracy_numbers(src, r.get("base_accuracy")))
    out.update(_reference_numbers(r))
    for mean, rows in (("mean_forget_acc", "forget"), ("mean_retain_acc", "retain"),
                       ("mean_base_retain_acc", "base_retain")):
        if out[mean] is None:
            out[mean] = mean_of(out[rows])
    return out


def _accuracy_numbers(src: Mapping, base_accuracy: Any) -> dict:
    """The unlearned and base model's accuracies: means, one set's scalars, per-class lists."""
    return {
        "mean_forget_acc": as_number(src.get("mean_forget_acc")),
        "mean_retain_acc": as_number(src.get("mean_retain_acc")),
        "mean_base_retain_acc": as_number(src.get("mean_base_retain_acc")),
        "mean_retain_drop": as_number(src.get("mean_retain_drop")),
        "base_accuracy": as_number(src.get("base_accuracy", base_accuracy)),
        "forget_acc": as_number(src.get("forget_acc")),
        "retain_acc": as_number(src.get("retain_acc")),
        "base_retain_acc": as_number(src.get("base_retain_acc")),
        "forget": _list(src.get("forget_acc_per_class")),
        "retain": _list(src.get("retain_acc_per_class")),
        "base_retain": _list(src.get("base_retain_acc_per_class")),
        "base_forget": _list(src.get("base_forget_acc_per_class")),
    }


def _reference_numbers(r: Mapping) -> dict:
    """The retrained reference's accuracies, and MIA-efficacy and ZRF by model (means and per class)."""
    retrain = _mapping(r, "retrain")
    mia, zrf = r.get("mia_efficacy"), r.get("zrf")
    return {
        "retrain_forget": _list(retrain.get("forget_acc_per_class")),
        "retrain_retain": _list(retrain.get("retain_acc_per_class")),
        "retrain_forget_acc": as_number(retrain.get("forget_acc", retrain.get("mean_forget_acc"))),
        "retrain_retain_acc": as_number(retrain.get("retain_acc", retrain.get("mean_retain_acc"))),
        "mia": _model_value(mia),
        "mia_base": _model_value(mia, ("base",)) if isinstance(mia, Mapping) else None,
        "mia_retrain": _model_value(mia, ("retrain",)) if isinstance(mia, Mapping) else None,
        "zrf": _model_value(zrf),
        "mia_per_class": _list(mia.get("unlearned") if isinstance(mia, Mapping) else mia),
        "zrf_per_class": _list(zrf.get("unlearned") if isinstance(zrf, Mapping) else zrf),
    }


def _representation(r: Mapping, settings: Mapping) -> dict:
    """The representation tests of a suite report, by metric label: ``{label: {model: value-or-list}}``.

    Labels: ``"<shots>-shot probe (%)"``, ``"linear CKA to the retrain"``, ``"relearn <mode>, <k>
    samples/class, <steps> steps (%)"``; models ``unlearned``, ``base``, ``retrain`` where present.
    """
    out: dict = {}
    shots = settings.get("few_shot_shots") or 5
    steps = settings.get("relearn_steps")
    blocks = [(f"{shots}-shot probe (%)", r.get("few_shot_probe")), ("linear CKA to the retrain", r.get("cka_to_retrain"))]
    for setting, by_model in (r.get("relearn") or {}).items():
        mode, _, k = str(setting).partition("-")
        k = k.replace("shot", "")
        blocks.append((f"relearn {mode}, {k} sample{'' if k == '1' else 's'}/class"
                       + (f", {steps} steps" if steps else "") + " (%)", by_model))
    for label, by_model in blocks:
        if isinstance(by_model, Mapping) and by_model.get("unlearned") is not None:
            out[label] = {m: v for m, v in by_model.items() if m in ("unlearned", "base", "retrain")}
    return out


def report_markdown(report: Mapping, class_names: Optional[Sequence[str]] = None) -> str:
    """``report.md`` for a report in either format (the evaluation report's own Markdown).

    ``class_names`` label the rows when the report has none (``untraining_metrics.json`` does not).

    Example:

    ```py
    >>> Path("report.md").write_text(report_markdown(load_report("runs/wf-resnet"), adapter.id2label.values()))
    ```
    """
    data = dict(report)
    if class_names and not data.get("class_names"):
        data["class_names"] = list(class_names)
    data = _round_as_cost(data)
    return render_markdown(to_jsonable(data))


def write_report_files(report, folder: Union[str, os.PathLike], class_names: Optional[Sequence[str]] = None
                       ) -> Optional[dict]:
    """Write ``folder/report.json`` (the report as given, JSON-ready) and ``folder/report.md``
    (:func:`report_markdown`); returns the report dict, or None (and writes nothing) without one.

    Example:

    ```py
    >>> write_report_files("runs/wf-resnet/untraining_metrics.json", "staging", adapter.id2label.values())
    ```
    """
    data = load_report(report)
    if data is None:
        return None
    atomic_write_json(Path(folder) / "report.json", to_jsonable(data))
    atomic_write_text(Path(folder) / "report.md", report_markdown(data, class_names))
    return data


# The untraining job's own fields (untraining_metrics.json): its cost goes in a `cost` table; the
# round's trace (history, convergence, class weights, why it stopped) is for plots, not for a card.
ROUND_COST_KEYS = ("untraining_time_s", "untraining_cpu_time_s", "steps", "epochs", "num_processes")
ROUND_TRACE_KEYS = ("history", "convergence", "forget_class_weights", "stop_reason", "stop_explanation",
                    "budget_steps", "classes_without_training_rows")


def _round_as_cost(data: dict) -> dict:
    """An ``untraining_metrics.json`` as the report renderer takes it: cost together, trace left out."""
    cost = {k: data[k] for k in ROUND_COST_KEYS if k in data}
    if not cost:
        return data
    out = {k: v for k, v in data.items() if k not in ROUND_COST_KEYS + ROUND_TRACE_KEYS}
    out["cost"] = {**cost, **{k: data[k] for k in ("stop_reason",) if k in data}}
    return out


def looks_like_hub_id(name: Any) -> bool:
    """Whether ``name`` reads as a Hub repo id (``org/name`` or ``name``) and is not a local path.

    Example: ``looks_like_hub_id("microsoft/resnet-50")`` is True, ``looks_like_hub_id("./runs/x")`` False.
    """
    if not isinstance(name, str) or not name or not _REPO_ID_RE.match(name) or "--" in name or ".." in name:
        return False
    return not os.path.exists(name)


def hub_dataset_id(dataset: Any) -> Optional[str]:
    """The Hub dataset id for the ``datasets:`` metadata (None for local or scikit-learn data).

    Example: ``hub_dataset_id("fashion_mnist")`` is ``"zalando-datasets/fashion_mnist"``.
    """
    if not isinstance(dataset, str) or not dataset:
        return None
    if dataset in _DATASET_HUB_IDS:
        return _DATASET_HUB_IDS[dataset]
    if dataset in _DATASET_LABELS:
        return None
    return dataset if "/" in dataset and looks_like_hub_id(dataset) else None


def dataset_label(dataset: Any) -> str:
    """How a card names the dataset (``"the evaluation data"`` when the report names none)."""
    if not dataset:
        return "the evaluation data"
    return _DATASET_LABELS.get(str(dataset), str(dataset))


# ---------------------------------------------------------------------------------------------
# what the tables and lines of a card hold
# ---------------------------------------------------------------------------------------------


def format_cell(value: Any, digits: int = 2) -> str:
    """A Markdown table cell: ``–`` for None, a float with ``digits`` decimals, text with ``|`` escaped."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table. Example: ``markdown_table(["model", "FA (%)"], [["base", 91.0]])``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def class_names(id2label: Mapping[int, str], summary: Mapping) -> dict[int, str]:
    """Class names by id: the model's ``id2label``, else the report's ``class_names``."""
    if id2label:
        return {int(k): str(v) for k, v in id2label.items()}
    names = summary.get("class_names") or []
    return dict(enumerate(map(str, names)))


def class_list(names: Mapping[int, str], limit: int = 20) -> str:
    """``0 `ant`, 1 `bee`, …`` (the first ``limit`` classes, then how many in all)."""
    items = [f"{i} `{n}`" for i, n in sorted(names.items())]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", … ({len(items)} in all)"
    return ", ".join(items)


PER_CLASS_COLUMNS = (
    ("forget", "FA (%)"),
    ("base_forget", "base acc (%)"),
    ("retrain_forget", "retrain FA (%)"),
    ("retain", "RA (%)"),
    ("base_retain", "base RA (%)"),
    ("retrain_retain", "retrain RA (%)"),
    ("mia_per_class", "MIA-efficacy (%)"),
    ("zrf_per_class", "ZRF"),
)


def per_class_table(summary: Mapping, names: Mapping[int, str], rows: Optional[Sequence[int]] = None,
                    limit: int = 50) -> Optional[str]:
    """One row per forgotten class (``rows``, default all, plus their mean) with the columns the summary has."""
    cols = [(label, summary[key]) for key, label in PER_CLASS_COLUMNS if summary.get(key)]
    if not cols:
        return None
    n = max(len(v) for _, v in cols)
    ids = list(rows) if rows is not None else list(range(n))
    shown = ids[:limit]
    body = [[f"{i} {names.get(i, '')}".strip()] + [v[i] if i < len(v) else None for _, v in cols] for i in shown]
    if rows is None:
        body.append(["**mean**"] + [mean_of(v) for _, v in cols])
    text = markdown_table(["forgotten class (row)"] + [label for label, _ in cols], body)
    if len(ids) > len(shown):
        text += f"\n\n{len(ids) - len(shown)} more rows in `report.json`."
    return text


def representation_rows(summary: Mapping, class_id: Optional[int] = None) -> list[list]:
    """Rows ``[metric, unlearned, base, retrain]``: means over the evaluated rows, or one class's values."""
    rows = []
    for label, by_model in (summary.get("representation") or {}).items():
        values = []
        for m in ("unlearned", "base", "retrain"):
            v = by_model.get(m)
            if isinstance(v, list):
                v = (v[class_id] if class_id is not None and class_id < len(v) else
                     None if class_id is not None else mean_of(v))
            values.append(as_number(v))
        if values[0] is not None:
            digits = 3 if "CKA" in label else 2
            rows.append([label] + [format_cell(v, digits) if v is not None else "–" for v in values])
    return rows


def versions_line(versions: Any) -> Optional[str]:
    """``torch 2.13.0, transformers 5.24.0`` from a report's versions mapping; None without one."""
    if isinstance(versions, Mapping):
        parts = [f"{k} {v}" for k, v in versions.items() if v]
        return ", ".join(parts) or None
    return None
