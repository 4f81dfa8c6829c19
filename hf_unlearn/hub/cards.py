"""Model cards for weight-filter adapters and for exported (unlearned) models.

:func:`adapter_card` and :func:`exported_card` return a :class:`huggingface_hub.ModelCard`:
YAML metadata (with a ``model-index`` of the evaluation results, which ``ModelCard.load`` reads
back), a results table, how to use it, what was unlearned, its limits and the command that
reproduces it. The Jinja templates live in ``hf_unlearn/hub/templates/``.

The optional ``report`` is either the ``untraining_metrics.json`` that ``hf-unlearn train`` writes
(keys ``evaluation``, ``dataset``, ``base_model``, ``seed``, ...) or an evaluation report dict as
:func:`hf_unlearn.evaluation.write_report` takes it (keys ``accuracy``, ``retrain``,
``mia_efficacy``, ``zrf``, ...), or a path to either (a JSON file, or a folder holding
``report.json`` or ``untraining_metrics.json``). Missing keys are simply left out of the card.

Example:

```py
>>> from hf_unlearn.hub.cards import adapter_card
>>> card = adapter_card(adapter, "runs/wf-resnet/untraining_metrics.json", repo_id="me/resnet-wf")
>>> card.save("README.md")
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

__all__ = [
    "REPORT_FILENAMES",
    "adapter_card",
    "exported_card",
    "load_report",
    "summarize_report",
    "report_markdown",
    "hub_dataset_id",
    "looks_like_hub_id",
    "demo_text",
    "write_adapter_card",
    "write_exported_card",
]

TEMPLATES = Path(__file__).parent / "templates"
# Looked for, in this order, in a folder passed as the report (and next to a local adapter).
REPORT_FILENAMES = ("report.json", "untraining_metrics.json")
TAGS = ["hf_unlearn", "unlearning", "machine-unlearning", "class-unlearning", "weight-filter", "image-classification"]
PAPER_URL = "https://arxiv.org/abs/2304.02049"  # WF-Net, the method
_DATASET_HUB_IDS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}
_DATASET_LABELS = {"digits": "scikit-learn digits (8x8)"}
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


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


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _list(value: Any) -> Optional[list]:
    if isinstance(value, (list, tuple)) and value:
        return [_num(v) for v in value]
    return None


def _mean(values: Optional[list]) -> Optional[float]:
    vals = [v for v in values or [] if v is not None]
    return sum(vals) / len(vals) if vals else None


def _model_value(value: Any, keys: Sequence[str] = ("unlearned", "model", "adapter", "exported")) -> Optional[float]:
    """A metric of the unlearned model: a number, or ``{"unlearned": x, "base": y, ...}``, or a
    per-class list (its mean)."""
    if _num(value) is not None:
        return _num(value)
    if isinstance(value, Mapping):
        for key in keys:
            if key in value:
                inner = value[key]
                return _num(inner) if _num(inner) is not None else _mean(_list(inner))
        return None
    return _mean(_list(value))


def summarize_report(report: Optional[Mapping]) -> dict:
    """The numbers a card shows, from either report format; absent values are ``None``.

    Keys: ``dataset``, ``split``, ``n_samples``, ``base_model``, ``seed``, ``class_names``,
    ``mean_forget_acc``, ``mean_retain_acc``, ``mean_base_retain_acc``, ``mean_retain_drop``,
    ``base_accuracy``, ``forget_acc`` / ``retain_acc`` / ``base_retain_acc`` (one forgotten set),
    per-class lists ``forget``, ``retain``, ``base_retain``, ``base_forget``, ``retrain_forget``,
    ``retrain_retain``, ``retrain_forget_acc`` / ``retrain_retain_acc``, ``mia``, ``mia_base``,
    ``mia_retrain``, ``zrf`` (means over classes for per-class reports), ``mia_per_class``,
    ``zrf_per_class``, ``classes`` (the set a one-set report is about), ``eval_command``,
    ``untraining_time_s``, ``epochs``, ``steps``, ``versions``.
    """
    r = dict(report or {})
    ev = r.get("evaluation") if isinstance(r.get("evaluation"), Mapping) else None
    acc = r.get("accuracy") if isinstance(r.get("accuracy"), Mapping) else None
    src: Mapping = ev or acc or {}
    retrain = r.get("retrain") if isinstance(r.get("retrain"), Mapping) else {}
    mia = r.get("mia_efficacy")
    env = r.get("environment") if isinstance(r.get("environment"), Mapping) else {}
    settings = r.get("settings") if isinstance(r.get("settings"), Mapping) else {}
    unlearned_mia = mia.get("unlearned") if isinstance(mia, Mapping) else mia
    zrf = r.get("zrf")
    unlearned_zrf = zrf.get("unlearned") if isinstance(zrf, Mapping) else zrf
    out = {
        "dataset": r.get("dataset") or src.get("dataset"),
        "split": src.get("split") or r.get("split"),
        "n_samples": src.get("n_samples") or r.get("n_samples") or settings.get("n_test"),
        "classes": list(src["classes"]) if isinstance(src.get("classes"), (list, tuple)) else None,
        "eval_command": settings.get("command"),
        "base_model": r.get("base_model") or r.get("model"),
        "seed": r.get("seed"),
        "class_names": list(r["class_names"]) if isinstance(r.get("class_names"), (list, tuple)) else None,
        "mean_forget_acc": _num(src.get("mean_forget_acc")),
        "mean_retain_acc": _num(src.get("mean_retain_acc")),
        "mean_base_retain_acc": _num(src.get("mean_base_retain_acc")),
        "mean_retain_drop": _num(src.get("mean_retain_drop")),
        "base_accuracy": _num(src.get("base_accuracy", r.get("base_accuracy"))),
        "forget_acc": _num(src.get("forget_acc")),
        "retain_acc": _num(src.get("retain_acc")),
        "base_retain_acc": _num(src.get("base_retain_acc")),
        "forget": _list(src.get("forget_acc_per_class")),
        "retain": _list(src.get("retain_acc_per_class")),
        "base_retain": _list(src.get("base_retain_acc_per_class")),
        "base_forget": _list(src.get("base_forget_acc_per_class")),
        "retrain_forget": _list(retrain.get("forget_acc_per_class")),
        "retrain_retain": _list(retrain.get("retain_acc_per_class")),
        "retrain_forget_acc": _num(retrain.get("forget_acc", retrain.get("mean_forget_acc"))),
        "retrain_retain_acc": _num(retrain.get("retain_acc", retrain.get("mean_retain_acc"))),
        "mia": _model_value(mia),
        "mia_base": _model_value(mia, ("base",)) if isinstance(mia, Mapping) else None,
        "mia_retrain": _model_value(mia, ("retrain",)) if isinstance(mia, Mapping) else None,
        "zrf": _model_value(zrf),
        "mia_per_class": _list(unlearned_mia),
        "zrf_per_class": _list(unlearned_zrf),
        "untraining_time_s": _num(r.get("untraining_time_s")),
        "epochs": r.get("epochs"),
        "steps": r.get("steps"),
        "versions": r.get("versions") or env.get("versions"),
        "representation": _representation(r, settings),
    }
    if out["mean_forget_acc"] is None:
        out["mean_forget_acc"] = _mean(out["forget"])
    if out["mean_retain_acc"] is None:
        out["mean_retain_acc"] = _mean(out["retain"])
    if out["mean_base_retain_acc"] is None:
        out["mean_base_retain_acc"] = _mean(out["base_retain"])
    return out


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
        blocks.append((f"relearn {mode}, {k.replace('shot', '')} samples/class" + (f", {steps} steps" if steps else "")
                       + " (%)", by_model))
    for label, by_model in blocks:
        if isinstance(by_model, Mapping) and by_model.get("unlearned") is not None:
            out[label] = {m: v for m, v in by_model.items() if m in ("unlearned", "base", "retrain")}
    return out


def _representation_rows(summary: Mapping, class_id: Optional[int] = None) -> list[list]:
    """Rows ``[metric, unlearned, base, retrain]``: means over the evaluated rows, or one class's values."""
    rows = []
    for label, by_model in (summary.get("representation") or {}).items():
        values = []
        for m in ("unlearned", "base", "retrain"):
            v = by_model.get(m)
            if isinstance(v, list):
                v = (v[class_id] if class_id is not None and class_id < len(v) else
                     None if class_id is not None else _mean(v))
            values.append(_num(v))
        if values[0] is not None:
            digits = 3 if "CKA" in label else 2
            rows.append([label] + [_fmt(v, digits) if v is not None else "–" for v in values])
    return rows


def report_markdown(report: Mapping, class_names: Optional[Sequence[str]] = None) -> str:
    """``report.md`` for a report in either format (the evaluation report's own Markdown).

    ``class_names`` label the rows when the report has none (``untraining_metrics.json`` does not).
    """
    from ..evaluation.report import render_markdown, to_jsonable

    data_in = dict(report)
    if class_names and not data_in.get("class_names"):
        data_in["class_names"] = list(class_names)
    data = data_in
    ev = data.get("evaluation")
    if isinstance(ev, Mapping) and "accuracy" not in data:  # untraining_metrics.json -> report form
        data = {
            "title": f"Unlearning report: {data.get('base_model', 'model')}",
            "model": data.get("base_model"),
            "dataset": data.get("dataset"),
            "split": ev.get("split"),
            "seed": data.get("seed"),
            "class_names": data.get("class_names"),
            "accuracy": {k: v for k, v in ev.items() if k not in ("split", "n_samples", "matrix")},
            "cost": {k: data[k] for k in ("untraining_time_s", "steps", "epochs", "num_processes") if k in data} or None,
        }
        machine, versions = data_in.get("machine"), data_in.get("versions")
        if isinstance(machine, Mapping) and machine.get("python"):
            data["environment"] = {**machine, "versions": versions if isinstance(versions, Mapping) else {}}
            if machine.get("cuda_device"):
                data["environment"]["gpus"] = [machine["cuda_device"]]
        elif isinstance(versions, Mapping):
            data["versions"] = versions
        data = {k: v for k, v in data.items() if v is not None}
    return render_markdown(to_jsonable(data))


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def looks_like_hub_id(name: Any) -> bool:
    """Whether ``name`` reads as a Hub repo id (``org/name`` or ``name``) and is not a local path."""
    if not isinstance(name, str) or not name or not _REPO_ID_RE.match(name) or "--" in name or ".." in name:
        return False
    return not os.path.exists(name)


def hub_dataset_id(dataset: Any) -> Optional[str]:
    """The Hub dataset id for the ``datasets:`` metadata (None for local or scikit-learn data)."""
    if not isinstance(dataset, str) or not dataset:
        return None
    if dataset in _DATASET_HUB_IDS:
        return _DATASET_HUB_IDS[dataset]
    if dataset in _DATASET_LABELS:
        return None
    return dataset if "/" in dataset and looks_like_hub_id(dataset) else None


def _dataset_label(dataset: Any) -> str:
    if not dataset:
        return "the evaluation data"
    return _DATASET_LABELS.get(str(dataset), str(dataset))


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _names(id2label: Mapping[int, str], summary: Mapping) -> dict[int, str]:
    if id2label:
        return {int(k): str(v) for k, v in id2label.items()}
    names = summary.get("class_names") or []
    return dict(enumerate(map(str, names)))


def _class_list(names: Mapping[int, str], limit: int = 20) -> str:
    items = [f"{i} `{n}`" for i, n in sorted(names.items())]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", … ({len(items)} in all)"
    return ", ".join(items)


_PER_CLASS_COLUMNS = (
    ("forget", "FA (%)"),
    ("base_forget", "base acc (%)"),
    ("retrain_forget", "retrain FA (%)"),
    ("retain", "RA (%)"),
    ("base_retain", "base RA (%)"),
    ("retrain_retain", "retrain RA (%)"),
    ("mia_per_class", "MIA-efficacy (%)"),
    ("zrf_per_class", "ZRF"),
)


def _per_class_table(summary: Mapping, names: Mapping[int, str], rows: Optional[Sequence[int]] = None,
                     limit: int = 50) -> Optional[str]:
    cols = [(label, summary[key]) for key, label in _PER_CLASS_COLUMNS if summary.get(key)]
    if not cols:
        return None
    n = max(len(v) for _, v in cols)
    ids = list(rows) if rows is not None else list(range(n))
    shown = ids[:limit]
    body = [[f"{i} {names.get(i, '')}".strip()] + [v[i] if i < len(v) else None for _, v in cols] for i in shown]
    if rows is None:
        body.append(["**mean**"] + [_mean(v) for _, v in cols])
    text = _table(["forgotten class (row)"] + [label for label, _ in cols], body)
    if len(ids) > len(shown):
        text += f"\n\n{len(ids) - len(shown)} more rows in `report.json`."
    return text


def _eval_result(summary: Mapping, metric_type: str, metric_name: str, value: Optional[float], task_name: str):
    from huggingface_hub import EvalResult

    dataset = summary.get("dataset")
    return EvalResult(
        task_type="image-classification",
        task_name=task_name,
        dataset_type=hub_dataset_id(dataset) or str(dataset or "custom"),
        dataset_name=_dataset_label(dataset) if dataset else "custom",
        dataset_split=summary.get("split") or None,
        metric_type=metric_type,
        metric_name=metric_name,
        metric_value=round(float(value), 4),
    )


def _render(template: str, card_data, **kwargs):
    from huggingface_hub import ModelCard

    text = (TEMPLATES / template).read_text(encoding="utf-8")
    return ModelCard.from_template(card_data, template_str=text, **kwargs)


def _versions_line(versions: Any) -> Optional[str]:
    if isinstance(versions, Mapping):
        parts = [f"{k} {v}" for k, v in versions.items() if v]
        return ", ".join(parts) or None
    return None


def _base_info(base_name: Any) -> tuple[Optional[str], str]:
    """(base_model metadata value, how the card names it)."""
    if looks_like_hub_id(base_name) and "/" in str(base_name):
        return str(base_name), f"[`{base_name}`](https://huggingface.co/{base_name})"
    if base_name:
        return None, f"`{base_name}` (a local folder when this was made)"
    return None, "an unrecorded base model"


# ---------------------------------------------------------------------------------------------
# the cards
# ---------------------------------------------------------------------------------------------


def adapter_card(
    adapter,
    report: Union[None, Mapping, str, os.PathLike] = None,
    *,
    repo_id: Optional[str] = None,
    command: Optional[str] = None,
    license: Optional[str] = None,
    model_name: Optional[str] = None,
    space: Optional[str] = None,
    location: Optional[str] = None,
):
    """The model card of a weight-filter adapter (an :class:`~hf_unlearn.UnlearnAdapter`).

    Args:
        adapter: the adapter.
        report: ``untraining_metrics.json`` contents, an evaluation report dict, or a path to one.
        repo_id: the Hub repo it goes to (used in the code examples and as the model name).
        command: the command that reproduced it (default: built from the report when it can be).
        license: SPDX id for the metadata (e.g. ``"apache-2.0"``); default: none stated.
        space: the Hub Space running the interactive demo on this adapter (``org/name``), linked
            from the card; without one the card says how to open the demo locally.
        location: the local folder the adapter is saved in, for the demo command when there is no
            ``repo_id``.
    """
    from huggingface_hub import ModelCardData

    summary = summarize_report(load_report(report))
    config = adapter.config
    base_cfg = adapter.base_model.config
    base_name = config.base_model_name_or_path or summary.get("base_model")
    base_meta, base_text = _base_info(base_name)
    names = _names(adapter.id2label, summary)
    model_type = getattr(base_cfg, "model_type", None)
    repo = repo_id or "your-name/your-adapter"
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{model_type or 'model'}-weight-filter")
    example = names.get(0, "0")
    example2 = names.get(1, "1")
    layers = adapter.filter_layers()

    evals = []
    task = "Class unlearning (every class, one request at a time)"
    for key, mtype, mname in (
        ("mean_forget_acc", "forget_accuracy", "Mean forget accuracy (%, lower is better)"),
        ("mean_retain_acc", "retain_accuracy", "Mean retain accuracy (%)"),
        ("mean_base_retain_acc", "base_retain_accuracy", "Base model retain accuracy (%)"),
        ("base_accuracy", "accuracy", "Base model accuracy (%)"),
        ("mia", "mia_efficacy", "MIA-efficacy (%)"),
        ("zrf", "zrf", "ZRF score"),
    ):
        if summary.get(key) is not None:
            evals.append(_eval_result(summary, mtype, mname, summary[key], task))

    summary_rows = []
    for key, label in (
        ("mean_forget_acc", "mean forget accuracy FA (%) — target ≈ 0"),
        ("mean_retain_acc", "mean retain accuracy RA (%)"),
        ("mean_base_retain_acc", "base model on the same retain samples (%)"),
        ("mean_retain_drop", "mean retain drop (points)"),
        ("base_accuracy", "base model accuracy (%)"),
        ("mia", "MIA-efficacy (%)"),
        ("zrf", "ZRF"),
    ):
        if summary.get(key) is not None:
            summary_rows.append([label, f"{summary[key]:.3f}" if key == "zrf" else summary[key]])
    if summary.get("mia_base") is not None:
        summary_rows.append(["MIA-efficacy of the base model (%)", summary["mia_base"]])
    for label, unlearned, base, retrain in _representation_rows(summary):
        # is the class gone from the features? read against the retrain (the oracle) and the base
        summary_rows.append([f"{label}: unlearned / base / retrain", f"{unlearned} / {base} / {retrain}"])

    dataset = summary.get("dataset")
    hub_ds = hub_dataset_id(dataset)
    data = ModelCardData(
        model_name=name,
        base_model=base_meta,
        base_model_relation="adapter" if base_meta else None,
        library_name="peft",
        pipeline_tag="image-classification",
        license=license,
        datasets=[hub_ds] if hub_ds else None,
        tags=TAGS + [t for t in (model_type,) if t],
        eval_results=evals or None,
    )
    facts = []
    if dataset or summary.get("base_model"):
        facts.append("Untrained" + (f" on {_dataset_label(dataset)}" if dataset else "")
                     + (f" from `{summary['base_model']}`" if summary.get("base_model") else ""))
    if summary.get("seed") is not None:
        facts.append(f"seed {summary['seed']}")
    if summary.get("untraining_time_s"):
        facts.append(f"{summary['untraining_time_s']:.1f} s of untraining")
    run_line = ", ".join(facts) + "." if facts else None
    versions = _versions_line(summary.get("versions"))
    if versions:
        run_line = (run_line + " " if run_line else "") + f"Versions: {versions}."
    return _render(
        "adapter_card.md",
        data,
        model_name=name,
        repo_id=repo,
        base_text=base_text,
        base_id=base_name or "BASE_MODEL",
        architecture=(getattr(base_cfg, "architectures", None) or [type(adapter.base_model).__name__])[0],
        model_type=model_type,
        num_classes=adapter.num_classes,
        class_list=_class_list(names),
        example_class=example,
        example_class2=example2,
        filtered_layers=len(layers),
        filters_per_class=sum(m.out_features for m in layers.values()),
        parametrization=getattr(config, "parametrization", None),
        dataset_text=_dataset_label(dataset),
        split=summary.get("split"),
        n_samples=summary.get("n_samples"),
        summary_table=_table(["result", "value"], summary_rows) if summary_rows else None,
        per_class_table=_per_class_table(summary, names),
        command=command,
        run_line=run_line,
        has_report=report is not None,
        eval_command=summary.get("eval_command"),
        paper_url=PAPER_URL,
        demo_text=demo_text(repo_id or location, space),
    )


def exported_card(
    model,
    forgotten: Union[None, int, str, Sequence[Union[int, str]]] = None,
    report: Union[None, Mapping, str, os.PathLike] = None,
    *,
    repo_id: Optional[str] = None,
    adapter_repo: Optional[str] = None,
    base_model: Optional[str] = None,
    command: Optional[str] = None,
    license: Optional[str] = None,
    model_name: Optional[str] = None,
):
    """The model card of an exported (unlearned) transformers model.

    Args:
        model: the model ``UnlearnAdapter.export`` returned (its config records
            ``unlearned_classes`` / ``unlearned_class_ids``).
        forgotten: the forgotten class(es), ids or names; default: read from the model config.
        report: as for :func:`adapter_card`; the forgotten classes' rows are shown.
        adapter_repo: the adapter it was exported from (a Hub id or a folder).
        base_model: the base model's Hub id; default: the model's ``name_or_path``.
    """
    from huggingface_hub import ModelCardData

    summary = summarize_report(load_report(report))
    cfg = model.config
    id2label = {int(k): str(v) for k, v in (getattr(cfg, "id2label", None) or {}).items()}
    names = _names(id2label, summary)
    ids = _forgotten_ids(forgotten, cfg, names)
    forgotten_names = [names.get(i, str(i)) for i in ids]
    base_name = base_model or summary.get("base_model") or getattr(model, "name_or_path", None) or None
    base_meta, base_text = _base_info(base_name)
    model_type = getattr(cfg, "model_type", None)
    repo = repo_id or "your-name/your-model"
    label = "-".join(re.sub(r"[^A-Za-z0-9]+", "-", n).strip("-").lower() or str(i) for i, n in zip(ids, forgotten_names))
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{model_type or 'model'}-without-{label}")

    # set-level numbers: from a one-set report, else the row of a single forgotten class
    same_set = summary.get("classes") is None or sorted(int(c) for c in summary["classes"]) == ids
    fa, ra, base_ra = summary.get("forget_acc"), summary.get("retain_acc"), summary.get("base_retain_acc")
    retrain_fa, retrain_ra = summary.get("retrain_forget_acc"), summary.get("retrain_retain_acc")
    mia, zrf = summary.get("mia"), summary.get("zrf")
    if fa is not None and not same_set:  # a one-set report about another set: not this model's numbers
        fa = ra = base_ra = retrain_fa = retrain_ra = mia = zrf = None
    elif fa is None:  # a per-class report: the row of a single forgotten class, nothing for a set
        mia = zrf = None
        if len(ids) == 1:
            i = ids[0]

            def row(key):
                values = summary.get(key) or []
                return values[i] if i < len(values) else None

            fa, ra, base_ra = row("forget"), row("retain"), row("base_retain")
            retrain_fa, retrain_ra = row("retrain_forget"), row("retrain_retain")
            mia, zrf = row("mia_per_class"), row("zrf_per_class")
    what = ", ".join(forgotten_names)
    task = f"Class unlearning (forgotten: {what})"
    evals = []
    for mtype, mname, value in (
        ("forget_accuracy", f"Forget accuracy on {what} (%, lower is better)", fa),
        ("retain_accuracy", "Retain accuracy (%)", ra),
        ("base_retain_accuracy", "Base model retain accuracy (%)", base_ra),
        ("mia_efficacy", "MIA-efficacy (%)", mia),
        ("zrf", "ZRF score", zrf),
    ):
        if value is not None:
            evals.append(_eval_result(summary, mtype, mname, value, task))
    rows = []
    if fa is not None or ra is not None:
        rows.append(["this model (unlearned)", fa, ra])
    if retrain_fa is not None or retrain_ra is not None:
        rows.append(["retrained without them (reference)", retrain_fa, retrain_ra])
    if base_ra is not None:
        base_fa = None
        if len(ids) == 1 and summary.get("base_forget") and ids[0] < len(summary["base_forget"]):
            base_fa = summary["base_forget"][ids[0]]
        rows.append(["base model", base_fa, base_ra])
    results_table = _table(["model", f"FA on {what} (%)", "RA on the other classes (%)"], rows) if rows else None
    per_class_report = summary.get("classes") is None and summary.get("forget_acc") is None
    # a one-set report about this set (scalars), or one class's row of a per-class report
    rep_rows = (_representation_rows(summary, ids[0]) if per_class_report and len(ids) == 1 else
                _representation_rows(summary) if not per_class_report and same_set else [])
    if rep_rows:
        rep_table = _table(["is the class gone from the features?", "this model", "base", "retrain"], rep_rows)
        results_table = (results_table + "\n\n" if results_table else "") + rep_table
    per_class = None
    if len(ids) > 1:
        per_class = _per_class_table(summary, names, rows=ids)

    dataset = summary.get("dataset")
    hub_ds = hub_dataset_id(dataset)
    data = ModelCardData(
        model_name=name,
        base_model=base_meta,
        base_model_relation="finetune" if base_meta else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        datasets=[hub_ds] if hub_ds else None,
        tags=TAGS + ["unlearned"] + [t for t in (model_type,) if t],
        eval_results=evals or None,
        unlearned_classes=forgotten_names,
        unlearned_class_ids=ids,
    )
    adapter_text = None
    if adapter_repo:
        adapter_text = (f"[`{adapter_repo}`](https://huggingface.co/{adapter_repo})"
                        if looks_like_hub_id(adapter_repo) and "/" in adapter_repo else f"`{adapter_repo}`")
    if command is None:
        src = adapter_repo or "ADAPTER"
        forget_args = " ".join(_shell_word(n) for n in forgotten_names)
        command = f"hf-unlearn export {src} --forget {forget_args} --output_dir {name}"
        if repo_id:
            command += f" --push_to_hub {repo_id}"
    retained = [n for i, n in sorted(names.items()) if i not in ids]
    return _render(
        "exported_card.md",
        data,
        model_name=name,
        repo_id=repo,
        base_text=base_text,
        adapter_text=adapter_text,
        forgotten_text=", ".join(f"`{n}` (id {i})" for i, n in zip(ids, forgotten_names)),
        forgotten_names=forgotten_names,
        num_forgotten=len(ids),
        num_classes=len(names) or getattr(cfg, "num_labels", None),
        retained_text=", ".join(f"`{n}`" for n in retained[:20]) + (f", … ({len(retained)} in all)" if len(retained) > 20 else ""),
        architecture=(getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        dataset_text=_dataset_label(dataset),
        split=summary.get("split"),
        n_samples=summary.get("n_samples"),
        results_table=results_table,
        per_class_table=per_class,
        mia=mia,
        zrf=zrf,
        eval_command=summary.get("eval_command"),
        command=command,
        versions=_versions_line(summary.get("versions")),
        paper_url=PAPER_URL,
    )


def _shell_word(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_.,:/+=-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def _forgotten_ids(forgotten, cfg, names: Mapping[int, str]) -> list[int]:
    if forgotten is None:
        ids = getattr(cfg, "unlearned_class_ids", None)
        if ids:
            return [int(i) for i in ids]
        forgotten = getattr(cfg, "unlearned_classes", None)
        if not forgotten:
            raise ValueError(
                "Which classes did this model forget? Pass forgotten= (ids or names); a model from "
                "UnlearnAdapter.export() records them in config.unlearned_classes."
            )
    if isinstance(forgotten, (int, str)):
        forgotten = [forgotten]
    by_name = {v: k for k, v in names.items()}
    ids = []
    for ref in forgotten:
        if isinstance(ref, str) and ref in by_name:
            ids.append(by_name[ref])
        elif isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit()):
            i = int(ref)
            if names and i not in names:
                raise ValueError(f"Class id {i} is not a class of this model (0..{len(names) - 1}).")
            ids.append(i)
        else:
            raise ValueError(f"Unknown class {ref!r}: this model's classes are {list(names.values())[:20]}.")
    return sorted(dict.fromkeys(ids))


# ---------------------------------------------------------------------------------------------
# the card in every saved folder (not only on the Hub)
# ---------------------------------------------------------------------------------------------

SPACE_URL = "https://huggingface.co/spaces/{}"
TRAIN_CONFIG = "untraining_config.yaml"  # what `hf-unlearn train` writes next to the adapter
DEMO_INSTALL = 'pip install "hf_unlearn[demo]"'


def demo_text(adapter_ref: Optional[str], space: Optional[str] = None) -> str:
    """The card's "Try it" paragraph: a link to the Space, and the command that opens the demo locally."""
    ref = adapter_ref or "PATH_OR_REPO"
    local = (f"Locally: `{DEMO_INSTALL}`, then `hf-unlearn demo --adapter {_shell_word(str(ref))}` and open the "
             "address it prints: pick classes to forget, upload an image or pick one from the gallery, and see the "
             "base and the unlearned model's predictions side by side.")
    if space:
        return f"**[Try it in the browser: the {space} Space]({SPACE_URL.format(space)})** (a Gradio app). {local}"
    return local


def _local_report_and_command(folder: Path):
    report = None
    for name in REPORT_FILENAMES:
        if (folder / name).is_file():
            report = folder / name
            break
    command = f"hf-unlearn train --config {TRAIN_CONFIG}" if (folder / TRAIN_CONFIG).is_file() else None
    return report, command


def write_adapter_card(adapter, folder: Union[str, os.PathLike], *, look_in: Union[None, str, os.PathLike] = None,
                       repo_id: Optional[str] = None, space: Optional[str] = None) -> Path:
    """Write the adapter's card (the one a push uploads) as ``folder/README.md``; returns its path.

    The report (``report.json`` or ``untraining_metrics.json``) and the reproduce command
    (``untraining_config.yaml``) are taken from ``look_in`` (default ``folder``) when they are
    there. Call it AFTER ``PeftModel.save_pretrained``, which writes PEFT's own README.md.

    Example:

    ```py
    >>> adapter.save_pretrained("runs/wf")           # save_pretrained calls this already
    >>> write_adapter_card(adapter, "runs/wf")       # again after untraining_metrics.json was written
    ```
    """
    folder = Path(folder)
    where = Path(look_in) if look_in is not None else folder
    report, command = _local_report_and_command(where)
    card = adapter_card(adapter, report, repo_id=repo_id, command=command, space=space, location=str(where))
    return _write_text_atomic(folder / "README.md", str(card))


def write_exported_card(model, folder: Union[str, os.PathLike], *, adapter_repo: Optional[str] = None,
                        report: Union[None, Mapping, str, os.PathLike] = None, base_model: Optional[str] = None,
                        repo_id: Optional[str] = None) -> Path:
    """Write an exported model's card (the one ``push_exported`` uploads) as ``folder/README.md``.

    ``report`` defaults to the one found next to a local ``adapter_repo``.

    Example:

    ```py
    >>> model = adapter.export(forget="Coat"); model.save_pretrained("without-coat")
    >>> write_exported_card(model, "without-coat", adapter_repo="runs/wf")
    ```
    """
    folder = Path(folder)
    if report is None and adapter_repo and Path(adapter_repo).is_dir():
        report, _ = _local_report_and_command(Path(adapter_repo))
    card = exported_card(model, None, report, repo_id=repo_id, adapter_repo=adapter_repo, base_model=base_model)
    return _write_text_atomic(folder / "README.md", str(card))


def _write_text_atomic(path: Path, text: str) -> Path:
    # A card is replaced by rename, so a reader never sees half of one (PEFT's or ours).
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
