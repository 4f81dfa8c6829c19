"""The one prediction engine: run models over a dataset, every sample once, gathered across ranks.

A :class:`Predictor` is one model to run: a plain classifier, or an adapter under several forget
choices. For an adapter every batch is repeated once per choice ("row") and run as ONE forward with a
per-sample selection, so the base model plus all N_c rows cost one pass over the data with an
(N_c + 1)-times larger batch. :func:`run_predictors` runs several predictors over one loader and
gathers their outputs across processes (``accelerator.gather_for_metrics``, or
:func:`~hf_unlearn.evaluation.gather.gather_uneven` when ranks' batches differ in size), so every rank
ends with every sample exactly once, in dataset order.

The training job and the demo use the short forms :func:`predict_choices`, :func:`evaluate_rows` and
:func:`evaluate_sets`; :func:`~hf_unlearn.evaluation.suite.evaluate_unlearning` uses the engine itself
(features, confidences and probabilities of several models in one pass).

Example:

```py
>>> out = predict_choices(adapter, test_loader, [None] + list(range(adapter.num_classes)))
>>> out["preds"].shape            # base + one row per class
(11, 10000)
```
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from accelerate.data_loader import DataLoaderDispatcher, DataLoaderShard
from tqdm.auto import tqdm

from ..modeling import capture_classifier_input, classifier_module
from ..tuners.weight_filter.selection import normalize_selection
from .gather import gather_uneven, lockstep, uneven_batches
from .metrics import accuracy_matrix, class_counts, per_class_accuracy, set_accuracy, summarize_matrix

__all__ = ["OWN_LABEL", "PerSample", "Predictor", "evaluate_rows", "evaluate_sets", "predict_choices",
           "run_predictors"]


@dataclass(frozen=True)
class PerSample:
    """A forget choice read from the batch: sample i forgets the class ``batch[key][i]``."""

    key: str


OWN_LABEL = PerSample("labels")  # every sample forgets its own class: exact FA of every row in one pass


class Predictor:
    """One model to run over the data.

    Args:
        name: the key of its outputs in :func:`run_predictors`' result.
        model: a plain transformers classifier (ignored when ``adapter`` is given).
        adapter: an :class:`~hf_unlearn.UnlearnAdapter`, run under each of ``choices``.
        choices: adapter only; each entry ``None`` (no row: the base model), a list of class ids (one row,
            or a set: rows multiplied) or a :class:`PerSample` (e.g. :data:`OWN_LABEL`).
        features: also return the input of the final classifier layer (penultimate features).

    Example:
        >>> Predictor("target", None, adapter=adapter, choices=[None, [0], [1], OWN_LABEL], features=True)
    """

    def __init__(self, name: str, model=None, *, adapter=None, choices: Sequence[Any] = (None,),
                 features: bool = False):
        if adapter is None and list(choices) != [None]:
            raise ValueError("Forget choices need an adapter; a plain model has one output per sample.")
        self.name, self.model, self.adapter, self.choices = name, model, adapter, list(choices)
        self.classifier = classifier_module(adapter if adapter is not None else model) if features else None

    @property
    def device(self) -> torch.device:
        return next((self.adapter.model if self.adapter is not None else self.model).parameters()).device

    def selection(self, batch: dict, b: int) -> torch.Tensor:
        """The ``(len(choices) * b, width)`` class ids, padded with -1, of a batch repeated once per choice."""
        width = max([len(c) for c in self.choices if isinstance(c, (list, tuple))] + [1])
        blocks = []
        for choice in self.choices:
            block = torch.full((b, width), -1, dtype=torch.long)
            if isinstance(choice, PerSample):
                block[:, 0] = batch[choice.key].cpu()
            elif choice is not None:
                block[:, : len(choice)] = torch.as_tensor(list(choice), dtype=torch.long)
            blocks.append(block)
        return torch.cat(blocks)

    def __call__(self, batch: dict) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(logits (b, R, C), features (b, R, D) or None)`` for one batch, R = number of choices."""
        pixels = batch["pixel_values"]
        b = pixels.shape[0]
        capture = capture_classifier_input(self.classifier) if self.classifier is not None else contextlib.nullcontext()
        with capture as store:
            if self.adapter is not None:
                r = len(self.choices)
                logits = self.adapter.model(pixel_values=pixels.repeat(r, 1, 1, 1), forget=self.selection(batch, b)).logits
            else:
                r = 1
                logits = self.model(pixel_values=pixels).logits
        logits = logits.reshape(r, b, -1).transpose(0, 1).float().contiguous()
        if store is None:
            return logits, None
        return logits, store[-1].reshape(r, b, -1).transpose(0, 1).float().contiguous()


class _Collector:
    """Per-predictor outputs of the gathered batches, in dataset order (CPU tensors, then numpy)."""

    def __init__(self, predictors, keep_features, keep_probs, confidences: bool, keep_logits: bool):
        self.keep_features, self.keep_probs = keep_features, keep_probs
        self.confidences, self.keep_logits = confidences, keep_logits
        self.out = {p.name: {"preds": [], "conf": [], "feats": [], "probs": [], "logits": []} for p in predictors}
        self.labels: list = []
        self.offset = 0

    def add(self, labels: torch.Tensor, outputs: dict) -> None:
        lab = labels.cpu()
        b = lab.shape[0]
        idx = np.arange(self.offset, self.offset + b)
        fmask = torch.from_numpy(self.keep_features[idx]) if self.keep_features is not None else None
        pmask = torch.from_numpy(self.keep_probs[idx]) if self.keep_probs is not None else None
        for name, (logits, feats) in outputs.items():
            logits = logits.cpu()  # (b, R, C)
            out = self.out[name]
            out["preds"].append(logits.argmax(-1))
            if self.keep_logits:
                out["logits"].append(logits)
            if self.confidences or pmask is not None:
                logp = torch.log_softmax(logits.double(), dim=-1)
            if self.confidences:
                out["conf"].append(logp.gather(-1, lab.view(b, 1, 1).expand(b, logits.shape[1], 1)).squeeze(-1).exp())
            if feats is not None and (fmask is None or fmask.any()):
                feats = feats.cpu()
                out["feats"].append(feats if fmask is None else feats[fmask])
            if pmask is not None and pmask.any():
                out["probs"].append(logp[pmask].exp())
        self.labels.append(lab)
        self.offset += b

    def result(self) -> dict:
        def stack(parts, rows_first):  # per batch (b, R, ...) -> (R, n, ...)
            if not parts:
                return None
            x = torch.cat(parts)
            return (x.T if rows_first else x.transpose(0, 1)).numpy()

        result: dict[str, Any] = {"labels": torch.cat(self.labels).numpy() if self.labels else np.zeros(0, np.int64)}
        for name, out in self.out.items():
            result[name] = {"preds": stack(out["preds"], True), "conf": stack(out["conf"], True),
                            "feats": stack(out["feats"], False), "probs": stack(out["probs"], False),
                            "logits": stack(out["logits"], False)}
        return result


def _gathered_step(predictors, batch, accelerator, uneven: bool, device):
    """This step's ``(labels, {name: (logits, feats)})`` from every rank; None once every rank is done."""
    if batch is None:  # out of batches while other ranks still have some (even_batches=False)
        flat = gather_uneven(accelerator, None)
        if flat is None:
            return None
    else:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        flat = [batch["labels"]]
        for p in predictors:
            logits, feats = p(batch)
            flat += [logits] if feats is None else [logits, feats]
        if uneven:  # ranks' last batches differ in size: pad, gather, trim
            flat = gather_uneven(accelerator, tuple(t.contiguous() for t in flat))
        elif accelerator is not None:
            flat = accelerator.gather_for_metrics(tuple(flat))
    flat = list(flat)
    labels, outputs = flat.pop(0), {}
    for p in predictors:
        logits = flat.pop(0)
        outputs[p.name] = (logits, flat.pop(0) if p.classifier is not None else None)
    return labels, outputs


@torch.no_grad()
def run_predictors(predictors: Sequence[Predictor], loader, *, accelerator=None, device=None,
                   expected_labels: Optional[np.ndarray] = None, keep_features: Optional[np.ndarray] = None,
                   keep_probs: Optional[np.ndarray] = None, confidences: bool = False, keep_logits: bool = False,
                   progress: bool = True, desc: str = "evaluating") -> dict:
    """Run every predictor over ``loader`` (unshuffled; sharded once, by ``accelerator.prepare``).

    Returns ``{"labels": (n,), name: {"preds": (R, n), "conf": (R, n), "logits": (R, n, C),
    "feats": (R, m, D), "probs": (R, m, C)}}`` as numpy arrays (None where not asked for): ``conf`` the
    softmax probability of the true label (``confidences=True``); ``feats`` of the predictors built with
    ``features=True``, for the samples where ``keep_features`` is True (None: all); ``probs`` the softmax
    probabilities where ``keep_probs`` is True. ``expected_labels``: the split's labels in order; the
    pass fails unless it saw exactly those (a shuffled or twice-sharded loader).

    Example:
        >>> out = run_predictors([Predictor("base", model), Predictor("wf", adapter=adapter, choices=[[3]])],
        ...                      test_loader, confidences=True)
        >>> out["wf"]["preds"].shape   # (1, n)
    """
    if accelerator is not None and accelerator.num_processes > 1 and not isinstance(
            loader, (DataLoaderShard, DataLoaderDispatcher)):
        raise ValueError("With several processes the loader must be passed through accelerator.prepare(...) first; "
                         "otherwise every process evaluates the whole split and the gather repeats it.")
    device = device if device is not None else predictors[0].device
    collector = _Collector(predictors, keep_features, keep_probs, confidences, keep_logits)
    n = None if expected_labels is None else len(expected_labels)
    uneven = uneven_batches(accelerator)
    show = progress and (accelerator is None or accelerator.is_main_process)
    for batch in tqdm(lockstep(loader, accelerator), desc=desc, disable=not show, leave=False, dynamic_ncols=True):
        step = _gathered_step(predictors, batch, accelerator, uneven, device)
        if step is None:
            break
        if n is not None and collector.offset + len(step[0]) > n:
            raise RuntimeError(f"The loader yielded more than the {n} samples of the split (sharded twice?).")
        collector.add(*step)
    result = collector.result()
    if n is not None and (collector.offset != n or not np.array_equal(result["labels"], expected_labels)):
        raise RuntimeError(
            f"The evaluation pass saw {collector.offset} samples, not the split's {n} in order: the loader must be "
            "unshuffled and sharded once (by accelerator.prepare)."
        )
    if not collector.offset:
        raise ValueError("The evaluation split is empty: nothing to evaluate.")
    return result


def _choice_ids(choice: Any, num_classes: int, label2id) -> Optional[list[int]]:
    """One forget choice (a class or a set, ids or names) as its class ids; None = no row."""
    row = normalize_selection(choice, num_classes, label2id)
    if row is None:
        return None
    if row.shape[0] != 1:
        raise ValueError("Each evaluation choice must be one class or one set, not a per-sample selection.")
    return [int(c) for c in row[0] if c >= 0]


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
    rows = [_choice_ids(c, adapter.num_classes, adapter.label2id) for c in choices]
    model = adapter.model
    was_training = model.training
    model.eval()
    try:
        out = run_predictors([Predictor("adapter", adapter=adapter, choices=rows)], loader, accelerator=accelerator,
                             keep_logits=keep_logits, progress=progress, desc=desc)
    finally:
        model.train(was_training)
    return {"labels": out["labels"], "preds": out["adapter"]["preds"], "logits": out["adapter"]["logits"]}


def evaluate_rows(
    adapter, loader, *, rows: Optional[Sequence[int]] = None, accelerator=None, progress: bool = True
) -> dict:
    """Forget/retain accuracy of every row (each class forgotten alone), next to the base model.

    Returns the accuracy matrix ``A[c][y]`` and ``summarize_matrix``'s per-class and mean FA/RA,
    base RA and drop (percent).

    Example:
        >>> evaluate_rows(adapter, test_loader)["summary"]["mean_forget_acc"]
    """
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
    """Forget/retain accuracy for each forget set (rows multiplied), next to the base model.

    Example:
        >>> evaluate_sets(adapter, test_loader, [[0, 4], [2, 6]])[0]["retain_drop"]
    """
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
