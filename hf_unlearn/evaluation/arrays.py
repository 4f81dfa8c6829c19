"""Checked numpy arrays from what metric callers pass (numpy arrays, lists or torch tensors).

Each helper names the argument in its error, so a wrong input says which one and how to fix it::

    from hf_unlearn.evaluation.arrays import as_labels
    as_labels([0, 2, 1], "labels", num_classes=3)   # array([0, 2, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_bool_mask", "as_floats", "as_labels", "as_num_classes", "check_same_length", "float_list", "to_numpy"]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numeric numpy array of ``x`` (a tensor is detached and moved to CPU; half floats widened)."""
    if x is None:
        raise ValueError(f"`{name}` is None; pass an array.")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor (duck-typed: metrics take any array)
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"`{name}` could not be converted to an array: {exc}") from None
    if arr.dtype == object:
        raise ValueError(f"`{name}` must be numeric; got an object array (ragged or mixed input?).")
    return arr


def as_labels(x: Any, name: str, num_classes: int | None = None, allow_empty: bool = False) -> np.ndarray:
    """1-D integer class indices, optionally range-checked."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        hint = " (got 2-D input: pass class indices, e.g. logits.argmax(-1))" if arr.ndim == 2 else ""
        raise ValueError(f"`{name}` must be 1-D class indices, got shape {arr.shape}{hint}.")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"`{name}` is empty: nothing to evaluate (is the split empty?).")
    if arr.dtype == bool:
        raise ValueError(f"`{name}` must hold integer class indices, got booleans.")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"`{name}` must hold integer class indices, got dtype {arr.dtype}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` contains NaN or inf.")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"`{name}` must hold integer class indices, got non-integer values.")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"`{name}` contains negative class index {int(arr.min())}.")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise ValueError(
            f"`{name}` contains class index {int(arr.max())} but num_classes={num_classes} "
            f"(valid indices are 0..{num_classes - 1})."
        )
    return arr


def as_floats(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Finite float64 values, non-empty, optionally of ``ndim`` dimensions."""
    arr = to_numpy(x, name)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty: nothing to evaluate (is the split empty?).")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"`{name}` must be numeric, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` contains {bad} NaN/inf value(s).")
    return arr


def check_same_length(**arrays: np.ndarray) -> None:
    """Fail, naming every argument and its length, unless all have the same length."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise ValueError(f"Mismatched lengths: {desc}. Each entry must refer to the same samples.")


def as_num_classes(num_classes: Any) -> int:
    """A positive integer class count."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
    return int(num_classes)


def as_bool_mask(x: Any, name: str) -> np.ndarray:
    """A non-empty 1-D boolean mask (0/1 accepted): True where the sample is of the class."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty: nothing to evaluate (is the split empty?).")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"`{name}` must be boolean (or 0/1): True where the sample is of class c.")
        arr = arr.astype(bool)
    return arr


def float_list(x: np.ndarray) -> list[float]:
    """Plain Python floats (JSON-ready; NaN stays NaN until the report writer turns it into null)."""
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


# --------------------------------------------------------------------------------------------
