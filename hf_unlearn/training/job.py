"""The job behind ``hf-unlearn train``: load a base model and data, untrain every class in one round,
save the adapter with its resolved config, and evaluate every row.

The job takes dataclasses (the same ones ``hf-unlearn train`` parses, see
:mod:`hf_unlearn.commands.train`)::

    from hf_unlearn.training.job import run_untraining, untraining_job_arguments

    metrics = run_untraining(*untraining_job_arguments(
        base_model="runs/base-resnet", output_dir="runs/wf-resnet", dataset="fashion_mnist", epochs=3.0))

``untraining_metrics.json`` is an evaluation report in the suite's format
(:func:`hf_unlearn.evaluation.suite.evaluate_unlearning`: ``accuracy``, ``base_accuracy``, ``settings``,
``environment``, ...) plus the round's own fields (``stop_reason``, ``untraining_cpu_time_s``,
``history``, ``convergence``, ...).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from transformers import AutoImageProcessor, AutoModelForImageClassification

from ..adapter import UnlearnAdapter, canonical_base_model_path, check_local_path
from ..commands.arguments import DataArguments, RuntimeArguments
from ..data.loaders import build_dataloader, label_array, subsample
from ..data.loading import check_labels_match, load_image_dataset
from ..evaluation.predict import evaluate_rows, evaluate_sets
from ..environment import environment_info
from ..evaluation.sets import evaluate_set_sizes, format_set_sizes, random_sets
from ..files import atomic_write_text
from ..hub.cards import write_adapter_card
from ..tuners.weight_filter import WeightFilterConfig
from .checkpoint import config_hash, find_checkpoint
from .convergence import check_validation_classes, plot_convergence, stratified_validation_indices
from .objective import forget_class_weights
from .untrain import UntrainingArguments, untrain

CONFIG_FILENAME = "untraining_config.yaml"
METRICS_FILENAME = "untraining_metrics.json"


@dataclass
class UntrainingJobArguments:
    """What the ``train`` job reads, writes and evaluates (the round's hyperparameters are
    :class:`~hf_unlearn.training.untrain.UntrainingArguments`)."""

    base_model: str = field(metadata={"help": "folder or Hub id of the trained classifier, e.g. runs/base-resnet"})
    output_dir: str = field(metadata={"help": "where the adapter, config, metrics and checkpoints go"})
    base_model_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of --base_model"})
    train_split: str = field(default="train", metadata={"help": "split the round trains on"})
    eval_split: str = field(default="test", metadata={"help": "split for the per-row report ('' to skip)"})
    streaming: bool = field(default=False, metadata={"help": "stream the training split"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "seeded subsample of the training split"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "seeded subsample of the evaluation split"})
    eval_batch_size: int = field(default=256, metadata={"help": "batch size of the evaluation and validation"})
    validation_split: Optional[str] = field(default=None, metadata={
        "help": "split measured during a convergence-driven round (eval_every > 0); default: carve a seeded, "
                "class-stratified share of the training data"})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "share of each class carved from the training data for validation"})
    validation_max_samples: int = field(default=2000, metadata={
        "help": "cap on the carved validation split (all classes together)"})
    eval_pairs: int = field(default=10, metadata={
        "help": "also evaluate this many random pairs of classes forgotten together (0 to skip)"})
    eval_set_sizes: Optional[list[int]] = field(default=None, metadata={
        "help": "also evaluate random forget sets of these sizes (rows multiplied), e.g. 2 3 4 5"})
    eval_sets_per_size: int = field(default=20, metadata={"help": "random sets per size for --eval_set_sizes"})
    target_modules: Optional[list[str]] = field(default=None, metadata={"help": "default: per model_type"})
    parametrization: Literal["sigmoid", "clamp"] = field(default="sigmoid", metadata={"help": "filter parametrization"})
    init_logit_max: float = field(default=3.0, metadata={"help": "initial filter logit (filters start open)"})
    resume: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint folder to continue from"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh in an --output_dir that holds another run (its checkpoints are deleted)"})
    report_to: Optional[str] = field(default=None, metadata={"help": "accelerate tracker(s), e.g. tensorboard"})


ARGUMENT_CLASSES = (UntrainingJobArguments, UntrainingArguments, DataArguments, RuntimeArguments)


def untraining_job_arguments(**options) -> tuple:
    """``(job, untraining, data, runtime)`` from flat options (the flag names), defaults filled in.

    Example:
        >>> job, untraining, data, runtime = untraining_job_arguments(
        ...     base_model="runs/base", output_dir="runs/wf", dataset="digits", epochs=2.0, no_progress=True)
        >>> untraining.epochs, data.dataset, runtime.no_progress
        (2.0, 'digits', True)
    """
    names = [{f.name for f in dataclasses.fields(cls) if f.init} for cls in ARGUMENT_CLASSES]
    unknown = sorted(set(options) - set().union(*names))
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    return tuple(cls(**{k: v for k, v in options.items() if k in known}) for cls, known in zip(ARGUMENT_CLASSES, names))


def job_options(job, untraining, data, runtime) -> dict:
    """The run's options as one flat mapping (flag name -> value): the recipe written next to the adapter."""
    values = {**dataclasses.asdict(job), **dataclasses.asdict(untraining), **dataclasses.asdict(data),
              **dataclasses.asdict(runtime)}
    values.pop("progress")  # on the command line: no_progress
    return values


# Options that say how a run is watched, evaluated or resumed, not what it trains: a resumed run
# may change them without becoming "another run".
NOT_IN_RUN_HASH = {
    "resume", "overwrite_output_dir", "report_to", "cpu", "num_threads", "no_progress",
    "log_every", "checkpoint_every", "eval_split", "max_eval_samples",
    "eval_batch_size", "eval_pairs", "eval_set_sizes", "eval_sets_per_size",
}
PREVIOUS_RUN_FILES = ("adapter_config.json", "adapter_model.safetensors", CONFIG_FILENAME, METRICS_FILENAME)


def run_config_hash(options: dict) -> str:
    """Hash of everything in :func:`job_options` that decides what a run trains (stored with each checkpoint)."""
    return config_hash({k: v for k, v in options.items() if k not in NOT_IN_RUN_HASH})


def run_untraining(job: UntrainingJobArguments, untraining: UntrainingArguments,
                   data: Optional[DataArguments] = None, runtime: Optional[RuntimeArguments] = None, *,
                   on_step: Optional[Callable] = None) -> dict:
    """Untrain, save and evaluate; returns the metrics also written to ``untraining_metrics.json``.

    ``on_step(step, accelerator)`` is handed to :func:`~hf_unlearn.training.untrain.untrain` (called
    after every optimiser step).

    Example:
        >>> metrics = run_untraining(UntrainingJobArguments(base_model="runs/base", output_dir="runs/wf"),
        ...                          UntrainingArguments(epochs=3.0), DataArguments(dataset="digits"))
        >>> metrics["accuracy"]["mean_forget_acc"], metrics["stop_reason"]
    """
    data, runtime = data or DataArguments(), runtime or RuntimeArguments()
    untraining = dataclasses.replace(untraining, progress=untraining.progress and not runtime.no_progress)
    untraining.validate()
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    accelerator = Accelerator(
        cpu=runtime.cpu,
        gradient_accumulation_steps=untraining.gradient_accumulation_steps,
        mixed_precision=untraining.mixed_precision or None,  # unset: what `accelerate launch` was given
        log_with=job.report_to,
        project_dir=job.output_dir,
        # even_batches=False: no padding, every example exactly once per epoch under DDP (the loop
        # keeps ranks with unequal shares in step; see hf_unlearn.training.untrain).
        dataloader_config=DataLoaderConfiguration(even_batches=False, use_seedable_sampler=True),
    )
    # Nothing is written until the inputs are checked: a failed start must not rewrite (or mix
    # into) the recipe of an adapter already in --output_dir.
    job = dataclasses.replace(job, base_model=canonical_base_model_path(job.base_model))  # recorded absolute if local
    options = job_options(job, untraining, data, runtime)
    run_hash = run_config_hash(options)
    check_output_dir(job, run_hash)
    check_local_path(job.base_model, "--base_model")
    inputs = load_inputs(job, untraining, data, accelerator)

    accelerator.wait_for_everyone()  # every rank has checked its inputs
    out = Path(job.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if job.overwrite_output_dir and not job.resume:
            clear_previous_run(out)
        write_recipe(options, out)
    if job.report_to:
        accelerator.init_trackers("hf_unlearn", config={k: v for k, v in options.items() if v is not None})
    adapter, summary, metrics = train_round(job, untraining, inputs, accelerator, run_hash, on_step)
    if job.eval_split:
        metrics.update(evaluate_round(job, untraining, data, adapter, inputs, accelerator))
    if accelerator.is_main_process:
        write_results(out, untraining, data, adapter, summary, metrics, accelerator)
    # Ends the trackers and leaves the process group cleanly (a gloo group still alive at exit can
    # abort the process in its destructor after all the work was done); the barrier first, so that
    # no rank tears down while another still communicates.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


def check_output_dir(job: UntrainingJobArguments, run_hash: str) -> None:
    """Refuse an --output_dir that would mix runs or break the base model; checks only, writes nothing.

    Another run's adapter or checkpoints there need ``--resume`` (same configuration: the
    checkpoint's stored hash must match) or ``--overwrite_output_dir`` (transformers' convention).
    """
    out = Path(job.output_dir).expanduser().resolve()
    base = Path(str(job.base_model)).expanduser()
    if base.is_dir() and base.resolve() == out:
        raise ValueError(
            f"--output_dir {job.output_dir} is the base model's folder: the adapter files would be mixed "
            "into it and plain transformers could no longer load it as a model. Choose another --output_dir."
        )
    if job.resume:
        # fails now (before the recipe is rewritten) when the checkpoint is another run's
        find_checkpoint(str(out / "checkpoints"), job.resume, run_hash)
        return
    previous = [n for n in PREVIOUS_RUN_FILES if (out / n).exists()]
    previous += ["checkpoints/"] if any((out / "checkpoints").glob("checkpoint-*")) else []
    if previous and not job.overwrite_output_dir:
        raise FileExistsError(
            f"--output_dir {job.output_dir} holds another run ({', '.join(previous)}). Pass --resume latest "
            "to continue it, --overwrite_output_dir to replace it, or choose a new --output_dir."
        )


def clear_previous_run(out: Path) -> None:
    """Remove an earlier run's checkpoints and metrics (``--overwrite_output_dir``); other files stay."""
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / METRICS_FILENAME).unlink(missing_ok=True)


def write_recipe(options: dict, out: Path) -> None:
    """``untraining_config.yaml``: every option of the run, loadable again with ``--config``."""
    atomic_write_text(out / CONFIG_FILENAME, yaml.safe_dump(options, sort_keys=True))


def classes_without_rows(data) -> list:
    """Names of classes with no training example (their rows would never be trained); warns about them.

    Counted for map-style data only (a stream would have to be read once more).
    """
    if data.streaming:
        return []
    counts = np.bincount(label_array(data.dataset, data.label_column), minlength=data.num_classes)
    missing = [str(data.class_names[i]) for i in range(data.num_classes) if counts[i] == 0]
    if missing:
        warnings.warn(
            f"No training example of {missing}: their filter rows stay at their initial values, so forgetting "
            "them does nothing. Use more training data (--max_train_samples) or a split that has them.",
            stacklevel=2,
        )
    return missing


STOP_EXPLANATIONS = {
    "epochs": "the epoch/step schedule ran out (no convergence check: eval_every = 0)",
    "converged": "every row's forget accuracy on the validation split reached the target (with "
                 "forget_confidence: no row significantly above it) and the retain accuracy stopped improving "
                 "(patience)",
    "budget": "the step budget (max_steps) ran out with every row at or under the forget target; the retain "
              "accuracy was still improving",
    "budget_target_not_met": "the step budget (max_steps) ran out BEFORE every row reached the forget target "
                             "(see the warning and convergence history); raise --max_steps",
}


def streaming_steps_per_epoch(num_rows: int, untraining: UntrainingArguments, num_processes: int) -> int:
    """Optimiser steps per epoch of a streamed split of ``num_rows`` (a stream has no length)."""
    if not num_rows:
        raise ValueError("Streaming needs a known split size: pass --max_train_samples.")
    per_rank = math.ceil(num_rows / (untraining.batch_size * num_processes))
    return max(1, math.ceil(per_rank / untraining.gradient_accumulation_steps))


def random_pairs(num_classes: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` distinct random pairs of classes (all pairs if there are fewer), seeded.

    Example:
        >>> random_pairs(3, 5)
        [[0, 1], [0, 2], [1, 2]]
    """
    pairs = [list(p) for p in itertools.combinations(range(num_classes), 2)]
    random.Random(seed).shuffle(pairs)
    return sorted(pairs[:count])



@dataclass
class RoundInputs:
    """The checked inputs of a round: the base model, its processor and the data splits."""

    base: object
    processor: object
    train_data: object
    validation_data: object
    classes_without_rows: list


def load_inputs(job: UntrainingJobArguments, untraining: UntrainingArguments, data: DataArguments,
                accelerator) -> RoundInputs:
    """Load and check the base model and the training (and validation) data; writes nothing."""
    base = AutoModelForImageClassification.from_pretrained(job.base_model, revision=job.base_model_revision,
                                                           use_safetensors=True)
    processor = AutoImageProcessor.from_pretrained(job.base_model, revision=job.base_model_revision)
    with accelerator.main_process_first():
        train_data = load_image_dataset(data.dataset, split=job.train_split, streaming=job.streaming,
                                        image_column=data.image_column, label_column=data.label_column,
                                        revision=data.dataset_revision)
    check_labels_match(train_data, base.config)
    for size in job.eval_set_sizes or []:  # a set larger than the class count fails now, not after the round
        random_sets(base.config.num_labels, size, job.eval_sets_per_size, seed=untraining.seed)
    train_data = subsample(train_data, job.max_train_samples, seed=untraining.seed)
    if train_data.num_rows == 0:
        raise ValueError(f"The {job.train_split!r} split of {data.dataset!r} is empty: nothing to untrain on.")
    missing = classes_without_rows(train_data)
    train_data, validation_data = split_validation(job, data, train_data, untraining)
    return RoundInputs(base, processor, train_data, validation_data, missing)


def train_round(job: UntrainingJobArguments, untraining: UntrainingArguments, inputs: RoundInputs, accelerator,
                run_hash: str, on_step: Optional[Callable]) -> tuple:
    """Attach the adapter, untrain it and save it; returns ``(adapter, summary, metrics)``."""
    out = Path(job.output_dir)
    num_channels = inputs.base.config.num_channels
    train_data = inputs.train_data
    loader = build_dataloader(train_data, inputs.processor, num_channels=num_channels,
                              batch_size=untraining.batch_size, shuffle=True, seed=untraining.seed,
                              progress=accelerator.is_main_process and untraining.progress)
    steps_per_epoch = None
    if job.streaming:
        steps_per_epoch = streaming_steps_per_epoch(train_data.num_rows, untraining, accelerator.num_processes)
    config = WeightFilterConfig(
        target_modules=job.target_modules, parametrization=job.parametrization, init_logit_max=job.init_logit_max,
        base_model_name_or_path=job.base_model, revision=job.base_model_revision,
    )
    adapter = UnlearnAdapter.attach(inputs.base, config, image_processor=inputs.processor)
    val_loader = None
    if inputs.validation_data is not None:
        val_loader = build_dataloader(inputs.validation_data, inputs.processor, num_channels=num_channels,
                                      batch_size=job.eval_batch_size, shuffle=False, seed=0, progress=False)
    weights = None  # inverse-frequency forget weights (None if the classes are balanced, or streaming)
    if untraining.balance_forget and not train_data.streaming:
        weights = forget_class_weights(label_array(train_data.dataset, train_data.label_column),
                                       train_data.num_classes)
    summary = untrain(
        adapter, loader, untraining, accelerator=accelerator, output_dir=str(out / "checkpoints"),
        resume_from=job.resume, steps_per_epoch=steps_per_epoch, on_step=on_step, run_config_hash=run_hash,
        validation_loader=val_loader, forget_class_weights=weights,
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        adapter.save_pretrained(out)  # before the evaluation: a failure there must not lose the round
    accelerator.wait_for_everyone()
    return adapter, summary, round_metrics(job, untraining, inputs, adapter, summary, weights, accelerator)


def round_metrics(job, untraining, inputs: RoundInputs, adapter, summary: dict, weights, accelerator) -> dict:
    """The round's own fields of ``untraining_metrics.json`` (timing, convergence, provenance)."""
    val_data = inputs.validation_data
    return {
        "untraining_time_s": round(summary["seconds"], 3),
        "untraining_cpu_time_s": round(summary["cpu_seconds"], 3),
        "steps": summary["steps"],
        "epochs": summary["epochs"],
        "stop_reason": summary["stop_reason"],
        "stop_explanation": STOP_EXPLANATIONS[summary["stop_reason"]],
        "budget_steps": summary["budget_steps"],
        "forget_class_weights": None if weights is None else [round(float(w), 4) for w in weights],
        "num_processes": summary["num_processes"],
        "history": summary["history"],
        "base_model": job.base_model,
        "dataset": inputs.train_data.source,
        "num_train_examples": inputs.train_data.num_rows,
        "num_validation_examples": None if val_data is None else val_data.num_rows,
        "validation_split": None if val_data is None else (job.validation_split or "carved from " + job.train_split),
        "convergence": summary["convergence"],
        "filters_per_class": sum(m.out_features for m in adapter.filter_layers().values()),
        "filtered_layers": len(adapter.filter_layers()),
        "seed": untraining.seed,
        "classes_without_training_rows": inputs.classes_without_rows,
        "environment": {**environment_info(), "device": str(accelerator.device)},
    }


def evaluate_round(job: UntrainingJobArguments, untraining: UntrainingArguments, data: DataArguments, adapter,
                   inputs: RoundInputs, accelerator) -> dict:
    """Every row on ``job.eval_split``, in the evaluation suite's report format (``accuracy``,
    ``base_accuracy``, ``settings``, ...), plus random pairs and set sizes when asked for."""
    eval_data = load_image_dataset(data.dataset, split=job.eval_split, image_column=data.image_column,
                                   label_column=data.label_column, revision=data.dataset_revision)
    eval_data = subsample(eval_data, job.max_eval_samples, seed=untraining.seed)
    if eval_data.num_rows == 0:
        raise ValueError(f"The {job.eval_split!r} split of {data.dataset!r} is empty: pass --eval_split '' to skip it.")
    eval_loader = build_dataloader(eval_data, inputs.processor, num_channels=inputs.base.config.num_channels,
                                   batch_size=job.eval_batch_size, shuffle=False, seed=0, progress=False)
    eval_loader = accelerator.prepare(eval_loader)
    result = evaluate_rows(adapter, eval_loader, accelerator=accelerator, progress=untraining.progress)
    names = [adapter.id2label[c] for c in range(adapter.num_classes)]
    report = {
        "title": f"Unlearning report: {job.base_model} + weight-filter adapter",
        "model": job.base_model,
        "split": job.eval_split,
        "num_classes": adapter.num_classes,
        "class_names": names,
        "forget_classes": "row c forgets class c",
        "accuracy": {**result["summary"], "method": "exact", "matrix": result["matrix"].tolist()},
        "base_accuracy": result["base_accuracy"],
        "settings": {"mode": "rows", "target": "adapter", "accuracy_method": "exact", "n_test": result["n_samples"],
                     "batch_size": job.eval_batch_size, "num_processes": accelerator.num_processes},
    }
    if job.eval_pairs:
        pairs = random_pairs(adapter.num_classes, job.eval_pairs, seed=untraining.seed)
        results = evaluate_sets(adapter, eval_loader, pairs, accelerator=accelerator, progress=False)
        report["pairs"] = {
            "pairs": results,
            "mean_forget_acc": sum(r["forget_acc"] for r in results) / len(results),
            "mean_retain_acc": sum(r["retain_acc"] for r in results) / len(results),
            "mean_retain_drop": sum(r["retain_drop"] for r in results) / len(results),
            "worst_retain_drop": max(r["retain_drop"] for r in results),
        }
    if job.eval_set_sizes:
        report["set_sizes"] = evaluate_set_sizes(adapter, eval_loader, job.eval_set_sizes, job.eval_sets_per_size,
                                                 seed=untraining.seed, accelerator=accelerator, progress=False)
    return report


def write_results(out: Path, untraining: UntrainingArguments, data: DataArguments, adapter, summary: dict,
                  metrics: dict, accelerator) -> None:
    """Main process: the convergence plot, ``untraining_metrics.json``, the card, and the summary lines."""
    if summary["convergence"] and summary["convergence"]["history"]:
        plot_convergence(summary["convergence"]["history"], out / "convergence.png",
                         target_forget_acc=untraining.target_forget_acc,
                         title=f"{data.dataset}: stopped at step {summary['steps']} ({summary['stop_reason']})")
    accelerator.print(f"untraining stopped after {summary['steps']} steps: "
                      f"{STOP_EXPLANATIONS[summary['stop_reason']]}")
    atomic_write_text(out / METRICS_FILENAME, json.dumps(metrics, indent=2, default=float))
    write_adapter_card(adapter, out)  # again, now with the results and the reproduce command
    acc = metrics.get("accuracy")
    if acc:
        accelerator.print(
            f"untrained {len(adapter.id2label)} classes in {metrics['untraining_time_s']:.1f} s; "
            f"mean forget acc {acc['mean_forget_acc']:.2f}%, mean retain acc {acc['mean_retain_acc']:.2f}% "
            f"(base {acc['mean_base_retain_acc']:.2f}%, drop {acc['mean_retain_drop']:.2f} pt, "
            f"worst {acc['worst_retain_drop']:.2f} pt); saved to {out}"
        )
    if "pairs" in metrics:
        p = metrics["pairs"]
        accelerator.print(
            f"{len(p['pairs'])} random pairs forgotten together: mean forget acc {p['mean_forget_acc']:.2f}%, "
            f"mean retain drop {p['mean_retain_drop']:.2f} pt (worst {p['worst_retain_drop']:.2f} pt)"
        )
    if "set_sizes" in metrics:
        accelerator.print(format_set_sizes(metrics["set_sizes"], adapter.id2label))


def split_validation(job: UntrainingJobArguments, data: DataArguments, train_data, untraining: UntrainingArguments):
    """``(train_data, validation_data)`` for a convergence-driven round (``eval_every > 0``), else
    ``(train_data, None)``. The validation data is the named ``--validation_split`` (every class must be
    in it) or a seeded, class-stratified share carved from the training data and removed from it.
    """
    if not untraining.eval_every:
        return train_data, None
    if job.validation_split:
        val = load_image_dataset(data.dataset, split=job.validation_split, image_column=data.image_column,
                                 label_column=data.label_column, revision=data.dataset_revision)
        val = subsample(val, job.validation_max_samples, seed=untraining.seed)
        check_validation_classes(label_array(val.dataset, val.label_column), val.num_classes, val.class_names)
        return train_data, val
    if train_data.streaming:
        raise ValueError(
            "A streamed training split cannot be carved into a class-stratified validation split: pass "
            "--validation_split <split name>, or --eval_every 0 for an epoch/step schedule without convergence check."
        )
    labels = label_array(train_data.dataset, train_data.label_column)
    train_idx, val_idx = stratified_validation_indices(
        labels, train_data.num_classes, fraction=job.validation_fraction,
        max_samples=job.validation_max_samples, seed=untraining.seed,
    )
    return (dataclasses.replace(train_data, dataset=train_data.dataset.select(train_idx), num_rows=len(train_idx)),
            dataclasses.replace(train_data, dataset=train_data.dataset.select(val_idx), num_rows=len(val_idx)))
