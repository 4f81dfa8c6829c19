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
MIA-efficacy
    SalUn's membership-inference test on the forget training samples: % judged non-members.
ZRF
    Zero Retrain Forgetting (Chundawat et al. 2023): 1 - mean Jensen-Shannon divergence
    between the model and a randomly initialised copy on the forget samples.
linear probe
    Can a linear classifier on penultimate features still tell class c apart?
linear CKA
    Centred kernel alignment of two feature sets on the same samples (1 = same up to rotation and
    scale, ~0 = unrelated); read as the gap to the retrained model.

Only numpy is imported at module level; scikit-learn is imported inside the functions that need
it, so ``import hf_unlearn.evaluation`` stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RetainPairs",
    "accuracy_matrix",
    "class_counts",
    "few_shot_probe_accuracy",
    "linear_cka",
    "linear_probe_accuracy",
    "mia_efficacy",
    "per_class_accuracy",
    "sample_retain_pairs",
    "sampled_retain_estimate",
    "set_accuracy",
    "summarize_matrix",
    "true_label_confidence",
    "zrf_score",
]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"`{name}` is None; pass an array.")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
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


def _labels(x: Any, name: str, num_classes: int | None = None, allow_empty: bool = False) -> np.ndarray:
    """1-D integer class indices, optionally range-checked."""
    arr = _to_numpy(x, name)
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


def _floats(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    arr = _to_numpy(x, name)
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


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise ValueError(f"Mismatched lengths: {desc}. Each entry must refer to the same samples.")


def _num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
    return int(num_classes)


def _bool_mask(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty: nothing to evaluate (is the split empty?).")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"`{name}` must be boolean (or 0/1): True where the sample is of class c.")
        arr = arr.astype(bool)
    return arr


def _floatlist(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


# --------------------------------------------------------------------------------------------
# accuracies
# --------------------------------------------------------------------------------------------


def class_counts(labels: Any, num_classes: int) -> np.ndarray:
    """Number of samples of each class: ``counts[y] = #{i : labels[i] == y}``.

    Example:
        >>> class_counts([0, 0, 2], num_classes=3).tolist()
        [2, 0, 1]
    """
    num_classes = _num_classes(num_classes)
    labels = _labels(labels, "labels", num_classes)
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
    num_classes = _num_classes(num_classes)
    labels = _labels(labels, "labels", num_classes)
    preds = _labels(preds, "preds")
    _same_length(preds=preds, labels=labels)
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
    num_classes = _num_classes(num_classes)
    labels = _labels(labels, "labels", num_classes)
    if isinstance(preds_by_row, Mapping):
        if not preds_by_row:
            raise ValueError("`preds_by_row` is empty: pass predictions for at least one row.")
        rows = {}
        for c, p in preds_by_row.items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
                raise ValueError(f"`preds_by_row` key {c!r} is not a class index in 0..{num_classes - 1}.")
            rows[int(c)] = p
    else:
        arr = _to_numpy(preds_by_row, "preds_by_row")
        if arr.ndim != 2 or arr.shape[0] != num_classes:
            raise ValueError(
                f"`preds_by_row` as an array must have shape (num_classes={num_classes}, n_samples), "
                f"got {arr.shape}. Pass a dict {{row: preds}} to evaluate only some rows."
            )
        rows = {c: arr[c] for c in range(num_classes)}

    counts = np.bincount(labels, minlength=num_classes)
    A = np.full((num_classes, num_classes), np.nan)
    for c, p in rows.items():
        preds = _labels(p, f"preds_by_row[{c}]")
        if len(preds) != len(labels):
            raise ValueError(
                f"Mismatched lengths: preds_by_row[{c}] has {len(preds)} predictions, labels has "
                f"{len(labels)}. Every row must be evaluated on the same test samples."
            )
        correct = np.bincount(labels, weights=(preds == labels).astype(np.float64), minlength=num_classes)
        A[c] = np.where(counts > 0, 100.0 * correct / np.maximum(counts, 1), np.nan)
    return A


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
    A = _to_numpy(A, "A").astype(np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"`A` must be a square (N, N) matrix, got shape {A.shape}.")
    n = A.shape[0]
    counts = _to_numpy(class_counts, "class_counts")
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

    base = None
    if base_per_class_acc is not None:
        base = _to_numpy(base_per_class_acc, "base_per_class_acc").astype(np.float64)
        if base.shape != (n,):
            raise ValueError(f"`base_per_class_acc` must have shape ({n},), got {base.shape}.")
        if np.any(present & ~np.isfinite(base)):
            raise ValueError("`base_per_class_acc` is NaN for a class that has test samples.")
        if np.any(np.isfinite(base) & ((base < 0) | (base > 100))):
            raise ValueError("`base_per_class_acc` holds percentages; found values outside [0, 100].")

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
        "forget_acc_per_class": _floatlist(fa),
        "retain_acc_per_class": _floatlist(ra),
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
                "base_forget_acc_per_class": _floatlist(base),
                "base_retain_acc_per_class": _floatlist(base_ra),
                "retain_drop_per_class": _floatlist(drop),
                "mean_base_retain_acc": float(np.mean(base_ra[rows])),
                "mean_retain_drop": float(np.mean(drop[rows])),
                "worst_retain_drop": float(drop[worst_drop]),
                "worst_drop_row": worst_drop,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# sampled retain accuracy (many classes)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetainPairs:
    """(row, sample) pairs drawn by :func:`sample_retain_pairs`.

    Attributes:
        rows: ``(m,)`` the row (forgotten class) to select for each pair.
        samples: ``(m,)`` index of the test sample for each pair (its label differs from the row).
        strata: the rows that were sampled (each a stratum of the estimator).
        retain_sizes: ``(len(strata),)`` number of retain samples ``N_c`` of each stratum row.
        num_classes: N.
        seed: the seed used.
    """

    rows: np.ndarray
    samples: np.ndarray
    strata: np.ndarray
    retain_sizes: np.ndarray
    num_classes: int
    seed: int

    def __len__(self) -> int:
        return int(len(self.rows))


def sample_retain_pairs(
    labels: Any,
    num_classes: int,
    samples_per_row: int = 50,
    *,
    rows: Iterable[int] | None = None,
    seed: int = 0,
) -> RetainPairs:
    """Draw the (row, sample) pairs for :func:`sampled_retain_estimate`.

    For every row c (default: all classes), draw ``k = min(samples_per_row, N_c)`` test samples
    uniformly without replacement from the ``N_c`` samples whose label is not c. The model is
    then run once per pair, sample ``samples[j]`` with row ``rows[j]`` selected (a filter model
    can mix rows within a batch), which costs ``N * k`` forward passes instead of the ``N * n``
    of the full matrix.

    Example::

        pairs = sample_retain_pairs(labels, num_classes=1000, samples_per_row=20, seed=0)
        preds = my_predict(images[pairs.samples], forget_rows=pairs.rows)  # the caller's model
        est = sampled_retain_estimate(preds, labels, pairs, base_per_class_acc=base_acc)
        print(f"RA {est['mean_retain_acc']:.2f} +- {est['stderr']:.2f} ({est['method']})")
    """
    num_classes = _num_classes(num_classes)
    labels = _labels(labels, "labels", num_classes)
    if isinstance(samples_per_row, bool) or not isinstance(samples_per_row, (int, np.integer)) or samples_per_row < 2:
        raise ValueError(f"`samples_per_row` must be an integer >= 2 (needed for a stderr), got {samples_per_row!r}.")
    if rows is None:
        strata = np.arange(num_classes)
    else:
        strata = np.unique(_labels(np.fromiter(rows, dtype=np.int64), "rows", num_classes))
    rng = np.random.default_rng(seed)
    all_rows, all_samples, sizes = [], [], []
    for c in strata:
        pool = np.flatnonzero(labels != c)
        if pool.size < 2:
            raise ValueError(f"Row {c}: fewer than 2 test samples outside class {c}; cannot estimate its retain accuracy.")
        k = min(int(samples_per_row), pool.size)
        pick = rng.choice(pool, size=k, replace=False)
        all_rows.append(np.full(k, c, dtype=np.int64))
        all_samples.append(np.sort(pick))
        sizes.append(pool.size)
    return RetainPairs(
        rows=np.concatenate(all_rows),
        samples=np.concatenate(all_samples).astype(np.int64),
        strata=strata.astype(np.int64),
        retain_sizes=np.asarray(sizes, dtype=np.int64),
        num_classes=num_classes,
        seed=int(seed),
    )


def sampled_retain_estimate(
    pair_preds: Any,
    labels: Any,
    pairs: RetainPairs,
    base_per_class_acc: Any | None = None,
) -> dict[str, Any]:
    """Unbiased estimate of the mean retain accuracy from sampled (row, sample) pairs.

    Use it when the full accuracy matrix is too expensive (we do above ~20 classes; FA stays
    exact and cheap, see :func:`per_class_accuracy`). The estimand is the exact
    ``mean_retain_acc`` of :func:`summarize_matrix`, ``(1/|C|) sum_c RA_c`` over the rows C.

    Estimator (stratified sampling, one stratum per row c): with ``k_c`` retain samples drawn
    uniformly without replacement from the ``N_c`` samples not of class c and ``z_cj`` = 100 if
    pair j of row c is predicted right, else 0::

        RA_hat   = (1/|C|) sum_c  mean_j z_cj
        Var_hat  = (1/|C|^2) sum_c (1 - k_c/N_c) s_c^2 / k_c,   s_c^2 = sample variance of z_c.
        stderr   = sqrt(Var_hat)

    Each ``mean_j z_cj`` is an unbiased estimate of ``RA_c`` (a uniform draw from row c's retain
    pool is right with probability RA_c/100), so ``RA_hat`` is unbiased; ``Var_hat`` is the
    textbook unbiased variance estimate for stratified sampling with a finite-population
    correction. ``ci95`` is the normal interval ``RA_hat +- 1.96 stderr``.

    Args:
        pair_preds: ``(m,)`` predicted class of sample ``pairs.samples[j]`` with row
            ``pairs.rows[j]`` selected.
        labels: the full test labels the pairs were drawn from.
        pairs: output of :func:`sample_retain_pairs`.
        base_per_class_acc: optional ``(N,)`` base per-class accuracy; the base retain accuracy
            is then computed exactly and ``mean_retain_drop`` (same stderr) is added.

    Returns:
        ``{"method": "sampled", "mean_retain_acc", "stderr", "ci95", "n_pairs", "n_rows",
        "samples_per_row", "seed"}`` plus ``mean_base_retain_acc`` and ``mean_retain_drop`` with
        a base. Report ``method`` and ``stderr`` next to the number.
    """
    if not isinstance(pairs, RetainPairs):
        raise TypeError("`pairs` must come from sample_retain_pairs(...).")
    labels = _labels(labels, "labels", pairs.num_classes)
    preds = _labels(pair_preds, "pair_preds")
    _same_length(pair_preds=preds, pairs=pairs.rows)
    if pairs.samples.max() >= len(labels):
        raise ValueError("`pairs` index samples beyond `labels`: were they drawn from another split?")
    truth = labels[pairs.samples]
    if np.any(truth == pairs.rows):
        raise ValueError("`pairs` contain a sample of the row's own class: were they drawn from other labels?")
    z = 100.0 * (preds == truth)
    est_rows, var_terms = [], []
    for c, n_c in zip(pairs.strata, pairs.retain_sizes):
        zc = z[pairs.rows == c]
        k = len(zc)
        est_rows.append(zc.mean())
        var_terms.append((1.0 - k / n_c) * zc.var(ddof=1) / k)
    n_rows = len(pairs.strata)
    mean = float(np.mean(est_rows))
    stderr = float(math.sqrt(max(np.sum(var_terms), 0.0)) / n_rows)
    out: dict[str, Any] = {
        "method": "sampled",
        "mean_retain_acc": mean,
        "stderr": stderr,
        "ci95": [mean - 1.96 * stderr, mean + 1.96 * stderr],
        "n_pairs": int(len(preds)),
        "n_rows": int(n_rows),
        "samples_per_row": int(max(np.bincount(pairs.rows))),
        "seed": pairs.seed,
    }
    if base_per_class_acc is not None:
        counts = np.bincount(labels, minlength=pairs.num_classes).astype(np.float64)
        base = _to_numpy(base_per_class_acc, "base_per_class_acc").astype(np.float64)
        if base.shape != (pairs.num_classes,):
            raise ValueError(f"`base_per_class_acc` must have shape ({pairs.num_classes},), got {base.shape}.")
        present = counts > 0
        if np.any(present & ~np.isfinite(base)):
            raise ValueError("`base_per_class_acc` is NaN for a class that has test samples.")
        total = float(np.sum(counts[present] * base[present]))
        base_ra = [(total - (counts[c] * base[c] if present[c] else 0.0)) / (counts.sum() - counts[c]) for c in pairs.strata]
        out["mean_base_retain_acc"] = float(np.mean(base_ra))
        out["mean_retain_drop"] = out["mean_base_retain_acc"] - mean
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
    preds = _labels(preds, "preds")
    labels = _labels(labels, "labels")
    _same_length(preds=preds, labels=labels)
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
# membership inference (SalUn)
# --------------------------------------------------------------------------------------------


def true_label_confidence(logits: Any, labels: Any) -> np.ndarray:
    """Softmax probability of the true label: ``softmax(logits[i])[labels[i]]``, shape ``(n,)``.

    The MIA feature of :func:`mia_efficacy`. Computed in float64 with the max-shift, so large
    logits do not overflow.

    Example:
        >>> true_label_confidence([[0.0, 0.0], [10.0, 0.0]], [1, 0]).round(4).tolist()
        [0.5, 1.0]
    """
    logits = _floats(logits, "logits", ndim=2)
    labels = _labels(labels, "labels", logits.shape[1])
    _same_length(logits=logits, labels=labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return np.exp(shifted[np.arange(len(labels)), labels] - log_norm)


def _confidences(x: Any, name: str) -> np.ndarray:
    arr = _floats(x, name, ndim=1)
    if arr.min() < -1e-6 or arr.max() > 1.0 + 1e-6:  # tolerate float32 rounding of a softmax
        raise ValueError(
            f"`{name}` must be softmax confidences in [0, 1]; got values in "
            f"[{arr.min():.3g}, {arr.max():.3g}]. Use true_label_confidence(logits, labels)."
        )
    return np.clip(arr, 0.0, 1.0)


def mia_efficacy(
    retain_train_conf: Any,
    test_retain_conf: Any,
    forget_train_conf: Any,
    seed: int = 0,
    *,
    max_samples: int | None = None,
) -> float:
    """MIA-efficacy (SalUn protocol): % of forget training samples an attacker calls non-members.

    Protocol (Fan et al., ICLR 2024, ``SVC_MIA`` with ``target_test=forget``):

    1. feature = softmax confidence on the true label (:func:`true_label_confidence`);
    2. non-members = the test samples of the retained classes (``test_retain_conf``);
    3. members = ``min(|retain train|, |non-members|)`` retain training samples drawn without
       replacement with ``seed`` (SalUn takes the first ``|test|``; we draw at random);
    4. fit ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` on members (1) vs non-members (0);
    5. predict the forget training samples; return 100 * the share predicted 0.

    Higher = more forgotten; a model retrained without the class is the reference (the forget
    samples look like unseen data to it). ``max_samples`` caps members and non-members alike
    (random, seeded) to bound the SVC's quadratic cost on very large test sets; it departs from
    SalUn, so report it when used.

    Example::

        mia = mia_efficacy(
            true_label_confidence(logits_retain_train, y_retain_train),
            true_label_confidence(logits_test_retained, y_test_retained),
            true_label_confidence(logits_forget_train, y_forget_train),
            seed=0,
        )  # e.g. 97.4 (% of forget samples judged non-members)
    """
    from sklearn.svm import SVC

    retain = _confidences(retain_train_conf, "retain_train_conf")
    nonmembers = _confidences(test_retain_conf, "test_retain_conf")
    forget = _confidences(forget_train_conf, "forget_train_conf")
    rng = np.random.default_rng(seed)
    if max_samples is not None:
        if int(max_samples) < 1:
            raise ValueError(f"`max_samples` must be >= 1, got {max_samples!r}.")
        if len(nonmembers) > max_samples:
            nonmembers = rng.choice(nonmembers, size=int(max_samples), replace=False)
    n_members = min(len(retain), len(nonmembers))
    members = rng.choice(retain, size=n_members, replace=False)
    X = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(X, y)
    pred = clf.predict(forget[:, None])
    return float(100.0 * np.mean(pred == 0))


# --------------------------------------------------------------------------------------------
# ZRF
# --------------------------------------------------------------------------------------------


def _probs(x: Any, name: str) -> np.ndarray:
    arr = _floats(x, name, ndim=2)
    if arr.min() < 0.0:
        raise ValueError(f"`{name}` must be probabilities (softmax outputs), found negative values.")
    sums = arr.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            f"`{name}` rows must sum to 1 (softmax outputs); found sums in [{sums.min():.4g}, "
            f"{sums.max():.4g}]. Apply softmax to the logits first."
        )
    return arr / sums[:, None]


def _xlogy2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log2(y) with 0 * log2(0) = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log2(np.where(y > 0, y, 1.0)), 0.0)


def zrf_score(model_probs: Any, random_probs: Any, *, variant: str = "js") -> float:
    """Zero Retrain Forgetting score (Chundawat et al., AAAI 2023) on the forget samples.

    ``ZRF = 1 - (1/n) sum_i JS(p_i || q_i)`` where ``p_i`` is the unlearned model's softmax on
    forget sample i and ``q_i`` that of a randomly initialised copy of the architecture.

    Normalisation (``variant="js"``, the default and what hf_unlearn reports): the Jensen-Shannon
    divergence uses base-2 logarithms,
    ``JS(p||q) = 0.5 KL(p||m) + 0.5 KL(q||m)``, ``m = (p + q)/2``, ``KL(a||b) = sum_k a_k log2(a_k/b_k)``,
    so ``JS`` lies in [0, 1] and so does ZRF. ZRF = 1: the model's outputs on the forget
    samples are indistinguishable from a random network's; ZRF = 0: maximally different
    (disjoint supports). ZRF of identical distributions is 1. (With natural logs JS would lie in
    [0, ln 2] and ZRF in [1 - ln 2, 1]; multiply our JS by ln 2 to convert.)

    ``variant="reference_code"`` reproduces the authors' public code instead, which computes a
    different quantity: ``1 - [0.5 F.kl_div(log p, m) + 0.5 F.kl_div(log q, m)]`` with torch's
    default ``reduction="mean"``, i.e. the reversed KL ``KL(m||p)`` in natural log, averaged over
    all n*K ELEMENTS (so divided by the number of classes K as well). Its values crowd near 1
    and are not comparable with ours; use it only to compare with numbers computed by that code.

    Example:
        >>> p = [[0.7, 0.2, 0.1]]
        >>> zrf_score(p, p)
        1.0
    """
    p = _probs(model_probs, "model_probs")
    q = _probs(random_probs, "random_probs")
    if p.shape != q.shape:
        raise ValueError(f"Mismatched shapes: model_probs {p.shape} vs random_probs {q.shape} (same samples, same classes).")
    m = 0.5 * (p + q)
    if variant == "js":
        kl_pm = np.sum(_xlogy2(p, p) - _xlogy2(p, m), axis=1)
        kl_qm = np.sum(_xlogy2(q, q) - _xlogy2(q, m), axis=1)
        js = np.clip(0.5 * (kl_pm + kl_qm), 0.0, 1.0)
        return float(1.0 - js.mean())
    if variant == "reference_code":
        with np.errstate(divide="ignore", invalid="ignore"):
            log_m = np.log(m)
            t1 = np.where(m > 0, m * (log_m - np.log(p)), 0.0).mean()
            t2 = np.where(m > 0, m * (log_m - np.log(q)), 0.0).mean()
        return float(1.0 - (0.5 * t1 + 0.5 * t2))
    raise ValueError(f"Unknown ZRF variant {variant!r}; use 'js' (base-2 JS, default) or 'reference_code'.")


# --------------------------------------------------------------------------------------------
# representation probe
# --------------------------------------------------------------------------------------------


def _probe_inputs(train_features, train_y, test_features, test_y, convert, y_name: str):
    """Checked ``(Xtr, ytr, Xte, yte)`` for a probe: 2-D features of one width, one target per row."""
    Xtr = _floats(train_features, "train_features", ndim=2)
    Xte = _floats(test_features, "test_features", ndim=2)
    ytr = convert(train_y, f"train_{y_name}")
    yte = convert(test_y, f"test_{y_name}")
    _same_length(**{"train_features": Xtr, f"train_{y_name}": ytr})
    _same_length(**{"test_features": Xte, f"test_{y_name}": yte})
    if Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"Feature sizes differ: train {Xtr.shape[1]} vs test {Xte.shape[1]}.")
    return Xtr, ytr, Xte, yte


def linear_probe_accuracy(
    train_features: Any,
    train_is_class: Any,
    test_features: Any,
    test_is_class: Any,
    seed: int = 0,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
) -> dict[str, Any]:
    """Can a linear probe on (penultimate) features still tell class c from the rest?

    A one-vs-rest probe: standardise the features (fit on train), then a class-balanced
    logistic regression (``class_weight="balanced"``, L2, ``C``) fitted on ``train_*`` to predict
    "is this sample of class c?", scored on ``test_*``:

    - ``balanced_accuracy`` (%): mean of the true-positive and true-negative rates, so 50 means
      the probe cannot tell class c apart and 100 means it always can, whatever the class ratio;
    - ``auc``: ROC AUC of the probe's score, in [0, 1] (0.5 = chance).

    Knowledge removed from the representation (not only from the head) shows as a probe score
    near that of a model retrained without c; logit masking leaves it at the base model's level.

    Example::

        r = linear_probe_accuracy(feats_train, y_train == c, feats_test, y_test == c, seed=0)
        r["balanced_accuracy"], r["auc"]   # e.g. (99.1, 0.998) base; ~(50, 0.5) if c is gone
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, ytr, Xte, yte = _probe_inputs(train_features, train_is_class, test_features, test_is_class,
                                       _bool_mask, "is_class")
    for name, y in (("train_is_class", ytr), ("test_is_class", yte)):
        if y.all() or not y.any():
            raise ValueError(f"`{name}` must contain both samples of class c (True) and others (False).")
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed),
    )
    probe.fit(Xtr, ytr)
    pred = probe.predict(Xte)
    score = probe.decision_function(Xte)
    return {
        "balanced_accuracy": float(100.0 * balanced_accuracy_score(yte, pred)),
        "auc": float(roc_auc_score(yte, score)),
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
        "n_test_positive": int(yte.sum()),
    }


def few_shot_probe_accuracy(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    classes: Any,
    *,
    shots: int = 5,
    draws: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """How easily can the forgotten class be relearned from the frozen features? (few-shot probe)

    A nearest-class-mean classifier over **all** classes is built from ``shots`` labelled training
    samples per class (cosine similarity to each class's mean L2-normalised feature, as in few-shot
    evaluation), then scored on the test samples of ``classes``: the % assigned to their own class.
    Repeated for ``draws`` seeded draws of the shots; the mean and the spread are returned.

    Why next to :func:`linear_probe_accuracy`: with thousands of labelled samples a linear probe
    finds almost any class in almost any features (on Fashion-MNIST even a model that never saw the
    class gives ~94% balanced accuracy), so it cannot tell a class the network still encodes from one
    it never learned. A handful of samples can: features trained on the class cluster it tightly,
    features that never learned it (or had it removed) do not. Logit masking leaves the features
    untouched, so its score equals the base model's exactly; a model retrained without the class
    scores far lower. Closer to retrain = more forgotten.

    Args:
        train_features, train_labels: features ``(N, D)`` and labels of the training split; every
            class present needs at least ``shots`` samples.
        test_features, test_labels: the evaluation features and labels.
        classes: the forgotten class id(s) scored.
        shots: labelled samples per class (5 by default).
        draws: seeded repetitions.

    Example::

        r = few_shot_probe_accuracy(feats_train, y_train, feats_test, y_test, [5], shots=5)
        r["accuracy"], r["std"]   # e.g. 97.8 for the base model, 24.6 for a model retrained without 5
    """
    Xtr, ytr, Xte, yte = _probe_inputs(train_features, train_labels, test_features, test_labels, _labels, "labels")
    if int(shots) < 1 or int(draws) < 1:
        raise ValueError(f"shots and draws must be >= 1, got shots={shots}, draws={draws}.")
    wanted = np.atleast_1d(np.asarray(classes, dtype=np.int64))
    label_set = np.unique(ytr)
    missing = sorted(set(wanted.tolist()) - set(label_set.tolist()))
    if missing:
        raise ValueError(f"Classes {missing} have no training samples: the probe cannot be given their shots.")
    counts = {int(c): int((ytr == c).sum()) for c in label_set}
    short = {c: n for c, n in counts.items() if n < shots}
    if short:
        raise ValueError(f"Classes with fewer than shots={shots} training samples: {short}; lower `shots` "
                         "or give more training samples.")
    scored = np.isin(yte, wanted)
    if not scored.any():
        raise ValueError(f"No test samples of classes {wanted.tolist()}.")

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    Ztr, Zte = unit(Xtr), unit(Xte[scored])
    target = np.searchsorted(label_set, yte[scored])  # positions in label_set
    by_class = [np.flatnonzero(ytr == c) for c in label_set]
    rng = np.random.default_rng(seed)
    per_draw = []
    for _ in range(int(draws)):
        means = np.stack([Ztr[rng.choice(idx, size=int(shots), replace=False)].mean(0) for idx in by_class])
        pred = (Zte @ unit(means).T).argmax(1)
        per_draw.append(float(100.0 * np.mean(pred == target)))
    return {
        "accuracy": float(np.mean(per_draw)),
        "std": float(np.std(per_draw)),
        "per_draw": per_draw,
        "shots": int(shots),
        "draws": int(draws),
        "n_test": int(scored.sum()),
    }


# --------------------------------------------------------------------------------------------
# representation similarity
# --------------------------------------------------------------------------------------------


def linear_cka(features_a: Any, features_b: Any) -> float:
    """Linear centred kernel alignment (Kornblith et al., ICML 2019) of two feature sets.

    ``features_a`` ``(n, d1)`` and ``features_b`` ``(n, d2)`` are two models' features of the SAME
    ``n`` samples, in the same order (the widths may differ). With column-centred ``X`` and ``Y``::

        CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

    It lies in [0, 1]; it is 1 for features equal up to an orthogonal transform and an isotropic
    scale, and near 0 for unrelated ones (about ``d / n`` for independent random features). The suite
    reports it on the forgotten class's test samples against the model retrained without the class
    ("Are We Truly Forgetting?", arXiv 2503.06991): the unlearned model's CKA to the retrain next to
    the base's; closer to 1 than the base = the class's representation moved towards the oracle's.

    Example:
        >>> X = np.random.default_rng(0).normal(size=(50, 4))
        >>> round(linear_cka(X, 3 * X @ np.linalg.qr(np.ones((4, 4)) + np.eye(4))[0]), 6)
        1.0
    """
    X = _floats(features_a, "features_a", ndim=2)
    Y = _floats(features_b, "features_b", ndim=2)
    _same_length(features_a=X, features_b=Y)
    if len(X) < 2:
        raise ValueError(f"linear_cka needs at least 2 samples, got {len(X)}.")
    X = X - X.mean(0, keepdims=True)
    Y = Y - Y.mean(0, keepdims=True)
    # Work with the n x n Gram matrices when n is small, the d x d ones otherwise: same value.
    if len(X) <= max(X.shape[1], Y.shape[1]):
        K, L = X @ X.T, Y @ Y.T
        cross, norm_x, norm_y = float((K * L).sum()), float(np.linalg.norm(K)), float(np.linalg.norm(L))
    else:
        cross = float(np.linalg.norm(Y.T @ X) ** 2)
        norm_x, norm_y = float(np.linalg.norm(X.T @ X)), float(np.linalg.norm(Y.T @ Y))
    if norm_x == 0.0 or norm_y == 0.0:
        which = "features_a" if norm_x == 0.0 else "features_b"
        raise ValueError(f"`{which}` is constant over the samples: CKA is undefined (a collapsed feature set?).")
    return float(min(1.0, max(0.0, cross / (norm_x * norm_y))))
