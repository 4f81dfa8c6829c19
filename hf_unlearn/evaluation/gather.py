"""Gather per-sample outputs over ranks whose batches may differ in size (``even_batches=False``).

The prediction engine (``predict.py``) runs every evaluation loop through :func:`lockstep` and
:func:`gather_uneven`; with even batches it uses ``accelerator.gather_for_metrics``.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import gather_object

__all__ = ["gather_uneven", "lockstep", "uneven_batches"]


def uneven_batches(accelerator: Any) -> bool:
    """True when ranks may hold different numbers of samples per step (``even_batches=False``).

    Example:
        >>> uneven_batches(None)
        False
    """
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
        if batch is None and not uneven_batches(accelerator):
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
