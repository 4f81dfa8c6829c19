"""Model cards for weight-filter adapters and for exported (unlearned) models: the rendering.

:func:`adapter_card` and :func:`exported_card` return a :class:`huggingface_hub.ModelCard`:
YAML metadata (with a ``model-index`` of the evaluation results, which ``ModelCard.load`` reads
back), a results table, how to use it, what was unlearned, its limits and the command that
reproduces it. The Jinja templates live in ``hf_unlearn/hub/templates/``; the numbers come from
the report through :mod:`hf_unlearn.hub.card_data` (which reads both report formats).
Rendered examples of the published results are in ``model_cards/``.

Example:

```py
>>> from hf_unlearn.hub.cards import adapter_card
>>> card = adapter_card(adapter, "runs/wf-resnet/untraining_metrics.json", repo_id="me/resnet-wf")
>>> card.save("README.md")
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..files import atomic_write_text
from ..tuners.weight_filter.selection import resolve_class
from .card_data import (
    class_list,
    class_names,
    dataset_label,
    find_report,
    hub_dataset_id,
    load_report,
    looks_like_hub_id,
    markdown_table,
    per_class_table,
    representation_rows,
    summarize_report,
    versions_line,
)

__all__ = ["TAGS", "TRAIN_CONFIG", "adapter_card", "exported_card", "demo_text", "write_adapter_card",
           "write_exported_card"]

TEMPLATES = Path(__file__).parent / "templates"
TAGS = ["hf_unlearn", "unlearning", "machine-unlearning", "class-unlearning", "weight-filter", "image-classification"]
PAPER_URL = "https://arxiv.org/abs/2304.02049"  # WF-Net, the method


# ---------------------------------------------------------------------------------------------
# metadata and rendering, shared by both cards
# ---------------------------------------------------------------------------------------------


def _eval_result(summary: Mapping, metric_type: str, metric_name: str, value: Optional[float], task_name: str):
    """One ``model-index`` entry (``ModelCard.load(...).data.eval_results`` reads it back)."""
    dataset = summary.get("dataset")
    return EvalResult(
        task_type="image-classification",
        task_name=task_name,
        dataset_type=hub_dataset_id(dataset) or str(dataset or "custom"),
        dataset_name=dataset_label(dataset) if dataset else "custom",
        dataset_split=summary.get("split") or None,
        metric_type=metric_type,
        metric_name=metric_name,
        metric_value=round(float(value), 4),
    )


def _metadata(name: str, base_meta: Optional[str], relation: str, library: str, license: Optional[str], dataset: Any,
              extra_tags: Sequence[Optional[str]], evals: list, **extra) -> ModelCardData:
    """The card's YAML metadata (``base_model_relation`` only with a Hub base model; None tags dropped)."""
    hub_ds = hub_dataset_id(dataset)
    return ModelCardData(
        model_name=name,
        base_model=base_meta,
        base_model_relation=relation if base_meta else None,
        library_name=library,
        pipeline_tag="image-classification",
        license=license,
        datasets=[hub_ds] if hub_ds else None,
        tags=TAGS + [t for t in extra_tags if t],
        eval_results=evals or None,
        **extra,
    )


def _render(template: str, card_data, **kwargs):
    """``templates/<template>`` filled with the metadata and ``kwargs`` (Jinja)."""
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    return ModelCard.from_template(card_data, template_str=text, **kwargs)


def _base_info(base_name: Any) -> tuple[Optional[str], str]:
    """(base_model metadata value, how the card names it)."""
    if looks_like_hub_id(base_name) and "/" in str(base_name):
        return str(base_name), f"[`{base_name}`](https://huggingface.co/{base_name})"
    if base_name:
        return None, f"`{base_name}` (a local folder when this was made)"
    return None, "an unrecorded base model"


# ---------------------------------------------------------------------------------------------
# the adapter's card
# ---------------------------------------------------------------------------------------------

_ADAPTER_EVALS = (  # summary key, model-index metric type, metric name
    ("mean_forget_acc", "forget_accuracy", "Mean forget accuracy (%, lower is better)"),
    ("mean_retain_acc", "retain_accuracy", "Mean retain accuracy (%)"),
    ("mean_base_retain_acc", "base_retain_accuracy", "Base model retain accuracy (%)"),
    ("base_accuracy", "accuracy", "Base model accuracy (%)"),
    ("mia", "mia_efficacy", "MIA-efficacy (%)"),
    ("zrf", "zrf", "ZRF score"),
)
_ADAPTER_SUMMARY_ROWS = (  # summary key, row label
    ("mean_forget_acc", "mean forget accuracy FA (%) — target ≈ 0"),
    ("mean_retain_acc", "mean retain accuracy RA (%)"),
    ("mean_base_retain_acc", "base model on the same retain samples (%)"),
    ("mean_retain_drop", "mean retain drop (points)"),
    ("base_accuracy", "base model accuracy (%)"),
    ("mia", "MIA-efficacy (%)"),
    ("zrf", "ZRF"),
)


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

    Example:

    ```py
    >>> adapter_card(adapter, "runs/wf/untraining_metrics.json", repo_id="me/wf").save("README.md")
    ```
    """
    summary = summarize_report(load_report(report))
    config = adapter.config
    base_cfg = adapter.base_model.config
    base_name = config.base_model_name_or_path or summary.get("base_model")
    base_meta, base_text = _base_info(base_name)
    names = class_names(adapter.id2label, summary)
    model_type = getattr(base_cfg, "model_type", None)
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{model_type or 'model'}-weight-filter")
    layers = adapter.filter_layers()
    task = "Class unlearning (every class, one request at a time)"
    evals = [_eval_result(summary, mtype, mname, summary[key], task)
             for key, mtype, mname in _ADAPTER_EVALS if summary.get(key) is not None]
    summary_rows = _adapter_summary_rows(summary)
    dataset = summary.get("dataset")
    data = _metadata(name, base_meta, "adapter", "peft", license, dataset, [model_type], evals)
    return _render(
        "adapter_card.md",
        data,
        model_name=name,
        repo_id=repo_id or "your-name/your-adapter",
        base_text=base_text,
        base_id=base_name or "BASE_MODEL",
        architecture=(getattr(base_cfg, "architectures", None) or [type(adapter.base_model).__name__])[0],
        model_type=model_type,
        num_classes=adapter.num_classes,
        class_list=class_list(names),
        example_class=names.get(0, "0"),
        example_class2=names.get(1, "1"),
        filtered_layers=len(layers),
        filters_per_class=sum(m.out_features for m in layers.values()),
        parametrization=getattr(config, "parametrization", None),
        dataset_text=dataset_label(dataset),
        split=summary.get("split"),
        n_samples=summary.get("n_samples"),
        summary_table=markdown_table(["result", "value"], summary_rows) if summary_rows else None,
        per_class_table=per_class_table(summary, names),
        command=command,
        run_line=_run_line(summary),
        has_report=report is not None,
        eval_command=summary.get("eval_command"),
        paper_url=PAPER_URL,
        demo_text=demo_text(repo_id or location, space),
    )


def _adapter_summary_rows(summary: Mapping) -> list[list]:
    """Rows ``[result, value]`` of the adapter card's summary table: means over every class's row."""
    rows = [[label, f"{summary[key]:.3f}" if key == "zrf" else summary[key]]
            for key, label in _ADAPTER_SUMMARY_ROWS if summary.get(key) is not None]
    if summary.get("mia_base") is not None:
        rows.append(["MIA-efficacy of the base model (%)", summary["mia_base"]])
    for label, unlearned, base, retrain in representation_rows(summary):
        # is the class gone from the features? read against the retrain (the oracle) and the base
        rows.append([f"{label}: unlearned / base / retrain", f"{unlearned} / {base} / {retrain}"])
    return rows


def _run_line(summary: Mapping) -> Optional[str]:
    """"Untrained on X from Y, seed s, t s of untraining. Versions: ..." (what the report records)."""
    dataset = summary.get("dataset")
    facts = []
    if dataset or summary.get("base_model"):
        facts.append("Untrained" + (f" on {dataset_label(dataset)}" if dataset else "")
                     + (f" from `{summary['base_model']}`" if summary.get("base_model") else ""))
    if summary.get("seed") is not None:
        facts.append(f"seed {summary['seed']}")
    if summary.get("untraining_time_s"):
        facts.append(f"{summary['untraining_time_s']:.1f} s of untraining")
    run_line = ", ".join(facts) + "." if facts else None
    versions = versions_line(summary.get("versions"))
    if versions:
        run_line = (run_line + " " if run_line else "") + f"Versions: {versions}."
    return run_line


# ---------------------------------------------------------------------------------------------
# the exported model's card
# ---------------------------------------------------------------------------------------------


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

    Example:

    ```py
    >>> exported_card(adapter.export(forget="Coat"), report="runs/wf", adapter_repo="me/wf").save("README.md")
    ```
    """
    summary = summarize_report(load_report(report))
    cfg = model.config
    id2label = {int(k): str(v) for k, v in (getattr(cfg, "id2label", None) or {}).items()}
    names = class_names(id2label, summary)
    ids = _forgotten_ids(forgotten, cfg, names)
    forgotten_names = [names.get(i, str(i)) for i in ids]
    base_name = base_model or summary.get("base_model") or getattr(model, "name_or_path", None) or None
    base_meta, base_text = _base_info(base_name)
    model_type = getattr(cfg, "model_type", None)
    label = "-".join(re.sub(r"[^A-Za-z0-9]+", "-", n).strip("-").lower() or str(i) for i, n in zip(ids, forgotten_names))
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{model_type or 'model'}-without-{label}")
    numbers = _set_numbers(summary, ids)
    what = ", ".join(forgotten_names)
    dataset = summary.get("dataset")
    data = _metadata(name, base_meta, "finetune", "transformers", license, dataset, ["unlearned", model_type],
                     _exported_evals(summary, numbers, what), unlearned_classes=forgotten_names, unlearned_class_ids=ids)
    retained = [n for i, n in sorted(names.items()) if i not in ids]
    return _render(
        "exported_card.md",
        data,
        model_name=name,
        repo_id=repo_id or "your-name/your-model",
        base_text=base_text,
        adapter_text=_adapter_link(adapter_repo),
        forgotten_text=", ".join(f"`{n}` (id {i})" for i, n in zip(ids, forgotten_names)),
        forgotten_names=forgotten_names,
        num_forgotten=len(ids),
        num_classes=len(names) or getattr(cfg, "num_labels", None),
        retained_text=", ".join(f"`{n}`" for n in retained[:20]) + (f", … ({len(retained)} in all)" if len(retained) > 20 else ""),
        architecture=(getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        dataset_text=dataset_label(dataset),
        split=summary.get("split"),
        n_samples=summary.get("n_samples"),
        results_table=_exported_results_table(summary, ids, numbers, what),
        per_class_table=per_class_table(summary, names, rows=ids) if len(ids) > 1 else None,
        mia=numbers["mia"],
        zrf=numbers["zrf"],
        eval_command=summary.get("eval_command"),
        command=command if command is not None else _export_command(forgotten_names, adapter_repo, name, repo_id),
        versions=versions_line(summary.get("versions")),
        paper_url=PAPER_URL,
    )


def _set_numbers(summary: Mapping, ids: Sequence[int]) -> dict:
    """FA, RA, base RA, retrain FA/RA, MIA and ZRF of the model without ``ids`` (None where unknown).

    From a one-set report about this very set, else from the row of a single forgotten class in a
    per-class report; a report about another set, or a set with a per-class report, gives nothing.
    """
    keys = ("forget_acc", "retain_acc", "base_retain_acc", "retrain_forget_acc", "retrain_retain_acc", "mia", "zrf")
    numbers = {k: summary.get(k) for k in keys}
    same_set = summary.get("classes") is None or sorted(int(c) for c in summary["classes"]) == ids
    if numbers["forget_acc"] is not None and not same_set:  # a one-set report about another set
        numbers = dict.fromkeys(keys)
    elif numbers["forget_acc"] is None:  # a per-class report: the row of a single forgotten class
        numbers["mia"] = numbers["zrf"] = None
        if len(ids) == 1:
            rows = (("forget_acc", "forget"), ("retain_acc", "retain"), ("base_retain_acc", "base_retain"),
                    ("retrain_forget_acc", "retrain_forget"), ("retrain_retain_acc", "retrain_retain"),
                    ("mia", "mia_per_class"), ("zrf", "zrf_per_class"))
            for key, per_class in rows:
                values = summary.get(per_class) or []
                numbers[key] = values[ids[0]] if ids[0] < len(values) else None
    numbers["same_set"] = same_set
    return numbers


def _exported_evals(summary: Mapping, numbers: Mapping, what: str) -> list:
    """The model-index entries of an exported model (the forgotten set's numbers)."""
    task = f"Class unlearning (forgotten: {what})"
    metrics = (
        ("forget_accuracy", f"Forget accuracy on {what} (%, lower is better)", numbers["forget_acc"]),
        ("retain_accuracy", "Retain accuracy (%)", numbers["retain_acc"]),
        ("base_retain_accuracy", "Base model retain accuracy (%)", numbers["base_retain_acc"]),
        ("mia_efficacy", "MIA-efficacy (%)", numbers["mia"]),
        ("zrf", "ZRF score", numbers["zrf"]),
    )
    return [_eval_result(summary, mtype, mname, value, task) for mtype, mname, value in metrics if value is not None]


def _exported_results_table(summary: Mapping, ids: Sequence[int], numbers: Mapping, what: str) -> Optional[str]:
    """FA/RA of this model, the retrained reference and the base model; then the representation tests."""
    rows = []
    if numbers["forget_acc"] is not None or numbers["retain_acc"] is not None:
        rows.append(["this model (unlearned)", numbers["forget_acc"], numbers["retain_acc"]])
    if numbers["retrain_forget_acc"] is not None or numbers["retrain_retain_acc"] is not None:
        rows.append(["retrained without them (reference)", numbers["retrain_forget_acc"], numbers["retrain_retain_acc"]])
    if numbers["base_retain_acc"] is not None:
        base_fa = None
        if len(ids) == 1 and summary.get("base_forget") and ids[0] < len(summary["base_forget"]):
            base_fa = summary["base_forget"][ids[0]]
        rows.append(["base model", base_fa, numbers["base_retain_acc"]])
    table = markdown_table(["model", f"FA on {what} (%)", "RA on the other classes (%)"], rows) if rows else None
    per_class_report = summary.get("classes") is None and summary.get("forget_acc") is None
    # a one-set report about this set (scalars), or one class's row of a per-class report
    rep_rows = (representation_rows(summary, ids[0]) if per_class_report and len(ids) == 1 else
                representation_rows(summary) if not per_class_report and numbers["same_set"] else [])
    if rep_rows:
        rep_table = markdown_table(["is the class gone from the features?", "this model", "base", "retrain"], rep_rows)
        table = (table + "\n\n" if table else "") + rep_table
    return table


def _adapter_link(adapter_repo: Optional[str]) -> Optional[str]:
    """The adapter an export came from: a link for a Hub id, the name for a local folder."""
    if not adapter_repo:
        return None
    if looks_like_hub_id(adapter_repo) and "/" in adapter_repo:
        return f"[`{adapter_repo}`](https://huggingface.co/{adapter_repo})"
    return f"`{adapter_repo}`"


def _export_command(forgotten_names: Sequence[str], adapter_repo: Optional[str], name: str,
                    repo_id: Optional[str]) -> str:
    """The ``hf-unlearn export`` command that makes (and, with a repo id, pushes) this model."""
    forget_args = " ".join(_shell_word(n) for n in forgotten_names)
    command = f"hf-unlearn export {adapter_repo or 'ADAPTER'} --forget {forget_args} --output_dir {name}"
    if repo_id:
        command += f" --push_to_hub {repo_id}"
    return command


def _forgotten_ids(forgotten, cfg, names: Mapping[int, str]) -> list[int]:
    """Sorted class ids of ``forgotten`` (ids, digit strings or names); default: what the config records."""
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
    label2id = {v: k for k, v in names.items()}
    num_classes = len(names) or int(getattr(cfg, "num_labels", 0) or 0)
    ids = []
    for ref in forgotten:
        if isinstance(ref, str) and ref not in label2id and ref.lstrip("-").isdigit():
            ref = int(ref)  # "3" on the command line: a name first, else an id
        ids.append(resolve_class(ref, num_classes, label2id))
    return sorted(dict.fromkeys(ids))


def _shell_word(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_.,:/+=-]+", text) else "'" + text.replace("'", "'\\''") + "'"


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
    report = find_report(folder)
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
    return atomic_write_text(folder / "README.md", str(card))  # a reader never sees half a card


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
    return atomic_write_text(folder / "README.md", str(card))  # a reader never sees half a card
