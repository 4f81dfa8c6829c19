"""Convergence-driven untraining: measure the filters on a validation split while they train, and stop
when every row forgets and the retained classes have stopped improving.

The epoch count that makes a round good depends on the dataset's size (an 8,000-image dataset gets
126 steps from "2 epochs", Fashion-MNIST 938), so the round is scheduled in optimiser steps and ends
on a measurement instead:

- a seeded, class-stratified validation split is carved from the training data
  (:func:`stratified_validation_indices`), or a split the user names is used;
- every ``eval_every`` steps :func:`measure_rows` runs the validation split ONCE, each sample carrying
  several forget choices in the same forward (per-sample selection, like the evaluation runner):
  the base model, its own class's row (forget), ``validation_retain_rows`` random other rows (retain),
  and, with ``max_set_size > 1``, one random set containing its class and one not containing it. The
  cost is independent of the number of classes, and every row's forget accuracy is exact (all of its
  class's validation samples run with it);
- :class:`ConvergenceTracker` stops the round at the first measurement where the worst row's forget
  accuracy is at or under ``target_forget_acc`` and the mean retain accuracy has not improved by
  ``min_retain_delta`` for ``patience`` measurements; ``max_steps`` bounds it (a target not met by then is reported, not an error).

Example:

```py
>>> args = UntrainingArguments(eval_every=50, max_steps=1500)   # steps, not epochs
>>> summary = untrain(adapter, loader, args, validation_loader=val_loader)
>>> summary["stop_reason"], summary["convergence"]["history"][-1]["worst_forget_acc"]
('converged', 0.0)
```
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ..evaluation.plots import new_figure, save_figure
from .objective import pad_selection, sample_forget_sets

STOP_CONVERGED = "converged"  # every row at/under the target and retain accuracy stopped improving
STOP_BUDGET = "budget"  # max_steps reached with the forget target met (retain still improving)
STOP_BUDGET_TARGET_NOT_MET = "budget_target_not_met"  # max_steps reached, some row still above the target
STOP_EPOCHS = "epochs"  # no convergence check: the epoch/step schedule ran out


def stratified_validation_indices(
    labels: Sequence[int], num_classes: int, *, fraction: float, max_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, class-stratified ``(train_indices, validation_indices)`` of a labelled split.

    Each class gives the same share of its examples (``fraction``, all classes together capped at
    ``max_samples``), at least one example, and keeps at least one for training. Raises a
    ``ValueError`` naming the classes when a class cannot do both.

    Example:

    ```py
    >>> train_idx, val_idx = stratified_validation_indices(labels, 10, fraction=0.1, max_samples=2000, seed=0)
    ```
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}.")
    if max_samples < num_classes:
        raise ValueError(
            f"validation_max_samples={max_samples} cannot hold one example of each of the {num_classes} classes: "
            f"raise it to at least {num_classes}."
        )
    counts = np.bincount(labels, minlength=num_classes)
    share = min(fraction, max_samples / max(1, len(labels)))
    too_small = [c for c in range(num_classes) if counts[c] < 2]
    if too_small:
        raise ValueError(
            f"The training data has fewer than 2 examples of class(es) {too_small[:10]}: a validation split cannot "
            "hold each class and leave one for training. Add data for these classes, or pass --validation_split "
            "with a split that has them (or --eval_every 0 to train without a convergence check)."
        )
    rng = np.random.default_rng(seed)
    val = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        take = int(min(counts[c] - 1, max(1, round(share * counts[c]))))
        val.append(rng.choice(members, size=take, replace=False))
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def check_validation_classes(labels: Sequence[int], num_classes: int, class_names: Optional[Sequence[str]] = None):
    """Raise if a validation split misses a class: that row's forget accuracy could not be measured."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    missing = [c for c in range(num_classes) if counts[c] == 0]
    if missing:
        names = [class_names[c] if class_names else c for c in missing]
        raise ValueError(
            f"The validation split has no example of {len(missing)} class(es) {names[:10]}: every row's forget "
            "accuracy must be measured. Use a larger split (--validation_split, --validation_fraction, "
            "--validation_max_samples), or --eval_every 0 to train without a convergence check."
        )


def _validation_choices(labels: torch.Tensor, num_classes: int, *, retain_rows: int, max_set_size: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """``(K, B, width)`` forget choices for a validation batch and the kind of each of the K passes."""
    b = labels.shape[0]
    width = max(1, min(max_set_size, num_classes - 1))
    passes, kinds = [torch.full((b, width), -1, dtype=torch.long)], ["base"]
    own = torch.full((b, width), -1, dtype=torch.long)
    own[:, 0] = labels
    passes.append(own)
    kinds.append("forget")
    for _ in range(min(retain_rows, num_classes - 1)):
        passes.append(pad_selection(sample_forget_sets(labels, num_classes, contain=False, max_set_size=1, set_prob=0.0,
                                              generator=generator), width))
        kinds.append("retain")
    if width > 1:
        for contain, kind in ((True, "set_forget"), (False, "set_retain")):
            passes.append(pad_selection(sample_forget_sets(labels, num_classes, contain=contain, max_set_size=width,
                                                  set_prob=1.0, generator=generator), width))
            kinds.append(kind)
    return torch.stack(passes), kinds


@torch.no_grad()
def measure_rows(model, loader, num_classes: int, *, retain_rows: int = 2, max_set_size: int = 2, seed: int = 0,
                 device=None) -> dict:
    """Forget accuracy of every row and the mean retain accuracy (filtered vs base) on a validation loader.

    ``model`` is the filtered model (a ``PeftModel`` taking ``forget=``); ``loader`` must yield the same
    batches in the same order every time (no shuffling): the random rows and sets are drawn from
    ``(seed, batch index)``, so successive measurements compare the same pairs. Percentages.

    Example:

    ```py
    >>> m = measure_rows(adapter.model, val_loader, adapter.num_classes)
    >>> m["worst_forget_acc"], m["retain_drop"]
    ```
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    forget_hits = torch.zeros(num_classes, dtype=torch.float64)
    forget_counts = torch.zeros(num_classes, dtype=torch.float64)
    sums = {k: 0.0 for k in ("retain", "retain_base", "set_forget", "set_retain", "set_retain_base", "base")}
    counts = {"retain": 0, "set_forget": 0, "set_retain": 0, "base": 0}
    for index, batch in enumerate(loader):
        pixels, labels = batch["pixel_values"].to(device), batch["labels"].cpu()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
        choices, kinds = _validation_choices(labels, num_classes, retain_rows=retain_rows,
                                             max_set_size=max_set_size, generator=gen)
        k, b = choices.shape[0], labels.shape[0]
        logits = model(pixel_values=pixels.repeat(k, 1, 1, 1), forget=choices.reshape(k * b, -1)).logits
        correct = (logits.argmax(-1).cpu().view(k, b) == labels[None, :]).double()
        base = correct[0]
        sums["base"] += float(base.sum())
        counts["base"] += b
        for i, kind in enumerate(kinds[1:], start=1):
            if kind == "forget":
                forget_hits.index_add_(0, labels, correct[i])
                forget_counts.index_add_(0, labels, torch.ones(b, dtype=torch.float64))
            elif kind in ("retain", "set_retain"):
                sums[kind] += float(correct[i].sum())
                sums[kind + "_base"] += float(base.sum())
                counts[kind] += b
            else:
                sums[kind] += float(correct[i].sum())
                counts[kind] += b
    model.train(was_training)
    if counts["base"] == 0:
        raise ValueError("The validation split is empty.")
    per_class = (100 * forget_hits / forget_counts.clamp(min=1)).tolist()
    measured = forget_counts > 0
    out = {
        "forget_acc_per_class": [round(v, 3) if m else None for v, m in zip(per_class, measured.tolist())],
        "forget_count_per_class": [int(n) for n in forget_counts.tolist()],
        "forget_hits_per_class": [int(n) for n in forget_hits.tolist()],
        "worst_forget_acc": max(v for v, m in zip(per_class, measured.tolist()) if m),
        "mean_forget_acc": float(np.mean([v for v, m in zip(per_class, measured.tolist()) if m])),
        "base_acc": 100 * sums["base"] / counts["base"],
        "n_samples": counts["base"],
    }
    if counts["retain"]:
        out["retain_acc"] = 100 * sums["retain"] / counts["retain"]
        out["base_retain_acc"] = 100 * sums["retain_base"] / counts["retain"]
        out["retain_drop"] = out["base_retain_acc"] - out["retain_acc"]
    if counts["set_forget"]:
        out["set_forget_acc"] = 100 * sums["set_forget"] / counts["set_forget"]
        out["set_retain_drop"] = 100 * (sums["set_retain_base"] - sums["set_retain"]) / counts["set_retain"]
    return out


def binomial_tail(errors: int, n: int, p: float) -> float:
    """P(X >= errors) for X ~ Binomial(n, p): how likely this many misses are if the true rate were ``p``."""
    if errors <= 0:
        return 1.0
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(errors, n + 1)))


def rows_above_target(measurement: dict, target_forget_acc: float, confidence: Optional[float] = None) -> list[int]:
    """Rows whose validation forget accuracy is above ``target_forget_acc`` (%).

    Plainly (``confidence=None``), or only where that is significant: with 30 validation images per class
    (100 classes), "at or under 1%" means not one error in any of 3,000 images, which a round reaches by
    chance; with ``confidence=0.95`` a row fails only if its misses would have a probability under 5% at
    a true forget accuracy equal to the target (one-sided exact binomial test; 30 images: 2 misses fail,
    1 passes). Measurements without per-class counts (older checkpoints) use the plain rule.

    Example:

    ```py
    >>> m = {"forget_acc_per_class": [0.0, 3.333], "forget_count_per_class": [30, 30], "forget_hits_per_class": [0, 1]}
    >>> rows_above_target(m, 1.0), rows_above_target(m, 1.0, confidence=0.95)
    ([1], [])
    ```
    """
    accs = measurement["forget_acc_per_class"]
    above = [c for c, acc in enumerate(accs) if acc is not None and acc > target_forget_acc + 1e-9]
    counts, hits = measurement.get("forget_count_per_class"), measurement.get("forget_hits_per_class")
    if confidence is None or counts is None or hits is None:
        return above
    p = target_forget_acc / 100
    return [c for c in above if binomial_tail(hits[c], counts[c], p) < 1 - confidence]


@dataclass
class ConvergenceTracker:
    """Decides when a round is done from successive :func:`measure_rows` results.

    Stop at the first measurement where the worst row's forget accuracy is ``<= target_forget_acc`` (with
    ``forget_confidence``: no row significantly above it, see :func:`rows_above_target`) and the retain
    accuracy has not improved on its best by more than ``min_retain_delta`` points for ``patience``
    measurements in a row.
    Its state is a plain dict (``state_dict``/``load_state_dict``) so that a resumed run decides the same.

    Example:

    ```py
    >>> tracker = ConvergenceTracker(target_forget_acc=1.0, patience=2)
    >>> tracker.update(50, {"worst_forget_acc": 0.0, "retain_acc": 95.0})  # None: keep going
    ```
    """

    target_forget_acc: float = 1.0
    patience: int = 2
    min_retain_delta: float = 0.05
    forget_confidence: Optional[float] = None
    best_retain_acc: Optional[float] = None
    stale: int = 0
    history: list = field(default_factory=list)

    def _forgotten(self, measurement: dict) -> bool:
        if self.forget_confidence is None:
            return measurement["worst_forget_acc"] <= self.target_forget_acc
        return not rows_above_target(measurement, self.target_forget_acc, self.forget_confidence)

    def target_met(self) -> bool:
        return bool(self.history) and self._forgotten(self.history[-1])

    def update(self, step: int, measurement: dict) -> Optional[str]:
        """Record one measurement; returns :data:`STOP_CONVERGED` when the round should end, else None."""
        record = {"step": int(step), **{k: v for k, v in measurement.items()}}
        self.history.append(record)
        retain = measurement.get("retain_acc", 0.0)
        # Retain accuracy is followed at every measurement; the round ends at the first measurement where
        # it has been flat for `patience` measurements AND every row is at/under the target (a noisy
        # worst row that dips in and out of the target does not restart the count).
        if self.best_retain_acc is None or retain > self.best_retain_acc + self.min_retain_delta:
            self.best_retain_acc = retain
            self.stale = 0
        else:
            self.stale += 1
        record["stale"] = self.stale
        met = self._forgotten(measurement)
        return STOP_CONVERGED if met and self.stale >= self.patience else None

    def state_dict(self) -> dict:
        return {"best_retain_acc": self.best_retain_acc, "stale": self.stale, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.best_retain_acc = state.get("best_retain_acc")
        self.stale = int(state.get("stale", 0))
        self.history = list(state.get("history", []))


def plot_convergence(history: Sequence[dict], path, *, target_forget_acc: float = 1.0, title: str = ""):
    """PNG: steps vs the worst row's forget accuracy and the mean retain drop (validation split).

    Example:

    ```py
    >>> plot_convergence(metrics["convergence"]["history"], "runs/wf/convergence.png")
    ```
    """
    if not history:
        raise ValueError("No convergence measurement to plot (was eval_every > 0?).")
    steps = [h["step"] for h in history]
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, [h["worst_forget_acc"] for h in history], "o-", color="#d62728", label="worst-row forget acc %")
    ax.plot(steps, [h["mean_forget_acc"] for h in history], ".--", color="#ff9896", label="mean forget acc %")
    ax.axhline(target_forget_acc, color="#d62728", lw=0.8, ls=":", label=f"target {target_forget_acc:g}%")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("forget accuracy (%)")
    ax.set_yscale("symlog", linthresh=1.0)
    top = max([2 * target_forget_acc] + [h["worst_forget_acc"] * 1.5 for h in history])
    ax.set_ylim(-0.05, top)  # the target line must not sit on the frame
    ax2 = ax.twinx()
    ax2.plot(steps, [h.get("retain_drop", float("nan")) for h in history], "s-", color="#1f77b4",
             label="mean retain drop (pt)")
    ax2.set_ylabel("retain drop (pt)", color="#1f77b4")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
    ax.set_title(title or "untraining convergence (validation split)")
    return save_figure(fig, path)


# -- the glue the untraining loop calls (hf_unlearn.training.untrain) ----------------------------------


def make_tracker(args, validation_loader) -> Optional[ConvergenceTracker]:
    """The round's tracker (``args.eval_every > 0``, with a validation loader), else None."""
    if not args.eval_every:
        return None
    if validation_loader is None:
        raise ValueError("eval_every > 0 needs a validation_loader (the job carves one from the training data).")
    return ConvergenceTracker(target_forget_acc=args.target_forget_acc, patience=args.patience,
                              min_retain_delta=args.min_retain_delta,
                              forget_confidence=args.forget_confidence)


def convergence_check(tracker, model, validation_loader, num_classes: int, args, step: int, accelerator,
                      bar) -> Optional[str]:
    """Measure the rows on the validation split; returns :data:`STOP_CONVERGED` or None, every rank as rank 0."""
    from accelerate.utils import broadcast  # accelerate: only where a distributed round runs

    # Every rank measures the whole split with the same filters (no sharding, no gather), so the
    # trackers agree; the broadcast below makes the decision rank 0's regardless.
    measurement = measure_rows(accelerator.unwrap_model(model), validation_loader, num_classes,
                               retain_rows=args.validation_retain_rows, max_set_size=args.max_set_size,
                               seed=args.seed, device=accelerator.device)
    reason = tracker.update(step, measurement)
    flag = broadcast(torch.tensor([1 if reason else 0], device=accelerator.device), from_process=0)
    accelerator.log({f"val/{k}": v for k, v in measurement.items() if isinstance(v, (int, float))}, step=step)
    if args.progress and accelerator.is_main_process:
        bar.write(f"step {step}: validation worst-row FA {measurement['worst_forget_acc']:.2f}% "
                  f"(mean {measurement['mean_forget_acc']:.2f}%), retain drop {measurement.get('retain_drop', 0):.2f} pt"
                  + (f", sets FA {measurement['set_forget_acc']:.2f}% drop {measurement['set_retain_drop']:.2f} pt"
                     if "set_forget_acc" in measurement else ""))
    return STOP_CONVERGED if int(flag.item()) else None


def final_stop_reason(tracker, stop_reason: Optional[str], accelerator, total_steps: int) -> str:
    """Why the round ended; warns (and prints) when the step budget ran out before the forget target."""
    if tracker is None:
        return STOP_EPOCHS
    if stop_reason:
        return stop_reason
    if tracker.target_met():
        return STOP_BUDGET
    last = tracker.history[-1] if tracker.history else {}
    rule = (f"{tracker.target_forget_acc:g}% on every row" if tracker.forget_confidence is None else
            f"no row significantly above {tracker.target_forget_acc:g}% at {tracker.forget_confidence:g} confidence")
    message = (f"The forget target ({rule}) was not met within the budget of "
               f"{total_steps} steps: the worst row is at {last.get('worst_forget_acc', float('nan')):.2f}% on the "
               "validation split. The adapter is saved as it is; raise --max_steps (or the learning rate) to go on.")
    warnings.warn(message, stacklevel=3)
    accelerator.print(f"WARNING: {message}")
    return STOP_BUDGET_TARGET_NOT_MET
