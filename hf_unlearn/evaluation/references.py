"""What the suite evaluates and against what: the target model, its forgotten classes, the retrain references.

- :class:`EvaluationPlan` (:func:`load_plan`, :func:`check_choice`, :func:`choose_units`): the model,
  the mode (every adapter row, or one forgotten set) and the units (tuples of forgotten classes),
  checked against the test split before any forward pass;

- :func:`load_target`: an adapter, a ``PeftModel``, a plain classifier or a folder of one, as
  ``(plain model, adapter or None, image processor, description)``;
- :func:`class_ids`: class ids or names (case-insensitive, through the one class resolver) as sorted ids;
- :func:`retrain_key` / :func:`load_retrains`: ``{class or set: folder or model}`` retrain references,
  keyed by the sorted tuple of their forgotten class ids and checked against the evaluated model.

Example:

```py
>>> plain, adapter, processor, description = load_target("runs/wf-resnet", None)
>>> class_ids(["coat", 2], 10, adapter.label2id)
[2, 4]
>>> load_retrains({"Coat": "runs/retrain-resnet/class-4"}, 10, adapter.label2id, wanted={(4,)})
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from peft import PeftModel
from peft.utils import CONFIG_NAME

from ..adapter import UnlearnAdapter
from ..modeling import load_classifier, load_image_processor
from ..tuners.weight_filter.selection import resolve_class

__all__ = [
    "EvaluationPlan", "check_choice", "check_retrains_given", "choose_units", "class_ids", "load_plan",
    "load_retrains", "load_target", "require_classes", "retrain_key",
]


def load_target(target, image_processor=None) -> tuple[Any, Optional[UnlearnAdapter], Any, str]:
    """``(plain model, adapter or None, image processor, description)`` for any accepted target.

    Example:
        >>> plain, adapter, processor, description = load_target("runs/resnet-without-coat")
    """
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if (path / CONFIG_NAME).is_file():  # an adapter folder has PEFT's adapter_config.json
            target = UnlearnAdapter.from_pretrained(path)
        else:
            target = load_classifier(path)
            if image_processor is None:
                image_processor = load_image_processor(path)
    if isinstance(target, PeftModel):
        target = UnlearnAdapter(target, image_processor)
    if isinstance(target, UnlearnAdapter):
        processor = image_processor if image_processor is not None else target.image_processor
        name = getattr(target.config, "base_model_name_or_path", None) or type(target.base_model).__name__
        return target.base_model, target, processor, f"UnlearnAdapter on {name}"
    if not hasattr(target, "config") or not hasattr(target, "forward"):
        raise TypeError(
            f"target must be an UnlearnAdapter, a transformers image classifier or a folder of one, got {type(target).__name__}."
        )
    name = getattr(target, "name_or_path", None) or type(target).__name__
    return target, None, image_processor, str(name)


def class_ids(refs, num_classes: int, label2id: Mapping[str, int]) -> list[int]:
    """Sorted unique class ids of one class or several (ids or names, through ``resolve_class``).

    Example:
        >>> class_ids("coat", 10, {"Coat": 4})
        [4]
    """
    if isinstance(refs, (int, str, np.integer)) and not isinstance(refs, bool):
        refs = [refs]
    try:
        ids = sorted({resolve_class(int(r) if isinstance(r, np.integer) else r, num_classes, label2id) for r in refs})
    except TypeError as err:
        raise ValueError(f"Cannot read the classes {refs!r}: {err}") from None
    if not ids:
        raise ValueError("The set of classes to forget is empty.")
    return ids


def retrain_key(key, num_classes: int, label2id: Mapping[str, int]) -> tuple[int, ...]:
    """The sorted tuple of class ids a retrain reference's key names (a class, or a set of classes).

    Example:
        >>> retrain_key(("Coat", 2), 10, {"Coat": 4})
        (2, 4)
    """
    if isinstance(key, (tuple, list, frozenset, set)):
        return tuple(class_ids(list(key), num_classes, label2id))
    return tuple(class_ids(key, num_classes, label2id))


def load_retrains(retrain_dirs, num_classes: int, label2id: Mapping[str, int], wanted: set) -> dict:
    """``{class tuple: (model in eval mode, description)}`` of the references whose key is in ``wanted``.

    A reference must keep all ``num_classes`` outputs (the forgotten ones just never trained).

    Example:
        >>> load_retrains({4: "runs/retrain-resnet/class-4"}, 10, {}, wanted={(4,)})[(4,)][1]
        'runs/retrain-resnet/class-4'
    """
    out = {}
    for key, value in (retrain_dirs or {}).items():
        classes = retrain_key(key, num_classes, label2id)
        if classes not in wanted:
            continue
        model = load_classifier(value) if isinstance(value, (str, os.PathLike)) else value
        n = getattr(model.config, "num_labels", None)
        if n != num_classes:
            raise ValueError(
                f"The retrain reference for {list(classes)} ({value}) has {n} outputs but the evaluated model has "
                f"{num_classes}: a retrain must keep all N outputs (the forgotten ones just never trained)."
            )
        out[classes] = (model.eval(), str(value) if isinstance(value, (str, os.PathLike)) else type(model).__name__)
    return out


@dataclass
class EvaluationPlan:
    """What one evaluation measures: the model, its classes, the units (tuples of forgotten classes).

    Built by :func:`load_plan`, completed by :func:`choose_units`.
    """

    plain: Any
    adapter: Any
    processor: Any
    description: str
    num_classes: int
    names: dict[int, str]
    label2id: dict[str, int]
    mode: str = "set"  # "rows": each adapter row c forgets class c; "set": one forgotten set
    row_ids: list[int] = field(default_factory=list)
    exact: bool = True  # rows mode: the exact accuracy matrix (else sampled RA)
    units: list[tuple[int, ...]] = field(default_factory=list)


def load_plan(target, image_processor=None) -> EvaluationPlan:
    """The target loaded (:func:`load_target`) with its class count and names.

    Example:
        >>> load_plan("runs/wf-resnet").names[4]
        'Coat'
    """
    plain, adapter, processor, description = load_target(target, image_processor)
    config = plain.config
    num_classes = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return EvaluationPlan(plain, adapter, processor, description, num_classes,
                 names={c: id2label.get(c, str(c)) for c in range(num_classes)},
                 label2id={v: k for k, v in id2label.items()})


def require_classes(labels: np.ndarray, classes: Sequence[int], role: str, data, names) -> None:
    """Fail, naming the classes and the split, when a forgotten class has no sample in ``labels``."""
    counts = np.bincount(labels, minlength=max(classes) + 1)
    missing = [c for c in classes if counts[c] == 0]
    if missing:
        shown = ", ".join(f"{c} ({names.get(c, c)!r})" for c in missing)
        raise ValueError(
            f"The {role} split {data.split!r} of {data.source!r} has no samples of the forget class(es) {shown}: "
            f"{'forget accuracy' if role == 'test' else 'MIA-efficacy and ZRF'} would be undefined. Evaluate on a "
            "split that contains them (check subsampling and class filters)."
        )


def check_choice(plan: EvaluationPlan, forget, rows, base_model):
    """The forgotten class(es) to evaluate (a plain model's default: its config's unlearned_class_ids)."""
    if plan.adapter is not None:
        if forget is not None and rows is not None:
            raise ValueError("Pass rows= (each row forgets its class) or forget= (one class or set), not both.")
        if base_model is not None:
            raise ValueError("base_model= is for plain models; an adapter's base model is the adapter with no row selected.")
        return forget
    if rows is not None:
        raise ValueError("rows= selects adapter rows; for a plain model name the forgotten class(es) with forget=.")
    if forget is None:
        forget = getattr(plan.plain.config, "unlearned_class_ids", None)
        if not forget:
            raise ValueError("For a plain model pass forget= naming the class(es) it forgot (ids or names).")
    return forget


def choose_units(plan: EvaluationPlan, forget, rows, retrain_dirs, *, exact_limit: int, max_detail_rows: int, seed: int,
                  y_test: np.ndarray, data_test) -> None:
    """Fill ``plan.mode``/``row_ids``/``exact``/``units``; every forgotten class must be in the test split."""
    n, label2id = plan.num_classes, plan.label2id
    plan.mode = "rows" if plan.adapter is not None and forget is None else "set"
    if plan.mode == "rows":
        plan.row_ids = list(range(n)) if rows is None else class_ids(list(rows), n, label2id)
        plan.exact = n <= exact_limit
        if plan.exact or rows is not None:
            detail = list(plan.row_ids)
        else:
            rng_rows = np.random.default_rng(seed)
            detail = sorted(rng_rows.choice(plan.row_ids, size=min(max_detail_rows, len(plan.row_ids)),
                                            replace=False).tolist())
            wanted_retrain = {retrain_key(k, n, label2id) for k in (retrain_dirs or {})}
            detail = sorted(set(detail) | {k[0] for k in wanted_retrain if len(k) == 1 and k[0] in plan.row_ids})
        plan.units = [(c,) for c in detail]
        require_classes(y_test, plan.row_ids, "test", data_test, plan.names)
    else:
        forget_ids = class_ids(forget, n, label2id)
        plan.units = [tuple(forget_ids)]
        require_classes(y_test, forget_ids, "test", data_test, plan.names)
        if len(forget_ids) == n:
            raise ValueError("Every class is in the forget set: nothing would be retained.")


def check_retrains_given(plan: EvaluationPlan, retrain_dirs) -> None:
    """``require_retrain``: fail unless every unit has a retrain reference, naming how to train one."""
    have = {retrain_key(k, plan.num_classes, plan.label2id) for k in (retrain_dirs or {})}
    missing = [list(u) for u in plan.units if u not in have]
    if missing:
        raise ValueError(
            f"No retrain reference for {missing} (require_retrain): train one with recipes/retrain.py "
            "--forget <class> into <root>/class-<c>/ and pass --retrain_root <root>, or evaluate fewer rows."
        )
