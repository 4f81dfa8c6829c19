"""The benchmark's equal-budget search over a peer method's hyperparameters.

Every tunable peer gets the same number of configurations: its defaults plus random draws from its
``search_space``, each run on one class with the training split minus a stratified validation split,
scored on that validation split by ``RA - FA`` (both %). The best one is then used for every class.

```py
>>> from hf_unlearn.baselines.tuning import stratified_split, tune_peer
>>> val = torch.from_numpy(stratified_split(y_train.numpy(), 0.1, seed=0))
>>> record = tune_peer("scrub", model, x_train[~val], y_train[~val], x_train[val], y_train[val], cls=3,
...                    trials=4, batch_size=128, seed=0, device="cpu")
>>> record["best"], [t["score"] for t in record["trials"]]
({'lr': 0.005}, [88.1, 91.3, 90.2, 89.7])
```
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Optional

import numpy as np
import torch

from . import get_baseline
from .base import tensor_loaders

__all__ = ["stratified_split", "val_accuracy", "candidate_configs", "tune_peer", "best_trial"]


def stratified_split(labels, fraction: float, seed: int) -> np.ndarray:
    """A boolean validation mask holding ``fraction`` of every class (at least one sample each), seeded."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        val[rng.choice(idx, size=k, replace=False)] = True
    return val


def val_accuracy(model, x, y, classes, device, batch_size: int = 512) -> tuple[float, float]:
    """``(forget accuracy %, retain accuracy %)`` of ``model`` on the tensors ``x, y``."""
    model.eval()
    with torch.no_grad():
        preds = torch.cat([model(pixel_values=x[i:i + batch_size].to(device)).logits.argmax(-1).cpu()
                           for i in range(0, len(x), batch_size)])
    forget = torch.isin(y, torch.as_tensor(classes))
    fa = 100.0 * (preds[forget] == y[forget]).float().mean().item()
    ra = 100.0 * (preds[~forget] == y[~forget]).float().mean().item()
    return fa, ra


def candidate_configs(space: dict, trials: int, seed: int) -> list[dict]:
    """The defaults ({}) plus ``trials - 1`` distinct random configurations from the grid."""
    grid = [dict(zip(space, values)) for values in itertools.product(*space.values())] if space else []
    rng = random.Random(seed)
    rng.shuffle(grid)
    return [{}] + grid[: max(0, trials - 1)]


def tune_peer(name: str, base, x_fit, y_fit, x_val, y_val, cls: int, *, trials: int, batch_size: int, seed: int,
              device, fixed: Optional[dict] = None, pinned=(), log: Callable[[str], None] = print) -> dict:
    """Equal-budget search: ``trials`` configurations (defaults first) of the peer's ``search_space``
    minus the ``pinned`` names (fixed by the user), each trained on ``x_fit, y_fit`` to forget ``cls``
    and scored on the validation split. ``fixed`` hyperparameters apply to every trial.

    Returns the record the benchmark stores: every trial, the best configuration, the budget.
    """
    fixed = dict(fixed or {})
    method = get_baseline(name)
    retain_loader, forget_loader = tensor_loaders(x_fit, y_fit, [cls], batch_size=batch_size, seed=seed)
    space = {k: v for k, v in method.search_space.items() if k not in pinned}
    records = []
    for config in candidate_configs(space, trials, seed):
        hp = {**fixed, **config}
        r = method.unlearn(base, [cls], retain_loader, forget_loader, hparams=hp, seed=seed, device=device)
        fa, ra = val_accuracy(r.model, x_val, y_val, [cls], device)
        records.append({"hparams": config, "val_forget_acc": fa, "val_retain_acc": ra, "score": ra - fa,
                        "seconds": r.seconds})
        log(f"[tune] {name} {config or '(defaults)'}: val FA {fa:.2f}% RA {ra:.2f}% ({r.seconds:.1f} s)")
    best = best_trial(records)
    return {"class": cls, "trials": records, "best": best["hparams"], "criterion": "val RA - val FA (%)",
            "budget_trials": len(records), "search_space": space, "fixed": fixed}


def best_trial(trials: list[dict]) -> dict:
    """The trial with the highest score; on a tie the earlier one (the defaults come first).

    Not the faster one: wall time differs from run to run on a shared machine, and the choice (so
    the benchmark's rows) must not.
    """
    return max(enumerate(trials), key=lambda it: (it[1]["score"], -it[0]))[1]
