"""What every explanation needs: the model it is given, its logits, class ids and image batches.

The explain functions accept an :class:`~hf_unlearn.UnlearnAdapter` (or its ``PeftModel``), a
transformers classifier, or a plain callable returning logits; these helpers turn any of them into
logits of the base model (no class selected) and validate class ids and image batches.

Example:

```py
>>> from hf_unlearn.explain.common import as_batch, class_ids, logits_of
>>> x, single = as_batch(image)                       # (1, C, H, W), True for one (C, H, W) image
>>> class_ids(adapter, "Coat", x.shape[0])            # [4]: names through the adapter's labels
>>> logits_of(adapter, x).shape                       # (1, num_classes), no class forgotten
```
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from peft import PeftModel

from ..adapter import UnlearnAdapter
from ..tuners.weight_filter.selection import resolve_class

__all__ = [
    "as_adapter",
    "maybe_adapter",
    "to_numpy",
    "model_device",
    "base_model_context",
    "logits_of",
    "class_ids",
    "as_batch",
    "unpack_batch",
]


def as_adapter(obj, what: str = "This function") -> UnlearnAdapter:
    """``obj`` as an :class:`~hf_unlearn.UnlearnAdapter` (a ``PeftModel`` is wrapped); else ``TypeError``."""
    if isinstance(obj, UnlearnAdapter):
        return obj
    if isinstance(obj, PeftModel):
        return UnlearnAdapter(obj)
    raise TypeError(f"{what} needs an UnlearnAdapter (or its PeftModel), got {type(obj).__name__}.")


def maybe_adapter(obj):
    """``obj`` as an adapter, or None for a plain model or callable."""
    try:
        return as_adapter(obj)
    except TypeError:
        return None


def to_numpy(x) -> np.ndarray:
    """A float64 array of a tensor (any device) or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def model_device(model):
    """The device of the model's first parameter (None for a callable without parameters)."""
    module = getattr(model, "model", model)  # UnlearnAdapter -> its PeftModel
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
    return None


@contextlib.contextmanager
def base_model_context(model):
    """No class selected (the exact base model) for an adapter, whatever context the caller is in."""
    adapter = maybe_adapter(model)
    if adapter is None:
        yield
    else:
        with adapter.forgetting(None):
            yield


def logits_of(model, x):
    """Logits (B, N) of an UnlearnAdapter (no class selected), a transformers model or a callable."""
    adapter = maybe_adapter(model)
    if adapter is not None:
        out = adapter.model(pixel_values=x)
    elif isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        out = model(pixel_values=x)
    else:
        out = model(x)
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise TypeError("The model must return logits of shape (batch, num_classes) (or an output with .logits).")
    return out


def _class_resolver(model):
    """``ref -> id`` through the one resolver, with the labels of the adapter or transformers model."""
    adapter = maybe_adapter(model)
    if adapter is not None:
        return adapter.class_id
    config = getattr(model, "config", None)
    num_labels = getattr(config, "num_labels", None)
    if num_labels:
        label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
        return lambda ref: resolve_class(ref, int(num_labels), label2id)

    def plain(ref) -> int:  # a bare callable: its number of classes is unknown until it runs
        if isinstance(ref, str):
            raise ValueError(f"Class names ({ref!r}) need an UnlearnAdapter (or a model with id2label); pass ids.")
        return int(ref)

    return plain


def class_ids(model, classes, count: int) -> list[int]:
    """One validated class id per image from an id, a name, or a sequence/tensor of them.

    Ids and names go through :func:`hf_unlearn.tuners.weight_filter.selection.resolve_class`
    (case-insensitive names; an unknown class raises ``ValueError`` listing the valid ones).
    """
    resolve = _class_resolver(model)

    def one(ref) -> int:
        return resolve(int(ref) if isinstance(ref, np.integer) else ref)

    if isinstance(classes, (torch.Tensor, np.ndarray)):
        classes = classes.tolist()
    if isinstance(classes, (int, str, np.integer)) and not isinstance(classes, bool):
        return [one(classes)] * count
    classes = list(classes)
    if len(classes) != count:
        raise ValueError(f"Got {len(classes)} classes for {count} images: give one class for all, or one per image.")
    return [one(c) for c in classes]


def as_batch(images):
    """``(batch (B, C, H, W) tensor, was_single_image)`` from a tensor or array, 3-D or 4-D."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if images.ndim == 3:
        return images.unsqueeze(0), True
    if images.ndim != 4:
        raise ValueError(f"Images must be (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}.")
    return images, False


def unpack_batch(batch) -> tuple[Any, Any]:
    """``(pixel_values, labels)`` of a ``{"pixel_values", "labels"}`` dict or a ``(x, y)`` pair."""
    if isinstance(batch, Mapping):
        return batch["pixel_values"], batch["labels"]
    return batch[0], batch[1]
