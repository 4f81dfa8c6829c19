"""The suite's per-class measures beyond accuracy: MIA-efficacy, ZRF, the probes, CKA and k-shot relearning.

Each function takes what the suite's two passes gathered (``run_predictors`` outputs of the train
and the test split) and returns ``{model: {unit: value}}`` tables, a unit being the tuple of
forgotten classes (one per adapter row, or the forgotten set); :func:`arrange` turns a table into
the report's form (per-class lists in rows mode, one value per model for a set).

Example:

```py
>>> tables = unit_metrics(units, sources, train_out, test_out, labels, seed=0, max_mia_samples=None,
...                       few_shot_shots=5, few_shot_draws=10, progress=False)
>>> arrange(tables["mia"], "rows", units, num_classes=10)["unlearned"][4]
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .privacy import mia_efficacy, zrf_score
from .probes import few_shot_probe_accuracy, linear_cka, linear_probe_accuracy
from .relearn import kshot_relearn, relearn_indices

__all__ = ["SplitLabels", "arrange", "probe_subset", "relearn_table", "unit_metrics"]


@dataclass
class SplitLabels:
    """Labels of both splits and the masks of the samples each measure uses."""

    train: np.ndarray
    test: np.ndarray
    probe_train: np.ndarray  # the probes' training-split subset (features kept for these)
    probe_test: np.ndarray  # the probes' test-split subset
    zrf: np.ndarray  # training samples of any forgotten class (probabilities kept for these)


def probe_subset(labels: np.ndarray, limit: Optional[int], units, rng) -> np.ndarray:
    """Boolean mask of the samples used by the linear probe (all, or a seeded subset with positives).

    Example:
        >>> probe_subset(np.array([0, 1, 1, 2]), None, [(1,)], np.random.default_rng(0)).tolist()
        [True, True, True, True]
    """
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if limit is None or limit >= n:
        mask[:] = True
        return mask
    mask[rng.choice(n, size=int(limit), replace=False)] = True
    for classes in units:
        inside = np.isin(labels, classes)
        if not (mask & inside).any():
            mask[np.flatnonzero(inside)[:50]] = True
    return mask


def unit_metrics(units, sources: Callable[[tuple], Mapping[str, tuple[str, int]]], train_out: dict, test_out: dict,
                 labels: SplitLabels, *, seed: int, max_mia_samples: Optional[int], few_shot_shots: int,
                 few_shot_draws: int, progress: bool) -> dict[str, dict]:
    """MIA-efficacy, ZRF, linear probe (balanced accuracy, AUC), few-shot probe and CKA per unit and model.

    ``sources(unit)`` names, per model (``unlearned``, ``base``, ``retrain``), the predictor and choice
    index whose outputs to read. The random reference's probabilities are ``train_out["random"]``.

    Example:
        >>> unit_metrics(units, sources, train_out, test_out, labels, seed=0, max_mia_samples=None,
        ...              few_shot_shots=5, few_shot_draws=10, progress=False)["zrf"]["unlearned"][(4,)]
    """
    y_zrf = labels.train[labels.zrf]
    y_probe_train, y_probe_test = labels.train[labels.probe_train], labels.test[labels.probe_test]
    random_probs = train_out["random"]["probs"][0]
    tables: dict[str, dict] = {"mia": {}, "zrf": {}, "probe": {}, "auc": {}, "few_shot": {}, "cka": {}}
    for unit in tqdm(units, desc="MIA / ZRF / probe", disable=not progress, leave=False):
        by_model = sources(unit)
        forget_train = np.isin(labels.train, unit)
        retain_test = ~np.isin(labels.test, unit)
        zmask = np.isin(y_zrf, unit)
        for model_name, (name, i) in by_model.items():
            train, test = train_out[name], test_out[name]
            conf_train = train["conf"][i]
            mia = mia_efficacy(conf_train[~forget_train], test["conf"][i][retain_test],
                               conf_train[forget_train], seed=seed, max_samples=max_mia_samples)
            zrf = zrf_score(train["probs"][i][zmask], random_probs[zmask])
            probe = linear_probe_accuracy(train["feats"][i], np.isin(y_probe_train, unit),
                                          test["feats"][i], np.isin(y_probe_test, unit), seed=seed)
            few = few_shot_probe_accuracy(train["feats"][i], y_probe_train, test["feats"][i], y_probe_test,
                                          list(unit), shots=few_shot_shots, draws=few_shot_draws, seed=seed)
            for key, value in (("mia", mia), ("zrf", zrf), ("probe", probe["balanced_accuracy"]),
                               ("auc", probe["auc"]), ("few_shot", few["accuracy"])):
                tables[key].setdefault(model_name, {})[unit] = value
        if "retrain" in by_model:
            # CKA on the forget class's test features: same samples, model vs the oracle
            rows_test = np.isin(y_probe_test, unit)
            name_r, i_r = by_model["retrain"]
            oracle = test_out[name_r]["feats"][i_r][rows_test]
            for model_name in ("unlearned", "base"):
                if model_name in by_model:
                    name, i = by_model[model_name]
                    tables["cka"].setdefault(model_name, {})[unit] = linear_cka(test_out[name]["feats"][i][rows_test],
                                                                                oracle)
    return tables


def _optional(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def arrange(table: Mapping[str, Mapping[tuple, Any]], mode: str, units: Sequence[tuple], num_classes: int) -> dict:
    """A ``{model: {unit: value}}`` table in the report's form: per-class lists (rows) or one value (set).

    Example:
        >>> arrange({"unlearned": {(1,): 98.0}}, "rows", [(1,)], 3)
        {'unlearned': [None, 98.0, None]}
    """
    if mode == "set":
        return {model: values[units[0]] for model, values in table.items()}
    out = {}
    for model, values in table.items():
        row = [None] * num_classes
        for unit, v in values.items():
            row[unit[0]] = _optional(float(v))
        out[model] = row
    return out


def _pixels(dataset, indices: np.ndarray):
    """(pixel_values, labels) tensors of ``indices`` of a processed split (build_dataloader's dataset)."""
    items = dataset.__getitems__([int(i) for i in indices])
    return items["pixel_values"], torch.as_tensor(items["labels"]).long()


def relearn_table(units, models_of: Callable[[tuple], Mapping[str, Any]], train_dataset, test_dataset,
                  labels: SplitLabels, *, shots, steps, modes, max_test, seed, progress) -> dict[str, dict]:
    """k-shot relearning per unit for the models ``models_of(unit)`` names (unlearned, base, retrain).

    Returns ``{"<mode>-<k>shot": {model: {unit: forget accuracy after}}}`` (see :func:`arrange`).

    Example:
        >>> relearn_table(units, models_of, train_ds, test_ds, labels, shots=[5], steps=30, modes=["head"],
        ...               max_test=2000, seed=0, progress=False)["head-5shot"]["retrain"][(4,)]
    """
    rng = np.random.default_rng(seed)
    pools = {k: relearn_indices(labels.train, k, seed) for k in shots}
    union_pool = np.unique(np.concatenate(list(pools.values())))
    x_pool, y_pool = _pixels(train_dataset, union_pool)
    table: dict[str, dict] = {}
    for unit in tqdm(units, desc="k-shot relearning", disable=not progress, leave=False):
        forget_idx = np.flatnonzero(np.isin(labels.test, unit))
        others = np.flatnonzero(~np.isin(labels.test, unit))
        if max_test is not None and len(others) > max_test:
            others = np.sort(rng.choice(others, size=int(max_test), replace=False))
        x_test, y_test_t = _pixels(test_dataset, np.concatenate([forget_idx, others]))
        models = models_of(unit)
        for k in shots:
            # the same k-shot set for every model: positions of pools[k] inside the union pool
            pos = np.searchsorted(union_pool, pools[k])
            for mode in modes:
                for name, model in models.items():
                    r = kshot_relearn(model, x_pool[pos], y_pool[pos], x_test, y_test_t, list(unit), shots=k,
                                      steps=steps, mode=mode, seed=seed)
                    table.setdefault(f"{mode}-{k}shot", {}).setdefault(name, {})[unit] = r["forget_acc"]
    return table
