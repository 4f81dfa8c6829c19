"""Collect model outputs over a (possibly distributed) DataLoader, every sample exactly once."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["collect_predictions"]

_LABEL_KEYS = ("labels", "label", "fine_label")


def _batch_labels(batch: Any):
    if isinstance(batch, Mapping):
        for key in _LABEL_KEYS:
            if key in batch:
                return batch[key]
        raise ValueError(
            f"Cannot find labels in the batch (keys: {sorted(batch)}); expected one of {_LABEL_KEYS}, "
            "or let model_fn return (logits, labels)."
        )
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) >= 2:
        return batch[1]
    raise ValueError("Cannot find labels in the batch; let model_fn return (logits, labels).")


def collect_predictions(
    model_fn: Callable[[Any], Any], dataloader: Any, accelerator: Any
) -> tuple[Any, Any]:
    """Run ``model_fn`` over ``dataloader`` and gather ``(logits, labels)`` from all processes.

    Every batch's outputs go through ``accelerator.gather_for_metrics``, which drops the samples
    that a prepared DataLoader duplicates to even out the last batch, so the result holds every
    sample of the dataset exactly once, in dataset order for a non-shuffled loader, on EVERY rank.
    Runs under ``torch.no_grad()``; the results are CPU tensors.

    Args:
        model_fn: called with each batch; returns logits (a tensor, or a model output with
            ``.logits``) or a tuple ``(logits, labels)``. With logits alone, labels are taken from
            the batch: key ``labels``/``label``/``fine_label`` of a dict, or item 1 of a tuple.
            Any per-sample tensor works in place of logits (e.g. penultimate features).
        dataloader: a DataLoader passed through ``accelerator.prepare`` (required with more than
            one process; do not ALSO shard the dataset yourself, e.g. with
            ``datasets.distributed.split_dataset_by_node``, or half the samples vanish).
        accelerator: the ``accelerate.Accelerator``.

    Returns:
        ``(logits, labels)`` concatenated over the whole dataset.

    Example::

        accelerator = Accelerator()
        model, loader = accelerator.prepare(model, loader)
        logits, labels = collect_predictions(lambda b: model(pixel_values=b["pixel_values"]),
                                             loader, accelerator)
        acc = (logits.argmax(-1) == labels).float().mean()
    """
    import torch

    if accelerator.num_processes > 1:
        from accelerate.data_loader import DataLoaderDispatcher, DataLoaderShard

        if not isinstance(dataloader, (DataLoaderShard, DataLoaderDispatcher)):
            raise ValueError(
                "With several processes the dataloader must be passed through accelerator.prepare(...) "
                "first; otherwise every process evaluates the whole dataset and the gather repeats it."
            )

    all_logits, all_labels = [], []
    with torch.no_grad():
        for batch in dataloader:
            out = model_fn(batch)
            if isinstance(out, tuple) and len(out) == 2:
                logits, labels = out
            else:
                logits, labels = out, _batch_labels(batch)
            if hasattr(logits, "logits") and not isinstance(logits, torch.Tensor):
                logits = logits.logits
            if not isinstance(labels, torch.Tensor):
                labels = torch.as_tensor(labels)
            labels = labels.to(logits.device)
            if logits.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"model_fn returned {logits.shape[0]} outputs for a batch of {labels.shape[0]} labels."
                )
            logits, labels = accelerator.gather_for_metrics((logits.detach().contiguous(), labels.contiguous()))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
    if not all_logits:
        raise ValueError("The dataloader yielded no batches: the split is empty.")
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)

    dataset = getattr(dataloader, "dataset", None)
    try:
        expected = len(dataset) if dataset is not None else None
    except TypeError:  # iterable dataset without a length
        expected = None
    if expected is not None and not getattr(dataloader, "drop_last", False) and len(labels) != expected:
        warnings.warn(
            f"collect_predictions gathered {len(labels)} samples but the dataset has {expected}: "
            "was the data sharded twice, or the loader built with drop_last?",
            stacklevel=2,
        )
    return logits, labels
