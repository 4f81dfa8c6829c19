"""The evaluation job behind ``hf-unlearn evaluate`` / ``recipes/evaluate.py``: load, evaluate, write.

:func:`run_evaluation` takes the command's argument dataclasses (``hf_unlearn.commands.evaluate``), so
a script calls it exactly as the command line does::

    from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments
    from hf_unlearn.commands.evaluate import EvaluationArguments, SplitArguments, TargetArguments
    from hf_unlearn.evaluation.job import run_evaluation

    report = run_evaluation(TargetArguments(adapter="runs/wf-resnet", output_dir="runs/eval",
                                            retrain_root="runs/retrain-resnet"),
                            DataArguments(dataset="fashion_mnist"), SplitArguments(), EvaluationArguments(),
                            RuntimeArguments())
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from accelerate import Accelerator

from ..adapter import UnlearnAdapter
from ..data.loaders import build_dataloader, subsample
from ..data.loading import load_image_dataset
from ..files import atomic_write_json, atomic_write_text
from ..modeling import filter_sparsity
from ..training.retrain import retrain_dirs_from_root
from .plots import plot_accuracy_matrix, plot_filter_sparsity, plot_forget_retain
from .report import to_jsonable, write_report
from .sets import evaluate_set_sizes, format_set_sizes, random_sets
from .suite import evaluate_unlearning

if TYPE_CHECKING:  # the dataclasses live with the command; only their names are needed here
    from ..commands.arguments import DataArguments, RuntimeArguments
    from ..commands.evaluate import EvaluationArguments, SplitArguments, TargetArguments

__all__ = ["run_evaluation", "summary_line", "write_plots"]


def _refs(values):
    """Command-line class references: digits are ids, anything else a name."""
    if values is None:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def run_evaluation(target: "TargetArguments", data: "DataArguments", splits: "SplitArguments",
                   evaluation: "EvaluationArguments", runtime: "RuntimeArguments", *,
                   argv: Optional[Sequence[str]] = None) -> dict:
    """Load, evaluate, and (main process) write the report and plots; returns the report.

    ``argv``: the command line, recorded in ``report["settings"]["argv"]`` (None from Python).
    """
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    accelerator = Accelerator(cpu=runtime.cpu)
    progress = not runtime.no_progress and accelerator.is_main_process
    adapter, kwargs = _load_target(target)
    if evaluation.set_sizes:  # a set larger than the class count is a usage error before any pass over the data
        if adapter is None:
            raise ValueError("--set_sizes needs --adapter: a plain model forgot one fixed set.")
        for size in evaluation.set_sizes:
            random_sets(adapter.num_classes, size, evaluation.sets_per_size, seed=evaluation.seed)
    with accelerator.main_process_first():  # rank 0 fills the datasets cache, the others read it
        def load(split, limit):
            loaded = load_image_dataset(data.dataset, split=split, image_column=data.image_column,
                                        label_column=data.label_column, revision=data.dataset_revision)
            return subsample(loaded, limit, seed=evaluation.seed)

        train = load(splits.train_split, splits.max_train_samples)
        test = load(splits.test_split, splits.max_test_samples)
    if evaluation.sets_only:
        if not evaluation.set_sizes:
            raise ValueError("--sets_only needs --set_sizes (e.g. --set_sizes 2 3 4 5).")
        result = _evaluate_set_sizes(target, evaluation, adapter, test, accelerator, progress)
        accelerator.wait_for_everyone()
        return {"set_sizes": result}
    retrain_dirs = retrain_dirs_from_root(target.retrain_root) if target.retrain_root else None
    if target.forget:
        kwargs["forget"] = _refs(target.forget)
    report = evaluate_unlearning(
        adapter if adapter is not None else target.model, train, test, rows=_refs(target.rows),
        retrain_dirs=retrain_dirs, accelerator=accelerator, seed=evaluation.seed,
        max_mia_samples=evaluation.max_mia_samples, progress=progress, batch_size=evaluation.batch_size,
        max_probe_samples=evaluation.max_probe_samples or None, samples_per_row=evaluation.samples_per_row,
        few_shot_shots=evaluation.few_shot_shots, few_shot_draws=evaluation.few_shot_draws,
        relearn_shots=evaluation.relearn_shots, relearn_steps=evaluation.relearn_steps,
        relearn_modes=evaluation.relearn_modes, require_retrain=evaluation.require_retrain, **kwargs,
    )
    report["adapter"] = target.adapter
    report["settings"]["argv"] = None if argv is None else list(argv)
    if evaluation.set_sizes:
        report["set_sizes"] = _evaluate_set_sizes(target, evaluation, adapter, test, accelerator, progress)
    if accelerator.is_main_process:
        out = Path(target.output_dir)
        json_path, md_path = write_report(report, out)
        plots = [] if evaluation.no_plots else write_plots(report, adapter, out)
        accelerator.print(summary_line(report) + f"\nwrote {json_path}, {md_path}" +
                          (f", {len(plots)} plots" if plots else ""))
    accelerator.wait_for_everyone()
    return report


def _load_target(target: "TargetArguments") -> tuple[Optional[UnlearnAdapter], dict[str, Any]]:
    """The adapter (None for --model) and the keyword arguments a plain model adds to the suite."""
    if target.adapter:
        return UnlearnAdapter.from_pretrained(target.adapter, base_model=target.base_model), {}
    kwargs: dict[str, Any] = {}
    if target.base_model:
        kwargs["base_model"] = target.base_model
    if not target.forget:
        retrain_json = Path(target.model) / "retrain.json"
        if retrain_json.is_file():  # a retrain folder knows what it was trained without
            kwargs["forget"] = json.loads(retrain_json.read_text())["class_ids"]
    return None, kwargs


def write_plots(report: dict, adapter, out: Path) -> list[str]:
    """The report's PNGs: accuracy matrix, FA/RA per class (next to base and retrain), filter sparsity.

    Example:
        >>> write_plots(report, adapter, Path("runs/eval"))   # ['runs/eval/accuracy_matrix.png', ...]
    """
    written = []
    names = report["class_names"]
    acc = report.get("accuracy") or {}
    if acc.get("matrix") is not None:
        written.append(plot_accuracy_matrix(acc["matrix"], names, out / "accuracy_matrix.png"))
    if acc.get("forget_acc_per_class") is not None:
        series = {"unlearned": {"forget_acc": acc["forget_acc_per_class"],
                                "retain_acc": acc.get("retain_acc_per_class")}}
        if acc.get("base_forget_acc_per_class") is not None:
            series["base"] = {"forget_acc": acc["base_forget_acc_per_class"],
                              "retain_acc": acc.get("base_retain_acc_per_class")}
        retrain = report.get("retrain") or {}
        if retrain.get("forget_acc_per_class") is not None:
            series["retrain"] = {"forget_acc": [np.nan if v is None else v for v in retrain["forget_acc_per_class"]],
                                 "retain_acc": [np.nan if v is None else v for v in retrain["retain_acc_per_class"]]}
        for s in series.values():
            if s.get("retain_acc") is None:
                s.pop("retain_acc")
        written.append(plot_forget_retain(series, names, out / "forget_retain.png"))
    if adapter is not None:
        share = filter_sparsity(adapter)
        if share:
            written.append(plot_filter_sparsity(share, names, out / "filter_sparsity.png",
                                                title="Filters switched off (alpha < 0.5, %), per layer and row"))
    return [str(p) for p in written]


def _evaluate_set_sizes(target, evaluation, adapter, test, accelerator, progress) -> dict:
    """``--set_sizes``: random sets of each size on the test split (written to sets.md next to the report)."""
    if adapter is None:
        raise ValueError("--set_sizes needs --adapter: a plain model forgot one fixed set.")
    loader = build_dataloader(test, adapter.image_processor, num_channels=adapter.model.config.num_channels,
                              batch_size=evaluation.batch_size, shuffle=False, seed=evaluation.seed, progress=False)
    result = evaluate_set_sizes(adapter, accelerator.prepare(loader), evaluation.set_sizes, evaluation.sets_per_size,
                                seed=evaluation.seed, accelerator=accelerator, progress=progress)
    if accelerator.is_main_process:
        out = Path(target.output_dir)
        atomic_write_text(out / "sets.md", "# Random forget sets (rows multiplied), test split\n\n"
                          + format_set_sizes(result, adapter.id2label) + "\n")
        atomic_write_json(out / "sets.json", to_jsonable(result))
        accelerator.print(format_set_sizes(result, adapter.id2label))
    return result


def summary_line(report: dict) -> str:
    """One line of the headline numbers (printed by the job).

    Example:
        >>> summary_line(report)
        'mean FA 0.00%; mean RA 89.89% (exact); drop 1.26 pt; MIA 100; ZRF 0.466; probe 97.4; 5-shot probe 78'
    """
    acc = report["accuracy"]
    parts = []
    if "mean_forget_acc" in acc:
        parts.append(f"mean FA {acc['mean_forget_acc']:.2f}%")
        if acc.get("mean_retain_acc") is not None:
            parts.append(f"mean RA {acc['mean_retain_acc']:.2f}% ({acc.get('method', 'exact')})")
        if acc.get("mean_retain_drop") is not None:
            parts.append(f"drop {acc['mean_retain_drop']:.2f} pt")
    else:
        parts.append(f"FA {acc['forget_acc']:.2f}%, RA {acc['retain_acc']:.2f}%")
    shots = report["settings"]["few_shot_shots"]
    for key, label in (("mia_efficacy", "MIA"), ("zrf", "ZRF"), ("probe", "probe"),
                       ("few_shot_probe", f"{shots}-shot probe")):
        value = (report.get(key) or {}).get("unlearned")
        if isinstance(value, list):
            vals = [v for v in value if v is not None]
            value = sum(vals) / len(vals) if vals else None
        if value is not None:
            parts.append(f"{label} {value:.3g}")
    return "; ".join(parts)
