"""Run a model under many forget choices over a dataset, in few forward passes.

Every batch is repeated once per choice ("row") and run as ONE forward with a per-sample
selection, so evaluating the base model plus all N_c rows costs one pass over the data with an
(N_c + 1)-times larger batch.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..tuners.weight_filter.selection import normalize_selection
from .gather import _uneven, gather_uneven, lockstep


def _selection_for(choices: Sequence[Any], num_classes: int, label2id, batch: int) -> torch.Tensor:
    rows = [normalize_selection(choice, num_classes, label2id) for choice in choices]
    width = max((r.shape[1] for r in rows if r is not None), default=1)
    block = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        if r is not None:
            if r.shape[0] != 1:
                raise ValueError("Each evaluation choice must be one class or one set, not a per-sample selection.")
            block[i, : r.shape[1]] = r[0]
    return block.repeat_interleave(batch, dim=0)


@torch.no_grad()
def predict_choices(
    adapter,
    loader,
    choices: Sequence[Any],
    *,
    accelerator=None,
    keep_logits: bool = False,
    progress: bool = True,
    desc: str = "evaluating",
) -> dict:
    """Predictions of ``adapter`` under each forget choice (None = base model) on every sample.

    Returns ``{"labels": (n,), "preds": (len(choices), n), "logits": (len(choices), n, C) or None}``
    as numpy arrays, gathered over processes when an ``accelerator`` is given.

    Example:

    ```py
    >>> out = predict_choices(adapter, test_loader, [None] + list(range(adapter.num_classes)))
    >>> out["preds"].shape            # base + one row per class
    (11, 10000)
    ```
    """
    from tqdm.auto import tqdm

    model = adapter.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    num_classes, label2id = adapter.num_classes, adapter.label2id
    all_preds, all_labels, all_logits = [], [], []
    show = progress and (accelerator is None or accelerator.is_main_process)
    uneven = _uneven(accelerator)
    for batch in tqdm(lockstep(loader, accelerator), desc=desc, disable=not show, leave=False):
        if batch is None:  # out of batches while other ranks still have some (even_batches=False)
            gathered = gather_uneven(accelerator, None)
            if gathered is None:
                break
            logits, labels = gathered
        else:
            pixels, labels = batch["pixel_values"].to(device), batch["labels"].to(device)
            b = pixels.shape[0]
            selection = _selection_for(choices, num_classes, label2id, b)
            logits = model(pixel_values=pixels.repeat(len(choices), 1, 1, 1), forget=selection).logits
            logits = logits.view(len(choices), b, -1).transpose(0, 1)  # (b, R, C): gather along dim 0
            if uneven:  # ranks' last batches differ in size: pad, gather, trim
                logits, labels = gather_uneven(accelerator, (logits.contiguous(), labels.contiguous()))
            elif accelerator is not None:
                logits, labels = accelerator.gather_for_metrics((logits.contiguous(), labels))
        all_preds.append(logits.argmax(-1).cpu())
        all_labels.append(labels.cpu())
        if keep_logits:
            all_logits.append(logits.float().cpu())
    model.train(was_training)
    if not all_labels:
        raise ValueError("The evaluation split is empty: nothing to evaluate.")
    preds = torch.cat(all_preds).T.numpy()
    logits = torch.cat(all_logits).transpose(0, 1).numpy() if keep_logits else None
    return {"labels": torch.cat(all_labels).numpy(), "preds": preds, "logits": logits}


def evaluate_rows(
    adapter, loader, *, rows: Optional[Sequence[int]] = None, accelerator=None, progress: bool = True
) -> dict:
    """Forget/retain accuracy of every row (each class forgotten alone), next to the base model.

    Returns the accuracy matrix ``A[c][y]`` and ``summarize_matrix``'s per-class and mean FA/RA,
    base RA and drop (percent).
    """
    from .metrics import accuracy_matrix, class_counts, per_class_accuracy, summarize_matrix

    rows = list(range(adapter.num_classes)) if rows is None else [adapter.class_id(r) for r in rows]
    out = predict_choices(adapter, loader, [None] + rows, accelerator=accelerator, progress=progress,
                          desc="rows")
    labels, preds = out["labels"], out["preds"]
    n = adapter.num_classes
    counts = class_counts(labels, n)
    missing = [adapter.id2label.get(c, str(c)) for c in rows if counts[c] == 0]
    if missing:
        raise ValueError(f"The evaluation split has no samples of {missing}: forget accuracy is undefined there.")
    base = per_class_accuracy(preds[0], labels, n)
    A = accuracy_matrix({c: preds[i + 1] for i, c in enumerate(rows)}, labels, n)
    summary = summarize_matrix(A, base, counts)
    return {
        "matrix": A,
        "summary": summary,
        "base_accuracy": float((preds[0] == labels).mean() * 100),
        "base_per_class": base,
        "class_counts": counts,
        "n_samples": int(len(labels)),
    }


def evaluate_sets(adapter, loader, sets: Sequence[Sequence[int]], *, accelerator=None, progress: bool = True) -> list[dict]:
    """Forget/retain accuracy for each forget set (rows multiplied), next to the base model."""
    from .metrics import set_accuracy

    sets = [sorted(adapter.class_id(c) for c in s) for s in sets]
    out = predict_choices(adapter, loader, [None] + sets, accelerator=accelerator, progress=progress, desc="sets")
    labels, preds = out["labels"], out["preds"]
    results = []
    for i, s in enumerate(sets):
        mine = set_accuracy(preds[i + 1], labels, s)
        base = set_accuracy(preds[0], labels, s)
        results.append({
            "classes": s,
            "forget_acc": mine["forget_acc"],
            "retain_acc": mine["retain_acc"],
            "base_retain_acc": base["retain_acc"],
            "retain_drop": base["retain_acc"] - mine["retain_acc"],
        })
    return results
