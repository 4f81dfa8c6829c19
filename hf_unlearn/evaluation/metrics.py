"""Unlearning metrics: pure functions over predictions, logits, confidences and features.

Nothing here knows about models. The caller runs the model(s) and passes arrays (numpy arrays,
lists or torch tensors; tensors are moved to CPU). Accuracies are percentages in [0, 100].

Names follow the project's measurement protocol:

forget accuracy (FA)
    Accuracy on test samples of the forgotten class(es). Target ~0: a model retrained without
    them scores 0 by construction. The SalUn line of papers reports UA = 100 - FA.
retain accuracy (RA)
    Accuracy on every other test sample, reported next to the original (base) model's accuracy
    on the same samples; the drop ``base RA - RA`` is what matters. It can be negative: once a
    class is gone, its test samples no longer attract the other classes' predictions.
accuracy matrix A
    ``A[c][y]`` = accuracy on test samples of class y when the model forgets class c (filter
    row c selected). Its diagonal is FA per class; sample-weighted off-diagonal rows give RA.
forgotten set
    FA and RA of a model that forgot several classes at once (:func:`set_accuracy`).

Above ~20 classes retain accuracy is estimated from sampled pairs (``sampled.py``). The other
measures live next door: MIA-efficacy and ZRF in ``privacy.py``, the linear and few-shot
probes and linear CKA in ``probes.py``; their definitions as the reports print them are in
``definitions.py``.
"""


from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .arrays import as_labels, as_num_classes, check_same_length, float_list, to_numpy

__all__ = [
    "accuracy_matrix",
    "class_counts",
    "per_class_accuracy",
    "set_accuracy",
    "summarize_matrix",
]


# accuracies
# --------------------------------------------------------------------------------------------


def class_counts(labels: Any, num_classes: int) -> np.ndarray:
    """Number of samples of each class: ``counts[y] = #{i : labels[i] == y}``.

    Example:
        >>> class_counts([0, 0, 2], num_classes=3).tolist()
        [2, 0, 1]
    """
    num_classes = as_num_classes(num_classes)
    labels = as_labels(labels, "labels", num_classes)
    return np.bincount(labels, minlength=num_classes).astype(np.int64)


def per_class_accuracy(preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Accuracy (%) of ``preds`` on the samples of each class; NaN for a class with no samples.

    With the base model's predictions this is the ``base_per_class_acc`` that
    :func:`summarize_matrix` wants. With predictions where each sample ran with the row of its
    own label (row ``labels[i]`` for sample i: one pass over the split) it is the exact forget
    accuracy FA_c of every class, also when the full matrix is too expensive.

    Example:
        >>> per_class_accuracy([0, 1, 1, 2], [0, 1, 2, 2], num_classes=3).tolist()
        [100.0, 100.0, 50.0]
    """
    num_classes = as_num_classes(num_classes)
    labels = as_labels(labels, "labels", num_classes)
    preds = as_labels(preds, "preds")
    check_same_length(preds=preds, labels=labels)
    counts = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels, weights=(preds == labels).astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * correct / np.maximum(counts, 1), np.nan)


def accuracy_matrix(
    preds_by_row: Mapping[int, Any] | Any, labels: Any, num_classes: int
) -> np.ndarray:
    """The all-classes accuracy matrix ``A`` of a model that can forget any single class.

    ``A[c][y]`` is the accuracy (%) on the test samples of class y when row c is selected (the
    model forgets class c)::

        A[c][y] = 100 * #{i : labels[i] == y and preds_c[i] == y} / #{i : labels[i] == y}

    The diagonal ``A[c][c]`` is the forget accuracy FA_c; row c off the diagonal gives the retain
    accuracy RA_c (see :func:`summarize_matrix`, which weights it by class counts).

    Args:
        preds_by_row: predicted class indices over the SAME test samples for each row c, either
            an array of shape ``(num_classes, n)`` (row index = forgotten class) or a dict
            ``{c: preds_c}`` (shape ``(n,)`` each). Rows missing from the dict are all-NaN
            ("not evaluated") and are skipped by :func:`summarize_matrix`.
        labels: true class indices, shape ``(n,)``.
        num_classes: number of classes N.

    Returns:
        ``(N, N)`` float array. A column is NaN where its class has no test samples.

    Example:
        >>> labels = [0, 0, 1, 1]
        >>> preds = {0: [1, 1, 1, 1], 1: [0, 0, 0, 1]}   # row 0 forgets class 0 ...
        >>> accuracy_matrix(preds, labels, num_classes=2).tolist()
        [[0.0, 100.0], [100.0, 50.0]]
    """
    num_classes = as_num_classes(num_classes)
    labels = as_labels(labels, "labels", num_classes)
    if isinstance(preds_by_row, Mapping):
        if not preds_by_row:
            raise ValueError("`preds_by_row` is empty: pass predictions for at least one row.")
        rows = {}
        for c, p in preds_by_row.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
                raise ValueError(f"`preds_by_row` key {c!r} is not a class index in 0..{num_classes - 1}.")
            rows[int(c)] = p
    else:
        arr = to_numpy(preds_by_row, "preds_by_row")
        if arr.ndim != 2 or arr.shape[0] != num_classes:
            raise ValueError(
                f"`preds_by_row` as an array must have shape (num_classes={num_classes}, n_samples), "
                f"got {arr.shape}. Pass a dict {{row: preds}} to evaluate only some rows."
            )
        rows = {c: arr[c] for c in range(num_classes)}

    counts = np.bincount(labels, minlength=num_classes)
    A = np.full((num_classes, num_classes), np.nan)
    for c, p in rows.items():
        preds = as_labels(p, f"preds_by_row[{c}]")
        if len(preds) != len(labels):
            raise ValueError(
                f"Mismatched lengths: preds_by_row[{c}] has {len(preds)} predictions, labels has "
                f"{len(labels)}. Every row must be evaluated on the same test samples."
            )
        correct = np.bincount(labels, weights=(preds == labels).astype(np.float64), minlength=num_classes)
        A[c] = np.where(counts > 0, 100.0 * correct / np.maximum(counts, 1), np.nan)
    return A


def _checked_matrix(A: Any, class_counts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, counts, evaluated rows)`` of :func:`summarize_matrix`'s inputs, checked against each other."""
    A = to_numpy(A, "A").astype(np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"`A` must be a square (N, N) matrix, got shape {A.shape}.")
    n = A.shape[0]
    counts = to_numpy(class_counts, "class_counts")
    if counts.ndim != 1 or len(counts) != n:
        raise ValueError(f"`class_counts` must have shape ({n},) to match A, got {counts.shape}.")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or not np.all(counts == np.round(counts)):
        raise ValueError("`class_counts` must be non-negative integers (samples per class).")
    counts = counts.astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("`class_counts` sums to 0: the test split is empty.")
    finite = np.isfinite(A)
    if np.any(finite & ((A < 0) | (A > 100))):
        raise ValueError("`A` holds accuracies in percent; found values outside [0, 100].")
    evaluated = finite.any(axis=1)
    if not evaluated.any():
        raise ValueError("`A` has no evaluated row (all NaN).")
    present = counts > 0
    for c in np.flatnonzero(evaluated):
        bad = np.flatnonzero(present & ~finite[c])
        if bad.size:
            raise ValueError(
                f"`A[{c}]` is NaN for class {int(bad[0])} although class_counts says it has "
                f"{int(counts[bad[0]])} samples; was A computed on another split?"
            )
    return A, counts, evaluated


def _checked_base(base_per_class_acc: Any, n: int, present: np.ndarray) -> np.ndarray:
    base = to_numpy(base_per_class_acc, "base_per_class_acc").astype(np.float64)
    if base.shape != (n,):
        raise ValueError(f"`base_per_class_acc` must have shape ({n},), got {base.shape}.")
    if np.any(present & ~np.isfinite(base)):
        raise ValueError("`base_per_class_acc` is NaN for a class that has test samples.")
    if np.any(np.isfinite(base) & ((base < 0) | (base > 100))):
        raise ValueError("`base_per_class_acc` holds percentages; found values outside [0, 100].")
    return base


def summarize_matrix(
    A: Any, base_per_class_acc: Any | None, class_counts: Any
) -> dict[str, Any]:
    """Per-class and mean forget/retain accuracy from an accuracy matrix (exact method).

    Definitions, with ``n_y`` = number of test samples of class y:

    - ``FA_c = A[c][c]``: accuracy on the samples of the forgotten class c.
    - ``RA_c = sum_{y != c} n_y * A[c][y] / sum_{y != c} n_y``: accuracy of row c on ALL test
      samples not of class c. The sample weighting makes it exactly the accuracy on that pool,
      not an unweighted mean of per-class accuracies.
    - ``base_RA_c = sum_{y != c} n_y * b_y / sum_{y != c} n_y`` with ``b`` = the base model's
      per-class accuracy: the original model's accuracy on the same retain samples.
    - ``drop_c = base_RA_c - RA_c`` (percentage points; negative = better than the base).
    - ``mean_*`` = unweighted mean over evaluated rows (every class is one unlearning request,
      all equally likely). For a class-balanced test split ``mean_retain_acc`` equals the mean of
      the off-diagonal entries of ``A``.
    - ``worst_*``: the largest FA, smallest RA and largest drop over rows, with the row.

    Rows of ``A`` that are all NaN (not evaluated) are skipped. Classes with no test samples
    (``n_y == 0``) get FA = NaN and drop out of every RA.

    Args:
        A: ``(N, N)`` matrix from :func:`accuracy_matrix`.
        base_per_class_acc: ``(N,)`` accuracy (%) of the original model on each class (from
            :func:`per_class_accuracy`), or None to skip the base comparison.
        class_counts: ``(N,)`` test samples per class (from :func:`class_counts`).

    Returns:
        A JSON-ready dict: ``method`` ("exact"), ``stderr`` (0.0), ``n_rows``, ``rows``,
        ``forget_acc_per_class``, ``retain_acc_per_class``, ``mean_forget_acc``,
        ``mean_retain_acc``, ``worst_forget_acc``/``worst_forget_row``,
        ``worst_retain_acc``/``worst_retain_row`` and, with a base,
        ``base_forget_acc_per_class`` (= ``b``), ``base_retain_acc_per_class``,
        ``retain_drop_per_class``, ``mean_base_retain_acc``, ``mean_retain_drop``,
        ``worst_retain_drop``/``worst_drop_row``. Per-class lists have length N, NaN for rows
        that were not evaluated.

    Example:
        >>> labels = [0, 0, 0, 1, 2]
        >>> A = accuracy_matrix({0: [1, 1, 1, 1, 2], 1: [0, 0, 0, 0, 0], 2: [0, 1, 0, 1, 1]},
        ...                     labels, num_classes=3)
        >>> s = summarize_matrix(A, [100.0, 100.0, 100.0], class_counts(labels, 3))
        >>> s["retain_acc_per_class"]   # row 1: 3 of 3 class-0 right, 0 of 1 class-2: 3/4
        [100.0, 75.0, 75.0]
        >>> s["mean_retain_drop"], s["worst_drop_row"]
        (16.666666666666668, 1)
    """
    A, counts, evaluated = _checked_matrix(A, class_counts)
    n = A.shape[0]
    present = counts > 0
    base = None if base_per_class_acc is None else _checked_base(base_per_class_acc, n, present)
    fa = np.full(n, np.nan)
    ra = np.full(n, np.nan)
    base_ra = np.full(n, np.nan)
    for c in range(n):
        w = counts.copy()
        w[c] = 0.0
        if w.sum() == 0:
            raise ValueError(f"Row {c}: every test sample is of class {c}, so there is nothing to retain.")
        if base is not None:
            base_ra[c] = float(np.sum(w[present] * base[present]) / w.sum())
        if not evaluated[c]:
            continue
        fa[c] = A[c, c] if present[c] else np.nan
        ra[c] = float(np.sum(w[present] * A[c, present]) / w.sum())

    rows = np.flatnonzero(evaluated)
    fa_rows = rows[np.isfinite(fa[rows])]
    out: dict[str, Any] = {
        "method": "exact",
        "stderr": 0.0,
        "n_rows": int(len(rows)),
        "rows": [int(r) for r in rows],
        "forget_acc_per_class": float_list(fa),
        "retain_acc_per_class": float_list(ra),
        "mean_forget_acc": float(np.mean(fa[fa_rows])) if fa_rows.size else float("nan"),
        "mean_retain_acc": float(np.mean(ra[rows])),
    }
    if fa_rows.size:
        worst_fa = int(fa_rows[np.argmax(fa[fa_rows])])
        out["worst_forget_acc"] = float(fa[worst_fa])
        out["worst_forget_row"] = worst_fa
    worst_ra = int(rows[np.argmin(ra[rows])])
    out["worst_retain_acc"] = float(ra[worst_ra])
    out["worst_retain_row"] = worst_ra
    if base is not None:
        drop = base_ra - ra
        worst_drop = int(rows[np.argmax(drop[rows])])
        out.update(
            {
                "base_forget_acc_per_class": float_list(base),
                "base_retain_acc_per_class": float_list(base_ra),
                "retain_drop_per_class": float_list(drop),
                "mean_base_retain_acc": float(np.mean(base_ra[rows])),
                "mean_retain_drop": float(np.mean(drop[rows])),
                "worst_retain_drop": float(drop[worst_drop]),
                "worst_drop_row": worst_drop,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# a forgotten set of classes
# --------------------------------------------------------------------------------------------


def set_accuracy(preds: Any, labels: Any, forget_set: int | Iterable[int]) -> dict[str, Any]:
    """Forget and retain accuracy of a model that forgot the class set S.

    - ``forget_acc`` = accuracy (%) on the samples whose label is in S (FA; target ~0),
    - ``retain_acc`` = accuracy (%) on all other samples (RA),
    - ``n_forget``, ``n_retain`` = how many samples each is computed on.

    Raises ValueError on empty inputs, mismatched lengths, when a class of S has no sample in
    ``labels`` (the number would silently describe fewer classes than asked) or when every sample
    is in S (no retain set).

    Example:
        >>> set_accuracy(preds=[1, 1, 2, 2], labels=[0, 1, 2, 2], forget_set={0})
        {'forget_acc': 0.0, 'retain_acc': 100.0, 'n_forget': 1, 'n_retain': 3}
    """
    preds = as_labels(preds, "preds")
    labels = as_labels(labels, "labels")
    check_same_length(preds=preds, labels=labels)
    if isinstance(forget_set, (int, np.integer)) and not isinstance(forget_set, bool):
        forget = [int(forget_set)]
    else:
        try:
            forget = sorted({int(c) for c in forget_set})
        except TypeError:
            raise ValueError(f"`forget_set` must be a class index or an iterable of them, got {forget_set!r}.") from None
    if not forget:
        raise ValueError("`forget_set` is empty: name at least one class to forget.")
    present = set(np.unique(labels).tolist())
    for c in forget:
        if c not in present:
            raise ValueError(
                f"Forget class {c} has no samples in `labels` (classes present: "
                f"{_short_list(sorted(present))}). Use the model's class indices (model.config.label2id), "
                f"or evaluate on a split that contains class {c}."
            )
    in_forget = np.isin(labels, forget)
    n_forget = int(in_forget.sum())
    n_retain = int((~in_forget).sum())
    if n_retain == 0:
        raise ValueError("Every sample belongs to the forget set: there is nothing to compute retain accuracy on.")
    correct = preds == labels
    return {
        "forget_acc": float(100.0 * correct[in_forget].mean()),
        "retain_acc": float(100.0 * correct[~in_forget].mean()),
        "n_forget": n_forget,
        "n_retain": n_retain,
    }


def _short_list(values: list[int], limit: int = 12) -> str:
    if len(values) <= limit:
        return str(values)
    return f"[{', '.join(map(str, values[:limit]))}, ... ({len(values)} classes)]"


# --------------------------------------------------------------------------------------------
