"""Turn what a user asks to forget into a tensor of row indices.

A selection is a ``LongTensor`` of shape ``(B, K)``: for each sample (``B == 1`` means "the same for
the whole batch") up to ``K`` classes whose rows are multiplied together; ``-1`` pads and means
"nothing". Accepted user forms:

- ``None``: forget nothing (the exact base model);
- ``3`` or ``"Coat"``: one class for the whole batch;
- ``[3, 5]`` / ``{"Coat", "Shirt"}``: a set of classes for the whole batch;
- a 1-D integer tensor or array of length B: one class per sample, ``-1`` = forget nothing;
- a 2-D integer tensor ``(B, K)`` padded with ``-1``: a set per sample;
- ``per_sample([3, None, ["Coat", 5]])``: one entry per sample, each None, a class or a set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

import torch

ClassRef = Union[int, str]


class per_sample(tuple):  # noqa: N801 - reads as a function at the call site
    """Mark a list as "one entry per sample" (each entry None, a class id/name, or a set of them).

    Example:

    ```py
    >>> peft_model(pixel_values=x, forget=per_sample([3, None, ["Coat", "Shirt"]]))
    ```
    """


def _valid_classes_message(num_classes: int, label2id: Optional[Mapping[str, int]]) -> str:
    if label2id:
        names = ", ".join(f"{i}={n!r}" for n, i in sorted(label2id.items(), key=lambda kv: kv[1]))
        return f"Valid classes are ids 0..{num_classes - 1} or names: {names}."
    return f"Valid classes are ids 0..{num_classes - 1}."


def resolve_class(ref: Any, num_classes: int, label2id: Optional[Mapping[str, int]] = None) -> int:
    """Map a class id or name to a validated id. Raises ``ValueError`` listing the valid classes."""
    if isinstance(ref, str):
        if label2id and ref in label2id:
            return int(label2id[ref])
        lowered = {k.lower(): v for k, v in (label2id or {}).items()}
        if ref.lower() in lowered:
            return int(lowered[ref.lower()])
        raise ValueError(f"Unknown class name {ref!r}. {_valid_classes_message(num_classes, label2id)}")
    if isinstance(ref, bool) or not isinstance(ref, (int,)) and not (
        isinstance(ref, torch.Tensor) and ref.ndim == 0 and not ref.is_floating_point()
    ):
        try:
            import numpy as np

            if isinstance(ref, np.integer):
                ref = int(ref)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"A class must be an int id or a str name, got {type(ref).__name__} ({ref!r})."
            ) from None
    ref = int(ref)
    if not 0 <= ref < num_classes:
        raise ValueError(f"Class id {ref} is out of range. {_valid_classes_message(num_classes, label2id)}")
    return ref


def _resolve_set(entry: Any, num_classes: int, label2id) -> list[int]:
    if entry is None:
        return []
    if isinstance(entry, (str, int)) or (isinstance(entry, torch.Tensor) and entry.ndim == 0):
        if not isinstance(entry, str) and int(entry) == -1:
            return []
        return [resolve_class(entry, num_classes, label2id)]
    if isinstance(entry, Iterable):
        ids = sorted({resolve_class(e, num_classes, label2id) for e in entry})
        return ids
    return [resolve_class(entry, num_classes, label2id)]


def _pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(1, max((len(r) for r in rows), default=1))
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def normalize_selection(
    forget: Any, num_classes: int, label2id: Optional[Mapping[str, int]] = None
) -> Optional[torch.Tensor]:
    """Return a ``(B, K)`` LongTensor of class ids padded with -1, or None for "forget nothing"."""
    if forget is None:
        return None
    if isinstance(forget, per_sample):
        return _pad([_resolve_set(e, num_classes, label2id) for e in forget])
    if not isinstance(forget, torch.Tensor):
        try:
            import numpy as np

            if isinstance(forget, np.ndarray):
                forget = torch.from_numpy(forget)
        except ImportError:  # pragma: no cover - numpy ships with torch
            pass
    if isinstance(forget, torch.Tensor):
        if forget.is_floating_point() or forget.dtype == torch.bool:
            raise TypeError(f"A class-id tensor must hold integers, got dtype {forget.dtype}.")
        if forget.ndim == 0:
            return _pad([_resolve_set(int(forget), num_classes, label2id)])
        if forget.ndim not in (1, 2):
            raise ValueError(
                f"A class-id tensor must be 1-D (one class per sample) or 2-D (a set per sample, "
                f"padded with -1); got shape {tuple(forget.shape)}."
            )
        sel = forget.detach().to("cpu", torch.long)
        sel = sel[:, None] if sel.ndim == 1 else sel
        bad = (sel < -1) | (sel >= num_classes)
        if bad.any():
            value = int(sel[bad][0])
            raise ValueError(
                f"Class id {value} is out of range (use -1 for 'forget nothing'). "
                f"{_valid_classes_message(num_classes, label2id)}"
            )
        return sel
    return _pad([_resolve_set(forget, num_classes, label2id)])


# The last selection moved to a device, with its copy: (source tensor, its version, device, copy).
_LAST_DEVICE_COPY: tuple = (None, None, None, None)


def selection_on(selection: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``selection`` on ``device``, copied once per selection tensor rather than once per layer.

    Every filtered layer needs the same selection on its device. A blocking host-to-device copy
    synchronises the GPU stream, so copying in each layer would stall the GPU once per layer
    (72 times per forward for a ViT-B/16); the copy is made once and shared. The cache is one
    immutable tuple, replaced in one step: safe to read from several threads (a miss only copies).
    The tensor's version is part of the key, so a selection changed in place is copied again.
    """
    global _LAST_DEVICE_COPY
    if selection.device == device:
        return selection
    source, version, cached_device, copy = _LAST_DEVICE_COPY
    if source is selection and version == selection._version and cached_device == device:
        return copy
    copy = selection.to(device)
    _LAST_DEVICE_COPY = (selection, selection._version, device, copy)
    return copy
