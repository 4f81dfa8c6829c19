"""Train (or fine-tune) the base image classifier that unlearning later starts from.

The loop behind ``recipes/train_base.py``, importable so that tests and other recipes can call it:

```py
>>> from hf_unlearn.training.base import train_base
>>> metrics = train_base({"preset": "resnet-micro", "dataset": "digits", "epochs": 2,
...                       "output_dir": "runs/base-digits"})
>>> metrics["test_accuracy"]
0.9...
```

Either a preset from :mod:`hf_unlearn.presets` is trained from scratch (``preset``), or a Hub/local
checkpoint is fine-tuned (``model_name_or_path``; its head is replaced to fit the dataset's
classes). It runs on one process or under ``accelerate launch`` (DDP): one
``accelerator.prepare``, ``accelerator.backward``, ``gather_for_metrics`` for the test accuracy.
The output directory holds the model and image processor (``save_pretrained``, safetensors),
``metrics.json`` and the resolved ``train_base_config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

from ..run_utils import end_distributed, machine_info, package_versions, parse_with_config, write_yaml_config

__all__ = ["build_parser", "parse_args", "resolve_args", "train_base", "evaluate_accuracy", "main",
           "CONFIG_FILENAME", "METRICS_FILENAME"]

CONFIG_FILENAME = "train_base_config.yaml"
METRICS_FILENAME = "metrics.json"
SCHEDULERS = ("cosine", "onecycle", "linear", "constant")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        description="Train a base image classifier (a preset from scratch, or fine-tune a Hub/local checkpoint).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=None,
                        help="YAML file whose keys pre-fill these options (command-line flags win)")
    model = parser.add_argument_group("model (pass exactly one of --preset / --model_name_or_path)")
    model.add_argument("--preset", default=None,
                       help="preset trained from scratch, e.g. resnet-tiny, convnext-tiny28, vit-tiny28, resnet-micro")
    model.add_argument("--model_name_or_path", default=None,
                       help="Hub id or local directory of a checkpoint to fine-tune, e.g. google/vit-base-patch16-224")
    model.add_argument("--model_revision", default=None, help="Hub revision of --model_name_or_path")
    model.add_argument("--image_size", type=int, default=None, help="input size for a preset (default: its own)")
    model.add_argument("--image_mean", type=float, nargs="+", default=None,
                       help="normalisation mean for a preset (default: the dataset's, else Fashion-MNIST's)")
    model.add_argument("--image_std", type=float, nargs="+", default=None, help="normalisation std for a preset")
    model.add_argument("--num_channels", type=int, default=None, choices=(1, 3),
                       help="input channels for a preset (default 3: grey images are converted to RGB, as transformers pipelines feed RGB)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="fashion_mnist",
                      help="fashion_mnist, digits, a local imagefolder/parquet path, or a Hub dataset id")
    data.add_argument("--dataset_revision", default=None)
    data.add_argument("--train_split", default="train")
    data.add_argument("--eval_split", default="test")
    data.add_argument("--image_column", default=None, help="default: detected (the datasets.Image column)")
    data.add_argument("--label_column", default=None, help="default: detected (the datasets.ClassLabel column)")
    data.add_argument("--streaming", action="store_true", help="stream the dataset instead of loading it")
    data.add_argument("--max_train_samples", type=int, default=None, help="random subset for quick runs")
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument("--exclude_classes", type=int, nargs="+", default=None,
                      help="train without these class ids; the model keeps every output (the retrain reference)")
    data.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=8)
    train.add_argument("--batch_size", type=int, default=128, help="per process")
    train.add_argument("--eval_batch_size", type=int, default=512)
    train.add_argument("--learning_rate", type=float, default=None,
                       help="peak learning rate (default: 2e-3 for a preset, 5e-5 for fine-tuning)")
    train.add_argument("--weight_decay", type=float, default=0.05)
    train.add_argument("--lr_scheduler", choices=SCHEDULERS, default="onecycle")
    train.add_argument("--warmup_ratio", type=float, default=0.1, help="warm-up fraction (cosine, linear, onecycle)")
    train.add_argument("--label_smoothing", type=float, default=0.0)
    train.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--num_threads", type=int, default=None,
                       help="torch.set_num_threads (CPU). On a small machine shared with other jobs, 1 can be "
                            "several times faster than one thread per core (threads then wait for each other)")
    train.add_argument("--cpu", action="store_true", help="force CPU (also gives real gloo DDP on a CPU box)")
    train.add_argument("--output_dir", default=None, help="where the model, metrics.json and config go (required)")
    train.add_argument("--no_progress", action="store_true", help="disable the tqdm progress bars")
    return parser


def _explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set:
    """The options actually given on the command line (not defaults)."""
    probe = argparse.ArgumentParser(allow_abbrev=False, add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kwargs = {"dest": action.dest}
            if isinstance(action, argparse._StoreTrueAction):
                kwargs["action"] = "store_true"
            else:
                kwargs["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kwargs)
    known, _ = probe.parse_known_args(argv)
    return set(vars(known))




def drop_replaced_alternative(values: dict, explicit: set) -> dict:
    """--preset and --model_name_or_path are alternatives: the one given on the command line
    replaces the other coming from a YAML file (or a base model's saved config)."""
    if "preset" in explicit:
        values.pop("model_name_or_path", None)
    if "model_name_or_path" in explicit:
        values.pop("preset", None)
    return values


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line; ``--config file.yaml`` pre-fills defaults, explicit flags win."""
    parser = build_parser()
    args = parse_with_config(
        parser, argv, adjust=lambda values, given: drop_replaced_alternative(values, _explicit_dests(parser, given)))
    try:
        return resolve_args(args)
    except ValueError as err:
        parser.error(str(err))


def resolve_args(args: Union[argparse.Namespace, Mapping[str, Any], None] = None, **overrides) -> argparse.Namespace:
    """Fill defaults and check an args namespace or plain dict (as tests pass it)."""
    values = vars(build_parser().parse_args([]))
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    given.update(overrides)
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    values.update(given)
    args = argparse.Namespace(**values)
    if bool(args.preset) == bool(args.model_name_or_path):
        raise ValueError("pass exactly one of --preset (train from scratch) and --model_name_or_path (fine-tune)")
    if not args.output_dir:
        raise ValueError("--output_dir is required")
    preset_only = (args.image_size, args.image_mean, args.image_std, args.num_channels)
    if args.model_name_or_path and any(v is not None for v in preset_only):
        raise ValueError("--image_size/--image_mean/--image_std/--num_channels apply to presets; a checkpoint "
                         "brings its own processor and input channels")
    if args.learning_rate is None:
        args.learning_rate = 2e-3 if args.preset else 5e-5
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch_size must be positive")
    return args


def _load_data(args, split: str, max_samples: Optional[int]):
    from ..data.loaders import subsample
    from ..data.loading import load_image_dataset

    data = load_image_dataset(
        args.dataset, split=split, streaming=args.streaming, image_column=args.image_column,
        label_column=args.label_column, revision=args.dataset_revision,
    )
    return subsample(data, max_samples, seed=args.seed)


def _without_classes(data, classes):
    """The training split minus ``classes`` (ids unchanged), and the class counts left in it."""
    import numpy as np

    from ..data.loaders import class_subset

    ids = sorted({int(c) for c in classes})
    bad = [c for c in ids if not 0 <= c < data.num_classes]
    if bad:
        raise ValueError(f"--exclude_classes {bad}: class ids must be in 0..{data.num_classes - 1}")
    if data.streaming:
        raise ValueError("--exclude_classes needs a map-style training split (not --streaming)")
    data = class_subset(data, ids, keep=False)
    counts = np.bincount(np.asarray(data.dataset[data.label_column], dtype=np.int64), minlength=data.num_classes)
    if counts.sum() == 0:
        raise ValueError(f"nothing is left of the training split once classes {ids} are removed")
    return data, counts.tolist()


def _build_model(args, data):
    id2label = data.id2label
    if args.preset:
        from ..presets import DATASET_STATS, build_preset

        mean, std = args.image_mean, args.image_std
        if mean is None and args.dataset in DATASET_STATS:
            mean, std = DATASET_STATS[args.dataset]
        kwargs = {"image_size": args.image_size, "num_channels": args.num_channels or 3}
        if mean is not None:
            kwargs.update(image_mean=mean, image_std=std if std is not None else [1.0] * len(mean))
        return build_preset(args.preset, num_labels=data.num_classes, id2label=id2label, **kwargs)

    from transformers import AutoImageProcessor, AutoModelForImageClassification

    # trust_remote_code is never set: only architectures shipped with transformers are loaded.
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, revision=args.model_revision)
    model = AutoModelForImageClassification.from_pretrained(
        # id2label alone sets num_labels (passing both makes transformers warn about the
        # checkpoint's old id2label); a head of another size is re-initialised.
        args.model_name_or_path, revision=args.model_revision, id2label=id2label, label2id=data.label2id,
        ignore_mismatched_sizes=True,
    )
    return model, processor


def _optimizer(model, args):
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # no weight decay on biases and normalisation weights (the usual AdamW recipe)
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate)


def _scheduler(optimizer, args, total_steps: int):
    import torch
    from transformers import get_scheduler

    warmup = int(round(args.warmup_ratio * total_steps))
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}.get(args.lr_scheduler)
    if args.lr_scheduler == "onecycle":
        if total_steps < 4:  # OneCycleLR needs at least one step in each phase
            return get_scheduler("constant", optimizer)
        # warm-up of at least 2 steps: OneCycleLR divides by the length of each phase
        pct_start = min(max(args.warmup_ratio, 2.0 / total_steps), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=args.learning_rate, total_steps=total_steps, pct_start=pct_start,
            anneal_strategy="cos",
        )
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def evaluate_accuracy(model, loader, accelerator, num_classes: int) -> dict:
    """Top-1 accuracy and per-class accuracy over ``loader`` (gathered across processes).

    Returns ``{"accuracy": float, "per_class": [acc or None per class], "count": n}``.
    """
    import torch

    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.long)
    total = torch.zeros(num_classes, dtype=torch.long)
    with torch.no_grad():
        for batch in loader:
            logits = model(pixel_values=batch["pixel_values"]).logits
            predictions, labels = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            predictions, labels = predictions.cpu(), labels.cpu()
            total += torch.bincount(labels, minlength=num_classes)
            correct += torch.bincount(labels[predictions == labels], minlength=num_classes)
    count = int(total.sum())
    per_class = [(int(c) / int(t)) if t else None for c, t in zip(correct, total)]
    return {"accuracy": int(correct.sum()) / max(count, 1), "per_class": per_class, "count": count}








def train_base(args: Union[argparse.Namespace, Mapping[str, Any], None] = None, **overrides) -> dict:
    """Train a base classifier and save it; returns the metrics written to ``metrics.json``.

    ``args`` is an ``argparse.Namespace`` from :func:`parse_args` or a plain dict of the same
    option names (missing ones take the command-line defaults); keyword overrides win.

    Example:

    ```py
    >>> metrics = train_base({"preset": "resnet-tiny", "dataset": "fashion_mnist", "epochs": 8,
    ...                       "output_dir": "runs/base-resnet"})
    >>> metrics["test_accuracy"], metrics["train_time_s"]
    ```
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from ..data.loaders import build_dataloader, num_batches
    from ..data.loading import check_labels_match

    args = resolve_args(args, **overrides)
    start_wall = time.perf_counter()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(cpu=args.cpu)
    main_process = accelerator.is_main_process
    progress = accelerator.is_local_main_process and not args.no_progress
    set_seed(args.seed)
    if main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        write_yaml_config(args, os.path.join(args.output_dir, CONFIG_FILENAME))

    # Local datasets write an Arrow cache: let one process build it, the others then read it.
    with accelerator.main_process_first():
        train_data = _load_data(args, args.train_split, args.max_train_samples)
        eval_data = _load_data(args, args.eval_split, args.max_eval_samples)
    if train_data.num_rows is None:
        raise ValueError(
            f"the length of the streamed split {args.train_split!r} of {args.dataset!r} is unknown, so the "
            "learning-rate schedule cannot be laid out: pass --max_train_samples"
        )
    if eval_data.class_names != train_data.class_names:
        raise ValueError(f"the {args.train_split!r} and {args.eval_split!r} splits have different classes")
    train_class_counts = None
    if args.exclude_classes:
        train_data, train_class_counts = _without_classes(train_data, args.exclude_classes)

    set_seed(args.seed)  # model init does not depend on how much randomness data loading used
    model, image_processor = _build_model(args, train_data)
    check_labels_match(train_data, model.config)
    num_channels = model.config.num_channels

    preprocess_start = time.perf_counter()
    common = {"image_processor": image_processor, "num_channels": num_channels, "progress": progress,
              "num_workers": args.num_workers}
    train_loader = build_dataloader(train_data, batch_size=args.batch_size, shuffle=True, seed=args.seed, **common)
    eval_loader = build_dataloader(eval_data, batch_size=args.eval_batch_size, shuffle=False, seed=args.seed,
                                   **common)
    preprocess_s = time.perf_counter() - preprocess_start

    optimizer = _optimizer(model, args)
    # accelerate steps a prepared scheduler once per process for every optimizer step, so the
    # schedule is laid out in single-process steps: per-process batches x processes.
    batches = num_batches(train_data.num_rows, args.batch_size)
    steps_per_epoch = math.ceil(batches / accelerator.num_processes)
    total_steps = args.epochs * steps_per_epoch * accelerator.num_processes
    scheduler = _scheduler(optimizer, args, total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )

    history = []
    train_time = 0.0
    for epoch in range(args.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)  # new shuffle order per epoch (streaming buffers too)
        model.train()
        epoch_start = time.perf_counter()
        loss_sum, loss_count = torch.zeros(()), 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not progress,
                   dynamic_ncols=True)
        for step, batch in enumerate(train_loader):
            logits = model(pixel_values=batch["pixel_values"]).logits
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=args.label_smoothing)
            accelerator.backward(loss)
            if args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float().cpu()
            loss_count += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        epoch_s = time.perf_counter() - epoch_start
        train_time += epoch_s
        mean_loss = accelerator.reduce(loss_sum.to(accelerator.device) / max(loss_count, 1), reduction="mean")
        history.append({"epoch": epoch + 1, "train_loss": float(mean_loss), "seconds": round(epoch_s, 3)})
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train loss {float(mean_loss):.4f}, {epoch_s:.1f} s")

    eval_start = time.perf_counter()
    result = evaluate_accuracy(model, eval_loader, accelerator, train_data.num_classes)
    eval_s = time.perf_counter() - eval_start

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(args.output_dir, is_main_process=main_process, save_function=accelerator.save)
    versions = package_versions()
    metrics = {
        "test_accuracy": result["accuracy"],
        "eval_split": args.eval_split,
        "num_eval_examples": result["count"],
        "per_class_accuracy": dict(zip(train_data.class_names, result["per_class"])),
        "train_time_s": round(train_time, 3),
        "epoch_times_s": [h["seconds"] for h in history],
        "preprocess_time_s": round(preprocess_s, 3),
        "eval_time_s": round(eval_s, 3),
        "history": history,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "dataset": args.dataset,
        "train_split": args.train_split,
        "num_train_examples": train_data.num_rows,
        "excluded_classes": args.exclude_classes,
        "train_class_counts": train_class_counts,
        "preset": args.preset,
        "model_name_or_path": args.model_name_or_path,
        "model_type": unwrapped.config.model_type,
        "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
        "class_names": list(train_data.class_names),
        "versions": versions,
        "torch_version": versions["torch"],
        "transformers_version": versions["transformers"],
        "machine": machine_info(accelerator),
    }
    if main_process:
        image_processor.save_pretrained(args.output_dir)
        metrics["total_wall_time_s"] = round(time.perf_counter() - start_wall, 3)
        with open(os.path.join(args.output_dir, METRICS_FILENAME), "w") as f:
            json.dump(metrics, f, indent=2)
        accelerator.print(f"test accuracy {metrics['test_accuracy']:.4f} ({result['count']} examples); "
                          f"training {train_time:.1f} s; saved to {args.output_dir}")
    accelerator.wait_for_everyone()
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> dict:
    metrics = train_base(parse_args(argv))
    end_distributed()
    return metrics
