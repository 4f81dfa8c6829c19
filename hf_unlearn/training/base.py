"""Train (or fine-tune) the base image classifier that unlearning later starts from.

The loop behind ``hf-unlearn train-base`` / ``recipes/train_base.py``; its options are
:class:`hf_unlearn.commands.train_base.TrainBaseArguments`, the same for the command line and Python:

```py
>>> from hf_unlearn.commands.train_base import TrainBaseArguments
>>> from hf_unlearn.training.base import train_base
>>> metrics = train_base(TrainBaseArguments(preset="resnet-micro", dataset="digits", epochs=2,
...                                         output_dir="runs/base-digits"))
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

import dataclasses
import math
import os
import time
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForImageClassification, get_scheduler

from ..data.loaders import build_dataloader, class_subset, num_batches, subsample
from ..data.loading import check_labels_match, load_image_dataset
from ..files import atomic_write_json, atomic_write_text
from ..presets import DATASET_STATS, build_preset
from ..environment import environment_info

if TYPE_CHECKING:  # the options live with the command, which imports this module
    from ..commands.train_base import TrainBaseArguments

__all__ = ["train_base", "resolve_arguments", "evaluate_accuracy", "CONFIG_FILENAME", "METRICS_FILENAME",
           "SCHEDULERS"]

CONFIG_FILENAME = "train_base_config.yaml"
METRICS_FILENAME = "metrics.json"
SCHEDULERS = ("cosine", "onecycle", "linear", "constant")
PRESET_ONLY = ("image_size", "image_mean", "image_std", "num_channels")


def resolve_arguments(args: TrainBaseArguments) -> TrainBaseArguments:
    """A checked copy of ``args`` with the default learning rate filled in (``ValueError`` if unusable).

    Example::

        resolve_arguments(TrainBaseArguments(preset="resnet-tiny", output_dir="o")).learning_rate  # 2e-3
    """
    if bool(args.preset) == bool(args.model_name_or_path):
        raise ValueError("pass exactly one of --preset (train from scratch) and --model_name_or_path (fine-tune)")
    if not args.output_dir:
        raise ValueError("--output_dir is required")
    if args.model_name_or_path and any(getattr(args, name) is not None for name in PRESET_ONLY):
        raise ValueError("--image_size/--image_mean/--image_std/--num_channels apply to presets; a checkpoint "
                         "brings its own processor and input channels")
    if args.lr_scheduler not in SCHEDULERS:
        raise ValueError(f"--lr_scheduler {args.lr_scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch_size must be positive")
    if args.learning_rate is None:
        return dataclasses.replace(args, learning_rate=2e-3 if args.preset else 5e-5)
    return dataclasses.replace(args)


def _load_data(args: TrainBaseArguments, split: str, max_samples: Optional[int]):
    data = load_image_dataset(
        args.dataset, split=split, streaming=args.streaming, image_column=args.image_column,
        label_column=args.label_column, revision=args.dataset_revision,
    )
    return subsample(data, max_samples, seed=args.seed)


def _without_classes(data, classes):
    """The training split minus ``classes`` (ids unchanged), and the class counts left in it."""
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


def _load_splits(args: TrainBaseArguments, accelerator: Accelerator):
    """The (subsampled) training and eval splits, and the training class counts with ``exclude_classes``."""
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
    return train_data, eval_data, train_class_counts


def _build_model(args: TrainBaseArguments, data):
    id2label = data.id2label
    if args.preset:
        mean, std = args.image_mean, args.image_std
        if mean is None and args.dataset in DATASET_STATS:
            mean, std = DATASET_STATS[args.dataset]
        kwargs = {"image_size": args.image_size, "num_channels": args.num_channels or 3}
        if mean is not None:
            kwargs.update(image_mean=mean, image_std=std if std is not None else [1.0] * len(mean))
        return build_preset(args.preset, num_labels=data.num_classes, id2label=id2label, **kwargs)

    # trust_remote_code is never set: only architectures shipped with transformers are loaded.
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, revision=args.model_revision)
    model = AutoModelForImageClassification.from_pretrained(
        # id2label alone sets num_labels (passing both makes transformers warn about the
        # checkpoint's old id2label); a head of another size is re-initialised.
        args.model_name_or_path, revision=args.model_revision, id2label=id2label, label2id=data.label2id,
        ignore_mismatched_sizes=True,
    )
    return model, processor


def _optimizer(model, args: TrainBaseArguments):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # no weight decay on biases and normalisation weights (the usual AdamW recipe)
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate)


def _scheduler(optimizer, args: TrainBaseArguments, total_steps: int):
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

    Returns ``{"accuracy": float, "per_class": [acc or None per class], "count": n}``, e.g.::

        evaluate_accuracy(model, eval_loader, accelerator, num_classes=10)["accuracy"]
    """
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


def _write_config(args: TrainBaseArguments) -> None:
    """The resolved options as ``train_base_config.yaml``: the recipe a retrain reads back."""
    os.makedirs(args.output_dir, exist_ok=True)
    text = yaml.safe_dump(dataclasses.asdict(args), sort_keys=True)
    atomic_write_text(os.path.join(args.output_dir, CONFIG_FILENAME), text)


def _prepare(args: TrainBaseArguments, accelerator: Accelerator, model, num_train_rows: int, train_loader,
             eval_loader):
    """Optimizer and schedule, everything through ``accelerator.prepare``; also the steps per epoch."""
    optimizer = _optimizer(model, args)
    # accelerate steps a prepared scheduler once per process for every optimizer step, so the
    # schedule is laid out in single-process steps: per-process batches x processes.
    batches = num_batches(num_train_rows, args.batch_size)
    steps_per_epoch = math.ceil(batches / accelerator.num_processes)
    total_steps = args.epochs * steps_per_epoch * accelerator.num_processes
    scheduler = _scheduler(optimizer, args, total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    return model, optimizer, scheduler, train_loader, eval_loader, steps_per_epoch


def _train_epoch(args: TrainBaseArguments, accelerator: Accelerator, model, optimizer, scheduler, loader, bar):
    """One pass over ``loader``; returns the summed loss (a 0-d CPU tensor) and the number of steps."""
    model.train()
    loss_sum, loss_count = torch.zeros(()), 0
    for step, batch in enumerate(loader):
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
    return loss_sum, loss_count


def _fit(args: TrainBaseArguments, accelerator: Accelerator, model, optimizer, scheduler, train_loader,
         steps_per_epoch: int, progress: bool):
    """Every epoch; returns the history (mean loss and seconds per epoch) and the training seconds."""
    history, train_time = [], 0.0
    for epoch in range(args.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)  # new shuffle order per epoch (streaming buffers too)
        epoch_start = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not progress,
                   dynamic_ncols=True)
        loss_sum, loss_count = _train_epoch(args, accelerator, model, optimizer, scheduler, train_loader, bar)
        bar.close()
        epoch_s = time.perf_counter() - epoch_start
        train_time += epoch_s
        mean_loss = accelerator.reduce(loss_sum.to(accelerator.device) / max(loss_count, 1), reduction="mean")
        history.append({"epoch": epoch + 1, "train_loss": float(mean_loss), "seconds": round(epoch_s, 3)})
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train loss {float(mean_loss):.4f}, {epoch_s:.1f} s")
    return history, train_time


def _metrics(args: TrainBaseArguments, accelerator: Accelerator, model, train_data, train_class_counts,
             result: dict, history: list, seconds: dict) -> dict:
    """What ``metrics.json`` holds: the test accuracy, timings, the recipe, the model, versions, machine."""
    environment = environment_info(accelerator)
    versions = environment["versions"]
    return {
        "test_accuracy": result["accuracy"],
        "eval_split": args.eval_split,
        "num_eval_examples": result["count"],
        "per_class_accuracy": dict(zip(train_data.class_names, result["per_class"])),
        "train_time_s": round(seconds["train"], 3),
        "epoch_times_s": [h["seconds"] for h in history],
        "preprocess_time_s": round(seconds["preprocess"], 3),
        "eval_time_s": round(seconds["eval"], 3),
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
        "model_type": model.config.model_type,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "class_names": list(train_data.class_names),
        "versions": versions,
        "torch_version": versions["torch"],
        "transformers_version": versions["transformers"],
        "machine": environment,
    }


def train_base(args: TrainBaseArguments) -> dict:
    """Train a base classifier and save it; returns the metrics written to ``metrics.json``.

    ``args`` is a :class:`~hf_unlearn.commands.train_base.TrainBaseArguments` (what the command line
    parses into); it is checked by :func:`resolve_arguments`. Example:

    ```py
    >>> metrics = train_base(TrainBaseArguments(preset="resnet-tiny", dataset="fashion_mnist", epochs=8,
    ...                                         output_dir="runs/base-resnet"))
    >>> metrics["test_accuracy"], metrics["train_time_s"]
    ```
    """
    if not dataclasses.is_dataclass(args) or isinstance(args, type):
        raise TypeError(f"train_base takes TrainBaseArguments(...) (hf_unlearn.commands.train_base), not "
                        f"{type(args).__name__}: e.g. train_base(TrainBaseArguments(**options))")
    args = resolve_arguments(args)
    start_wall = time.perf_counter()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(cpu=args.cpu)
    main_process = accelerator.is_main_process
    progress = accelerator.is_local_main_process and not args.no_progress
    set_seed(args.seed)
    if main_process:
        _write_config(args)
    train_data, eval_data, train_class_counts = _load_splits(args, accelerator)

    set_seed(args.seed)  # model init does not depend on how much randomness data loading used
    model, image_processor = _build_model(args, train_data)
    check_labels_match(train_data, model.config)
    preprocess_start = time.perf_counter()
    common = {"image_processor": image_processor, "num_channels": model.config.num_channels, "progress": progress,
              "num_workers": args.num_workers}
    train_loader = build_dataloader(train_data, batch_size=args.batch_size, shuffle=True, seed=args.seed, **common)
    eval_loader = build_dataloader(eval_data, batch_size=args.eval_batch_size, shuffle=False, seed=args.seed,
                                   **common)
    seconds = {"preprocess": time.perf_counter() - preprocess_start}

    model, optimizer, scheduler, train_loader, eval_loader, steps_per_epoch = _prepare(
        args, accelerator, model, train_data.num_rows, train_loader, eval_loader)
    history, seconds["train"] = _fit(args, accelerator, model, optimizer, scheduler, train_loader, steps_per_epoch,
                                     progress)
    eval_start = time.perf_counter()
    result = evaluate_accuracy(model, eval_loader, accelerator, train_data.num_classes)
    seconds["eval"] = time.perf_counter() - eval_start

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(args.output_dir, is_main_process=main_process, save_function=accelerator.save)
    metrics = _metrics(args, accelerator, unwrapped, train_data, train_class_counts, result, history, seconds)
    if main_process:
        image_processor.save_pretrained(args.output_dir)
        metrics["total_wall_time_s"] = round(time.perf_counter() - start_wall, 3)
        atomic_write_json(os.path.join(args.output_dir, METRICS_FILENAME), metrics)
        accelerator.print(f"test accuracy {metrics['test_accuracy']:.4f} ({result['count']} examples); "
                          f"training {seconds['train']:.1f} s; saved to {args.output_dir}")
    accelerator.wait_for_everyone()
    return metrics
