"""Forgetting sets of several classes at once: random sets of each size, forget and retain accuracy per size.

A set is served by multiplying its members' rows (``adapter.model(..., forget=[a, b, c])``). This module
draws ``sets_per_size`` distinct random sets of every requested size (seeded) and reports, per size, the
mean and worst forget accuracy (on the set's classes) and retain drop (base minus filtered accuracy on
every other class), each set evaluated on the whole split.

Example:

```py
>>> from hf_unlearn.evaluation.sets import evaluate_set_sizes
>>> out = evaluate_set_sizes(adapter, test_loader, set_sizes=[2, 3, 4, 5], sets_per_size=20)
>>> out["by_size"]["5"]["mean_retain_drop"]
```
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Optional, Sequence

import numpy as np

from .predict import evaluate_sets


def random_sets(num_classes: int, size: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` distinct random sets of ``size`` classes (all of them if there are fewer), seeded, sorted.

    Example:

    ```py
    >>> random_sets(10, 3, 2, seed=0)
    [[0, 4, 7], [2, 5, 9]]
    ```
    """
    if not 1 <= size <= num_classes:
        raise ValueError(f"A forget set of {size} classes is impossible with {num_classes} classes: use sizes "
                         f"1..{num_classes}.")
    if count < 1:
        raise ValueError(f"sets_per_size must be >= 1, got {count}.")
    rng = random.Random(seed * 1009 + size)
    if math.comb(num_classes, size) <= max(count * 4, 64):  # few combinations: enumerate and shuffle
        every = [list(c) for c in itertools.combinations(range(num_classes), size)]
        rng.shuffle(every)
        return sorted(every[:count])
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < count:
        chosen.add(tuple(sorted(rng.sample(range(num_classes), size))))
    return sorted(list(s) for s in chosen)


def _summary(results: list[dict]) -> dict:
    fa = np.array([r["forget_acc"] for r in results])
    drop = np.array([r["retain_drop"] for r in results])
    return {
        "n_sets": len(results),
        "mean_forget_acc": float(fa.mean()),
        "worst_forget_acc": float(fa.max()),
        "mean_retain_drop": float(drop.mean()),
        "std_retain_drop": float(drop.std(ddof=1)) if len(drop) > 1 else 0.0,
        "worst_retain_drop": float(drop.max()),
        "worst_set": results[int(drop.argmax())]["classes"],
    }


def evaluate_set_sizes(adapter, loader, set_sizes: Sequence[int], sets_per_size: int = 20, *, seed: int = 0,
                       accelerator=None, progress: bool = True) -> dict:
    """Forget accuracy and retain drop of ``sets_per_size`` random sets of each size (rows multiplied).

    Returns ``{"by_size": {"3": summary, ...}, "sets": {"3": [per-set results], ...}}`` (percent); one
    pass over ``loader`` per size, every set of that size in the same forward.
    """
    sizes = sorted({int(s) for s in set_sizes})
    sets_by_size = {s: random_sets(adapter.num_classes, s, sets_per_size, seed=seed) for s in sizes}  # checks first
    out: dict = {"set_sizes": sizes, "sets_per_size": sets_per_size, "seed": seed, "by_size": {}, "sets": {}}
    for size in sizes:
        results = evaluate_sets(adapter, loader, sets_by_size[size], accelerator=accelerator, progress=progress)
        out["sets"][str(size)] = results
        out["by_size"][str(size)] = _summary(results)
    return out


def format_set_sizes(result: dict, names: Optional[dict] = None) -> str:
    """A markdown table of :func:`evaluate_set_sizes`'s per-size summary."""
    lines = ["| set size | sets | mean FA % | worst FA % | mean retain drop pt (std) | worst drop pt (set) |",
             "|---|---|---|---|---|---|"]
    for size, s in result["by_size"].items():
        worst = ", ".join(str(names.get(c, c)) if names else str(c) for c in s["worst_set"])
        lines.append(f"| {size} | {s['n_sets']} | {s['mean_forget_acc']:.2f} | {s['worst_forget_acc']:.2f} | "
                     f"{s['mean_retain_drop']:.2f} ({s['std_retain_drop']:.2f}) | {s['worst_retain_drop']:.2f} "
                     f"({worst}) |")
    return "\n".join(lines)
