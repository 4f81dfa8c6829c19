"""The job behind ``accelerate launch recipes/train.py``: load a base model and data, untrain every
class in one round, save the adapter with its resolved config, and evaluate every row.

```bash
accelerate launch recipes/train.py --config recipes/configs/fashion_mnist_resnet.yaml
```
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .untrain import UntrainingArguments

CONFIG_FILENAME = "untraining_config.yaml"
METRICS_FILENAME = "untraining_metrics.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        description="Untrain every class of a classifier in one round (weight-filter adapter).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML file pre-filling these options (flags win)")
    parser.add_argument("--base_model", default=None,
                        help="folder or Hub id of the trained classifier, e.g. runs/base-resnet or microsoft/resnet-50")
    parser.add_argument("--base_model_revision", default=None)
    parser.add_argument("--output_dir", default=None, help="where the adapter, config, metrics and checkpoints go")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, digits, a local folder/parquet, or a Hub id")
    data.add_argument("--dataset_revision", default=None)
    data.add_argument("--train_split", default="train")
    data.add_argument("--eval_split", default="test", help="split for the per-row report ('' to skip)")
    data.add_argument("--image_column", default=None)
    data.add_argument("--label_column", default=None)
    data.add_argument("--streaming", action="store_true")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument("--eval_batch_size", type=int, default=256)
    data.add_argument("--validation_split", default=None,
                      help="split measured during a convergence-driven round (eval_every > 0); default: carve a "
                           "seeded, class-stratified share of the training data")
    data.add_argument("--validation_fraction", type=float, default=0.1,
                      help="share of each class carved from the training data for validation")
    data.add_argument("--validation_max_samples", type=int, default=2000,
                      help="cap on the carved validation split (all classes together)")
    data.add_argument("--eval_pairs", type=int, default=10,
                      help="also evaluate this many random pairs of classes forgotten together (0 to skip)")
    data.add_argument("--eval_set_sizes", type=int, nargs="+", default=None,
                      help="also evaluate random forget sets of these sizes (rows multiplied), e.g. 2 3 4 5")
    data.add_argument("--eval_sets_per_size", type=int, default=20, help="random sets per size for --eval_set_sizes")
    adapter = parser.add_argument_group("adapter")
    adapter.add_argument("--target_modules", nargs="+", default=None, help="default: per model_type")
    adapter.add_argument("--parametrization", choices=["sigmoid", "clamp"], default="sigmoid")
    adapter.add_argument("--init_logit_max", type=float, default=3.0)
    train = parser.add_argument_group("untraining (hf_unlearn.training.untrain.UntrainingArguments)")
    for f in fields(UntrainingArguments):
        if f.name == "progress":
            continue
        kind = _parse_bool if isinstance(f.default, bool) else type(f.default)
        train.add_argument(f"--{f.name}", type=kind, default=f.default)
    run = parser.add_argument_group("run")
    run.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from")
    run.add_argument("--overwrite_output_dir", action="store_true",
                     help="start afresh in an --output_dir that holds another run (its checkpoints are deleted)")
    run.add_argument("--report_to", default=None, help="accelerate tracker(s), e.g. tensorboard")
    run.add_argument("--cpu", action="store_true", help="force CPU (gives gloo DDP on a CPU box)")
    run.add_argument("--num_threads", type=int, default=None)
    run.add_argument("--no_progress", action="store_true")
    run.add_argument("--crash_after_step", type=int, default=None, help=argparse.SUPPRESS)  # tests only
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``--config file.yaml`` pre-fills defaults; flags given on the command line win."""
    from ..run_utils import parse_with_config

    parser = build_parser()
    args = parse_with_config(parser, argv, adjust=_epochs_on_command_line)
    if not args.base_model or not args.output_dir:
        parser.error("--base_model and --output_dir are required (on the command line or in --config)")
    try:
        untraining_arguments(args)  # unknown objective names etc.: a usage error, before anything is written
    except ValueError as err:
        parser.error(str(err))
    return args


def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _epochs_on_command_line(values: dict, argv: list) -> dict:
    """``--epochs N`` on the command line over a convergence-driven config means an epoch schedule:
    the config's step budget and convergence check are switched off unless also given as flags."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    if "--epochs" in given:
        if "--eval_every" not in given:
            values["eval_every"] = 0
        if "--max_steps" not in given:
            values["max_steps"] = 0
    return values


def resolve_args(values: Optional[Mapping[str, Any]] = None, **overrides) -> argparse.Namespace:
    """Defaults filled in for a plain dict of options (as tests pass them)."""
    args = vars(build_parser().parse_args([]))
    given = {**(values or {}), **overrides}
    unknown = sorted(set(given) - set(args))
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    args.update(given)
    return argparse.Namespace(**args)


def untraining_arguments(args: argparse.Namespace) -> UntrainingArguments:
    values = {f.name: getattr(args, f.name) for f in fields(UntrainingArguments) if hasattr(args, f.name)}
    values["progress"] = not args.no_progress
    return UntrainingArguments(**values)


def run(args: argparse.Namespace) -> dict:
    """Untrain, save and evaluate; returns the metrics also written to ``untraining_metrics.json``."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..adapter import UnlearnAdapter, canonical_base_model_path, check_local_path
    from ..hub.cards import write_adapter_card
    from ..run_utils import machine_info, package_versions, write_yaml_config
    from ..data.loaders import build_dataloader, subsample
    from ..data.loading import check_labels_match, load_image_dataset
    from .untrain import untrain
    from ..tuners.weight_filter import WeightFilterConfig

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    targs = untraining_arguments(args)
    accelerator = Accelerator(
        cpu=args.cpu,
        gradient_accumulation_steps=targs.gradient_accumulation_steps,
        mixed_precision=targs.mixed_precision or None,  # unset: what `accelerate launch` was given
        log_with=args.report_to,
        project_dir=args.output_dir,
        # even_batches=False: no padding, every example exactly once per epoch under DDP (the loop
        # keeps ranks with unequal shares in step; see hf_unlearn.training.untrain).
        dataloader_config=DataLoaderConfiguration(even_batches=False, use_seedable_sampler=True),
    )
    out = Path(args.output_dir)
    # Nothing is written until the inputs are checked: a failed start must not rewrite (or mix
    # into) the recipe of an adapter already in --output_dir.
    args.base_model = canonical_base_model_path(args.base_model)  # recorded absolute if local
    run_hash = run_config_hash(args)
    check_output_dir(args, run_hash)
    check_local_path(args.base_model, "--base_model")

    base = AutoModelForImageClassification.from_pretrained(
        args.base_model, revision=args.base_model_revision, use_safetensors=True
    )
    processor = AutoImageProcessor.from_pretrained(args.base_model, revision=args.base_model_revision)
    with accelerator.main_process_first():
        train_data = load_image_dataset(
            args.dataset, split=args.train_split, streaming=args.streaming, image_column=args.image_column,
            label_column=args.label_column, revision=args.dataset_revision,
        )
    check_labels_match(train_data, base.config)
    if args.eval_set_sizes:  # a set larger than the class count fails now, not after the round
        from ..evaluation.sets import random_sets

        for size in args.eval_set_sizes:
            random_sets(base.config.num_labels, size, args.eval_sets_per_size, seed=targs.seed)
    train_data = subsample(train_data, args.max_train_samples, seed=args.seed)
    if train_data.num_rows == 0:
        raise ValueError(f"The {args.train_split!r} split of {args.dataset!r} is empty: nothing to untrain on.")
    untrained_classes = classes_without_rows(train_data)

    train_data, val_data = split_validation(args, train_data, targs)

    accelerator.wait_for_everyone()  # every rank has checked its inputs
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if args.overwrite_output_dir and not args.resume:
            clear_previous_run(out)
        write_yaml_config(args, str(out / CONFIG_FILENAME))
    if args.report_to:
        accelerator.init_trackers("hf_unlearn", config={k: v for k, v in vars(args).items() if v is not None})
    num_channels = base.config.num_channels
    loader = build_dataloader(train_data, processor, num_channels=num_channels, batch_size=targs.batch_size,
                              shuffle=True, seed=targs.seed, progress=accelerator.is_main_process and targs.progress)
    steps_per_epoch = None
    if args.streaming:
        if not train_data.num_rows:
            raise ValueError("Streaming needs a known split size: pass --max_train_samples.")
        import math

        per_rank = math.ceil(train_data.num_rows / (targs.batch_size * accelerator.num_processes))
        steps_per_epoch = max(1, math.ceil(per_rank / targs.gradient_accumulation_steps))

    config = WeightFilterConfig(
        target_modules=args.target_modules, parametrization=args.parametrization,
        init_logit_max=args.init_logit_max, base_model_name_or_path=args.base_model,
        revision=args.base_model_revision,
    )
    adapter = UnlearnAdapter.attach(base, config, image_processor=processor)
    val_loader = None
    if val_data is not None:
        val_loader = build_dataloader(val_data, processor, num_channels=num_channels, batch_size=args.eval_batch_size,
                                      shuffle=False, seed=0, progress=False)
    weights = _forget_class_weights(train_data, targs)
    summary = untrain(
        adapter, loader, targs, accelerator=accelerator, output_dir=str(out / "checkpoints"),
        resume_from=args.resume, steps_per_epoch=steps_per_epoch, _crash_after_step=args.crash_after_step,
        run_config_hash=run_hash,
        validation_loader=val_loader, forget_class_weights=weights,
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        adapter.save_pretrained(out)  # before the evaluation: a failure there must not lose the round
    accelerator.wait_for_everyone()
    metrics = {
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
        "base_model": args.base_model,
        "dataset": args.dataset,
        "num_train_examples": train_data.num_rows,
        "num_validation_examples": None if val_data is None else val_data.num_rows,
        "validation_split": None if val_data is None else (args.validation_split or "carved from " + args.train_split),
        "convergence": summary["convergence"],
        "filters_per_class": sum(m.out_features for m in adapter.filter_layers().values()),
        "filtered_layers": len(adapter.filter_layers()),
        "seed": targs.seed,
        "classes_without_training_rows": untrained_classes,
        "versions": package_versions(),
        "machine": machine_info(accelerator),
    }
    if args.eval_split:
        from ..evaluation.predict import evaluate_rows

        eval_data = load_image_dataset(args.dataset, split=args.eval_split, image_column=args.image_column,
                                       label_column=args.label_column, revision=args.dataset_revision)
        eval_data = subsample(eval_data, args.max_eval_samples, seed=args.seed)
        if eval_data.num_rows == 0:
            raise ValueError(f"The {args.eval_split!r} split of {args.dataset!r} is empty: pass --eval_split '' to skip it.")
        eval_loader = build_dataloader(eval_data, processor, num_channels=num_channels,
                                       batch_size=args.eval_batch_size, shuffle=False, seed=0, progress=False)
        eval_loader = accelerator.prepare(eval_loader)
        result = evaluate_rows(adapter, eval_loader, accelerator=accelerator, progress=targs.progress)
        s = result["summary"]
        metrics["evaluation"] = {
            "split": args.eval_split,
            "n_samples": result["n_samples"],
            "base_accuracy": result["base_accuracy"],
            "mean_forget_acc": s["mean_forget_acc"],
            "mean_retain_acc": s["mean_retain_acc"],
            "mean_base_retain_acc": s["mean_base_retain_acc"],
            "mean_retain_drop": s["mean_retain_drop"],
            "worst_retain_drop": s["worst_retain_drop"],
            "worst_drop_row": s["worst_drop_row"],
            "forget_acc_per_class": s["forget_acc_per_class"],
            "retain_acc_per_class": s["retain_acc_per_class"],
            "base_retain_acc_per_class": s["base_retain_acc_per_class"],
            "matrix": result["matrix"].tolist(),
        }
        if args.eval_pairs:
            from ..evaluation.predict import evaluate_sets

            pairs = random_pairs(adapter.num_classes, args.eval_pairs, seed=targs.seed)
            results = evaluate_sets(adapter, eval_loader, pairs, accelerator=accelerator, progress=False)
            metrics["evaluation"]["pairs"] = {
                "pairs": results,
                "mean_forget_acc": sum(r["forget_acc"] for r in results) / len(results),
                "mean_retain_acc": sum(r["retain_acc"] for r in results) / len(results),
                "mean_retain_drop": sum(r["retain_drop"] for r in results) / len(results),
                "worst_retain_drop": max(r["retain_drop"] for r in results),
            }
        if args.eval_set_sizes:
            from ..evaluation.sets import evaluate_set_sizes

            metrics["evaluation"]["set_sizes"] = evaluate_set_sizes(
                adapter, eval_loader, args.eval_set_sizes, args.eval_sets_per_size, seed=targs.seed,
                accelerator=accelerator, progress=False)
    if accelerator.is_main_process:
        if summary["convergence"] and summary["convergence"]["history"]:
            from .convergence import plot_convergence

            plot_convergence(summary["convergence"]["history"], out / "convergence.png",
                             target_forget_acc=targs.target_forget_acc,
                             title=f"{args.dataset}: stopped at step {summary['steps']} ({summary['stop_reason']})")
        accelerator.print(f"untraining stopped after {summary['steps']} steps: "
                          f"{STOP_EXPLANATIONS[summary['stop_reason']]}")
        tmp = out / (METRICS_FILENAME + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2, default=float))
        os.replace(tmp, out / METRICS_FILENAME)
        write_adapter_card(adapter, out)  # again, now with the results and the reproduce command
        ev = metrics.get("evaluation")
        if ev:
            accelerator.print(
                f"untrained {len(adapter.id2label)} classes in {metrics['untraining_time_s']:.1f} s; "
                f"mean forget acc {ev['mean_forget_acc']:.2f}%, mean retain acc {ev['mean_retain_acc']:.2f}% "
                f"(base {ev['mean_base_retain_acc']:.2f}%, drop {ev['mean_retain_drop']:.2f} pt, "
                f"worst {ev['worst_retain_drop']:.2f} pt); saved to {out}"
            )
            if "pairs" in ev:
                p = ev["pairs"]
                accelerator.print(
                    f"{len(p['pairs'])} random pairs forgotten together: mean forget acc {p['mean_forget_acc']:.2f}%, "
                    f"mean retain drop {p['mean_retain_drop']:.2f} pt (worst {p['worst_retain_drop']:.2f} pt)"
                )
            if "set_sizes" in ev:
                from ..evaluation.sets import format_set_sizes

                accelerator.print(format_set_sizes(ev["set_sizes"], adapter.id2label))
    if args.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return metrics


# Options that say how a run is watched, evaluated or resumed, not what it trains: a resumed run
# may change them without becoming "another run".
_NOT_IN_RUN_HASH = {
    "config", "resume", "overwrite_output_dir", "report_to", "cpu", "num_threads", "no_progress",
    "crash_after_step", "log_every", "checkpoint_every", "eval_split", "max_eval_samples",
    "eval_batch_size", "eval_pairs", "eval_set_sizes", "eval_sets_per_size",
}
PREVIOUS_RUN_FILES = ("adapter_config.json", "adapter_model.safetensors", CONFIG_FILENAME, METRICS_FILENAME)


def run_config_hash(args: argparse.Namespace) -> str:
    """Hash of everything that decides what a run trains (stored with each checkpoint)."""
    from .untrain import config_hash

    return config_hash({k: v for k, v in vars(args).items() if k not in _NOT_IN_RUN_HASH})


def check_output_dir(args: argparse.Namespace, run_hash: str) -> None:
    """Refuse an --output_dir that would mix runs or break the base model; checks only, writes nothing.

    Another run's adapter or checkpoints there need ``--resume`` (same configuration: the
    checkpoint's stored hash must match) or ``--overwrite_output_dir`` (transformers' convention).
    """
    from .untrain import _find_checkpoint

    out = Path(args.output_dir).expanduser().resolve()
    base = Path(str(args.base_model)).expanduser()
    if base.is_dir() and base.resolve() == out:
        raise ValueError(
            f"--output_dir {args.output_dir} is the base model's folder: the adapter files would be mixed "
            "into it and plain transformers could no longer load it as a model. Choose another --output_dir."
        )
    if args.resume:
        # fails now (before the recipe is rewritten) when the checkpoint is another run's
        _find_checkpoint(str(out / "checkpoints"), args.resume, run_hash)
        return
    previous = [n for n in PREVIOUS_RUN_FILES if (out / n).exists()]
    previous += ["checkpoints/"] if any((out / "checkpoints").glob("checkpoint-*")) else []
    if previous and not args.overwrite_output_dir:
        raise FileExistsError(
            f"--output_dir {args.output_dir} holds another run ({', '.join(previous)}). Pass --resume latest "
            "to continue it, --overwrite_output_dir to replace it, or choose a new --output_dir."
        )


def clear_previous_run(out: Path) -> None:
    """Remove an earlier run's checkpoints and metrics (``--overwrite_output_dir``); other files stay."""
    import shutil

    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / METRICS_FILENAME).unlink(missing_ok=True)


def classes_without_rows(data) -> list:
    """Names of classes with no training example (their rows would never be trained); warns about them.

    Counted for map-style data only (a stream would have to be read once more).
    """
    import warnings

    if data.streaming:
        return []
    from ..data.loaders import label_array

    import numpy as np

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
    "converged": "every row's forget accuracy on the validation split reached the target and the retain "
                 "accuracy stopped improving (patience)",
    "budget": "the step budget (max_steps) ran out with every row at or under the forget target; the retain "
              "accuracy was still improving",
    "budget_target_not_met": "the step budget (max_steps) ran out BEFORE every row reached the forget target "
                             "(see the warning and convergence history); raise --max_steps",
}


def split_validation(args: argparse.Namespace, train_data, targs: UntrainingArguments):
    """``(train_data, validation_data)`` for a convergence-driven round (``eval_every > 0``), else
    ``(train_data, None)``. The validation data is the named ``--validation_split`` (every class must be
    in it) or a seeded, class-stratified share carved from the training data and removed from it.
    """
    from dataclasses import replace

    from .convergence import check_validation_classes, stratified_validation_indices
    from ..data.loaders import label_array, subsample
    from ..data.loading import load_image_dataset

    if not targs.eval_every:
        return train_data, None
    if args.validation_split:
        val = load_image_dataset(args.dataset, split=args.validation_split, image_column=args.image_column,
                                 label_column=args.label_column, revision=args.dataset_revision)
        val = subsample(val, args.validation_max_samples, seed=targs.seed)
        check_validation_classes(label_array(val.dataset, val.label_column), val.num_classes, val.class_names)
        return train_data, val
    if train_data.streaming:
        raise ValueError(
            "A streamed training split cannot be carved into a class-stratified validation split: pass "
            "--validation_split <split name>, or --eval_every 0 for an epoch/step schedule without convergence check."
        )
    labels = label_array(train_data.dataset, train_data.label_column)
    train_idx, val_idx = stratified_validation_indices(
        labels, train_data.num_classes, fraction=args.validation_fraction,
        max_samples=args.validation_max_samples, seed=targs.seed,
    )
    return (replace(train_data, dataset=train_data.dataset.select(train_idx), num_rows=len(train_idx)),
            replace(train_data, dataset=train_data.dataset.select(val_idx), num_rows=len(val_idx)))


def _forget_class_weights(train_data, targs: UntrainingArguments):
    """Inverse-frequency weights of the forget term (None if the classes are balanced, or streaming)."""
    if not targs.balance_forget or train_data.streaming:
        return None
    from ..data.loaders import label_array
    from .untrain import forget_class_weights

    return forget_class_weights(label_array(train_data.dataset, train_data.label_column), train_data.num_classes)


def random_pairs(num_classes: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` distinct random pairs of classes (all pairs if there are fewer), seeded."""
    import itertools
    import random

    pairs = [list(p) for p in itertools.combinations(range(num_classes), 2)]
    random.Random(seed).shuffle(pairs)
    return sorted(pairs[:count])


def main(argv: Optional[Sequence[str]] = None) -> dict:
    from ..run_utils import end_distributed

    metrics = run(parse_args(argv))
    end_distributed()
    return metrics
