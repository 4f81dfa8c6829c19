"""k-shot relearning: how fast does a forgotten class come back under a small fine-tuning budget?

The attack a user fears most after unlearning: someone with the model and a handful of labelled
samples fine-tunes it briefly. If the class was only hidden (a masked logit, a head that no longer
fires) it returns at once; if it is gone from the features it returns no faster than in a model that
never learned it. The number is therefore read as a gap to the retrained model under the SAME budget
(the oracle), with the base model's number as the other end.

Procedure (:func:`kshot_relearn`), deterministic for a given ``seed``:

1. draw ``shots`` training samples of EVERY class (seeded, without replacement): the attacker's
   labelled set, balanced, so that fine-tuning has no reason to forget the other classes;
2. fine-tune a copy of the model on them for ``steps`` Adam steps (full batch when the set fits in
   ``batch_size``, else seeded mini-batches), either the final classifier layer only (``"head"``)
   or every parameter (``"full"``). The copy stays in eval mode: BatchNorm statistics and dropout as
   trained, because a few dozen samples would otherwise overwrite the statistics and the result would
   measure that, not the relearning;
3. report the accuracy (%) on the test samples of the forgotten class(es) before and after, and on
   the other test samples after (a budget that destroys the rest would be no attack).

Example:

```py
>>> from hf_unlearn.evaluation.relearn import kshot_relearn
>>> r = kshot_relearn(exported_model, x_train, y_train, x_test, y_test, classes=[5], shots=5, steps=30, mode="head")
>>> r["forget_acc"], r["forget_acc_before"], r["retain_acc"]
```
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.tensors import TensorDictDataset, collate_batches
from ..modeling import classifier_module
from .predict import Predictor, run_predictors

__all__ = ["RELEARN_MODES", "DEFAULT_RELEARN_LR", "kshot_relearn", "relearn_indices", "check_relearn_budget"]

RELEARN_MODES = ("head", "full")
# Adam learning rates per mode: the head alone takes a large step; the whole network a small one (a
# full fine-tune at 1e-2 on a few samples wrecks a small model, which would hide relearning in noise).
DEFAULT_RELEARN_LR = {"head": 1e-2, "full": 1e-3}


def check_relearn_budget(shots: Sequence[int], steps: int, modes: Sequence[str]) -> None:
    """Reject a budget that cannot measure anything, with the fix in the message."""
    if not shots:
        raise ValueError("relearn shots is empty: pass at least one shot count, e.g. (1, 5, 25).")
    for k in shots:
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"relearn shots must be positive integers (labelled samples per class), got {k!r}.")
    if isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
        raise ValueError(f"relearn steps must be >= 1 (a budget of {steps!r} steps fine-tunes nothing).")
    bad = [m for m in modes if m not in RELEARN_MODES]
    if bad or not modes:
        raise ValueError(f"relearn modes must be a non-empty subset of {RELEARN_MODES}, got {list(modes)!r}.")


def relearn_indices(train_labels: Any, shots: int, seed: int = 0) -> np.ndarray:
    """Indices of ``shots`` training samples of every class present (seeded, sorted).

    Raises a clear error when a class has fewer than ``shots`` samples.

    Example:
        >>> relearn_indices([0, 0, 1, 1, 1], shots=2, seed=0).size
        4
    """
    labels = np.asarray(train_labels, dtype=np.int64)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("train_labels must be a non-empty 1-D array of class ids.")
    classes, counts = np.unique(labels, return_counts=True)
    short = {int(c): int(n) for c, n in zip(classes, counts) if n < shots}
    if short:
        raise ValueError(f"k-shot relearning asks for shots={shots} samples per class, but these classes have fewer "
                         f"training samples: {short}. Lower the shot count or give a larger training split.")
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(shots), replace=False) for c in classes]
    return np.sort(np.concatenate(picked))


def _accuracy(model, pixels, labels, batch_size: int) -> float:
    """Accuracy (%) of ``model`` on in-memory tensors, through the one prediction engine; NaN when empty."""
    if len(labels) == 0:
        return float("nan")
    loader = DataLoader(TensorDictDataset(pixels, labels), batch_size=batch_size, collate_fn=collate_batches)
    out = run_predictors([Predictor("model", model)], loader, progress=False)
    correct = int((out["model"]["preds"][0] == out["labels"]).sum())
    return float(100.0 * correct / len(labels))


def kshot_relearn(
    model,
    train_pixels,
    train_labels,
    test_pixels,
    test_labels,
    classes: Sequence[int],
    *,
    shots: int = 5,
    steps: int = 30,
    mode: str = "head",
    learning_rate: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``model`` on ``shots`` samples per class; the forgotten classes' accuracy after.

    Args:
        model: a plain image classifier (``model(pixel_values=...).logits``): an exported unlearned
            model (``UnlearnAdapter.export``), a baseline's output, a retrain or the base. Not modified.
        train_pixels, train_labels: the pool the shots are drawn from (tensors; every class present
            needs ``shots`` samples). The suite passes the labelled training split.
        test_pixels, test_labels: evaluation samples (tensors).
        classes: the forgotten class id(s) whose test accuracy is the result.
        shots: labelled samples per class; steps: optimiser steps (the budget).
        mode: ``"head"`` (final classifier layer only) or ``"full"`` (every parameter).
        learning_rate: Adam learning rate (default :data:`DEFAULT_RELEARN_LR` for the mode).

    Returns:
        ``{"forget_acc", "forget_acc_before", "retain_acc", "shots", "steps", "mode", "learning_rate",
        "n_train", "n_test_forget"}`` (accuracies in %; ``retain_acc`` NaN when no other test samples).
    """
    check_relearn_budget([shots], steps, [mode])
    lr = DEFAULT_RELEARN_LR[mode] if learning_rate is None else float(learning_rate)
    if not lr > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    y_train = torch.as_tensor(train_labels).long().cpu()
    y_test = torch.as_tensor(test_labels).long().cpu()
    if len(y_train) != len(train_pixels) or len(y_test) != len(test_pixels):
        raise ValueError("pixels and labels must have the same number of samples (train and test).")
    wanted = torch.as_tensor(list(classes), dtype=torch.long)
    in_forget = torch.isin(y_test, wanted)
    if not in_forget.any():
        raise ValueError(f"No test samples of the forgotten class(es) {wanted.tolist()}: nothing to measure.")
    idx = torch.from_numpy(relearn_indices(y_train.numpy(), int(shots), seed))
    x_shots, y_shots = train_pixels[idx], y_train[idx]

    device = next(model.parameters()).device
    student = copy.deepcopy(model).eval()  # eval mode on purpose: see the module docstring
    head = classifier_module(student)
    trainable = list(head.parameters()) if mode == "head" else list(student.parameters())
    for p in student.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    x_test, y_test_d = test_pixels.to(device), y_test.to(device)
    before = _accuracy(student, x_test[in_forget.to(device)], y_test_d[in_forget.to(device)], batch_size)
    optimizer = torch.optim.Adam(trainable, lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(y_shots)
    for _ in range(int(steps)):
        pick = torch.arange(n) if n <= batch_size else torch.randperm(n, generator=gen)[:batch_size]
        logits = student(pixel_values=x_shots[pick].to(device)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), y_shots[pick].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    mask = in_forget.to(device)
    return {
        "forget_acc": _accuracy(student, x_test[mask], y_test_d[mask], batch_size),
        "forget_acc_before": before,
        "retain_acc": _accuracy(student, x_test[~mask], y_test_d[~mask], batch_size),
        "shots": int(shots),
        "steps": int(steps),
        "mode": mode,
        "learning_rate": lr,
        "n_train": int(n),
        "n_test_forget": int(in_forget.sum()),
    }
