"""Collect model outputs over a (possibly distributed) DataLoader, every sample exactly once."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["collect_predictions", "gather_uneven", "lockstep"]

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


def _uneven(accelerator: Any) -> bool:
    """True when ranks may hold different numbers of samples per step (``even_batches=False``)."""
    return accelerator is not None and accelerator.num_processes > 1 and not getattr(accelerator, "even_batches", True)


def lockstep(dataloader: Any, accelerator: Any):
    """Yield this rank's batches, then ``None`` while other ranks still have batches.

    With ``even_batches=False`` ranks can hold one batch more than others; every gather is a
    collective, so a rank out of data must keep taking part (with ``None``) until all are done.
    Pair it with :func:`gather_uneven`, which returns None once every rank yielded None.
    """
    iterator = iter(dataloader)
    while True:
        batch = next(iterator, None)
        if batch is None and not _uneven(accelerator):
            return
        yield batch  # after a None the caller asks gather_uneven, and stops once it returns None


def gather_uneven(accelerator: Any, tensors: Any):
    """Gather a tuple of per-sample tensors whose first dimension differs between ranks.

    ``tensors`` is this rank's tuple (same first dimension for all) or ``None`` when it has no
    batch this step. Sizes and trailing shapes are exchanged first, every tensor is padded to the
    largest size, gathered, and each rank's padding cut off again, so the result holds every real
    sample once, in rank order (dataset order for a sequential sharded loader). Returns ``None``
    when no rank had data (the evaluation is over). gloo and NCCL both need equal shapes in a
    gather, which ``gather_for_metrics`` does not ensure with ``even_batches=False``.

    Example::

        for batch in lockstep(loader, accelerator):
            mine = None if batch is None else (model(batch).logits, batch["labels"])
            gathered = gather_uneven(accelerator, mine)
            if gathered is None:
                break
    """
    import torch
    from accelerate.utils import gather_object

    meta = None if tensors is None else [(tuple(t.shape), t.dtype) for t in tensors]
    metas = gather_object([meta])
    known = [m for m in metas if m is not None]
    if not known:
        return None
    counts = [0 if m is None else m[0][0][0] for m in metas]
    width = max(counts)
    gathered = []
    for i, (shape, dtype) in enumerate(known[0]):
        padded = torch.zeros((width, *shape[1:]), dtype=dtype, device=accelerator.device)
        if tensors is not None:
            padded[: tensors[i].shape[0]] = tensors[i]
        everything = accelerator.gather(padded)
        gathered.append(torch.cat([everything[r * width : r * width + n] for r, n in enumerate(counts)]))
    return tuple(gathered)


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
    uneven = _uneven(accelerator)
    with torch.no_grad():
        for batch in lockstep(dataloader, accelerator):
            if batch is None:  # out of batches while other ranks still have some (even_batches=False)
                gathered = gather_uneven(accelerator, None)
                if gathered is None:
                    break
                all_logits.append(gathered[0].cpu())
                all_labels.append(gathered[1].cpu())
                continue
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
            if uneven:  # the last batches differ in size between ranks
                logits, labels = gather_uneven(accelerator, (logits.detach().contiguous(), labels.contiguous()))
            else:
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
