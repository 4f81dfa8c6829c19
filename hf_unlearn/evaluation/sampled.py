"""Retain accuracy above ~20 classes: estimated from sampled (row, sample) pairs, with its standard error.

The exact accuracy matrix runs every row on every test sample (N x n forwards); above
``exact_limit`` classes the suite keeps forget accuracy exact (one pass, each sample with its own
class's row) and estimates retain accuracy from ``samples_per_row`` random retain samples per row,
stratified by row: unbiased, reported with its standard error.

Example:

```py
>>> pairs = sample_retain_pairs(test_labels, num_classes=100, samples_per_row=50, seed=0)
>>> preds = ...  # the adapter's prediction of pairs.samples[i] with row pairs.rows[i] selected
>>> sampled_retain_estimate(preds, test_labels, pairs)["mean_retain_acc"]
```
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import as_labels, as_num_classes, check_same_length, to_numpy

__all__ = ["RetainPairs", "sample_retain_pairs", "sampled_retain_estimate"]


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
    num_classes = as_num_classes(num_classes)
    labels = as_labels(labels, "labels", num_classes)
    if isinstance(samples_per_row, bool) or not isinstance(samples_per_row, (int, np.integer)) or samples_per_row < 2:
        raise ValueError(f"`samples_per_row` must be an integer >= 2 (needed for a stderr), got {samples_per_row!r}.")
    if rows is None:
        strata = np.arange(num_classes)
    else:
        strata = np.unique(as_labels(np.fromiter(rows, dtype=np.int64), "rows", num_classes))
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
    labels = as_labels(labels, "labels", pairs.num_classes)
    preds = as_labels(pair_preds, "pair_preds")
    check_same_length(pair_preds=preds, pairs=pairs.rows)
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
        base = to_numpy(base_per_class_acc, "base_per_class_acc").astype(np.float64)
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
