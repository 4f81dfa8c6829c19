"""The gold standard: retrain the base recipe from scratch WITHOUT the forgotten class(es).

A retrain reference is the base model's own recipe (same preset or checkpoint, epochs, batch size,
learning rate, schedule, seed, ``max_train_samples``) run by
:func:`hf_unlearn.training.base.train_base` on the training split minus the samples of the
forgotten class(es). The model keeps all N outputs (the forgotten ones are simply never trained),
so every metric compares one to one with the unlearned model. With ``max_train_samples`` the
same seeded subset as the base is drawn first, then the forgotten classes are dropped from it.

```bash
# every class, one model each, in runs/retrain-resnet/class-<c>/ (recipe read from the base folder)
accelerate launch recipes/retrain.py --base_dir runs/base-resnet --classes all --output_dir runs/retrain-resnet
# one set forgotten together: runs/retrain-resnet/classes-2-4/
accelerate launch recipes/retrain.py --base_dir runs/base-resnet --classes Pullover Coat --together \\
    --output_dir runs/retrain-resnet
```

From Python, the base recipe is a :class:`~hf_unlearn.commands.train_base.TrainBaseArguments`:

```py
>>> from hf_unlearn.training.retrain import load_base_recipe, run
>>> recipe = load_base_recipe("runs/base-resnet")
>>> summary = run(dataclasses.replace(recipe, output_dir="runs/retrain-resnet"), ["Coat"],
...               base_dir="runs/base-resnet")
```

Each folder holds what ``train_base`` writes (model, image processor, ``metrics.json``,
``train_base_config.yaml``) plus ``retrain.json``: the excluded classes, the class counts of the
data it was trained on (0 for the excluded ones), and the wall time. ``retrain_summary.json`` in
the output root lists every model and the total wall time (the cost of the gold standard).

How the data is filtered: ``train_base``'s ``exclude_classes`` option drops the given classes from
the training split (after the base recipe's own subsampling) and records the class counts; nothing
else in the loop changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from accelerate import PartialState

from ..commands.arguments import load_config
from ..commands.train_base import TrainBaseArguments
from ..data.loading import load_image_dataset
from ..files import atomic_write_json
from ..tuners.weight_filter.selection import resolve_class
from .base import CONFIG_FILENAME, resolve_arguments, train_base

__all__ = [
    "RETRAIN_INFO", "SUMMARY_FILENAME", "retrain", "retrain_folder_name", "retrain_dirs_from_root",
    "load_base_recipe", "retrain_units", "check_retrain_request", "run",
]

RETRAIN_INFO = "retrain.json"
SUMMARY_FILENAME = "retrain_summary.json"
_FOLDER = re.compile(r"^class-(\d+)$|^classes-(\d+(?:-\d+)+)$")


def retrain_folder_name(classes: Union[int, Iterable[int]]) -> str:
    """``class-3`` for one class, ``classes-2-4`` for a set (sorted ids)."""
    ids = [int(classes)] if isinstance(classes, int) else sorted({int(c) for c in classes})
    if not ids:
        raise ValueError("no classes to name a retrain folder after")
    return f"class-{ids[0]}" if len(ids) == 1 else "classes-" + "-".join(map(str, ids))


def retrain_dirs_from_root(root: Union[str, os.PathLike]) -> dict:
    """``{class_id: folder}`` (and ``{(a, b): folder}`` for sets) of the retrain models under ``root``.

    Folders without a ``config.json`` (an unfinished run) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"retrain root {root} is not a folder (expected class-<c>/ subfolders)")
    found: dict = {}
    for child in sorted(root.iterdir()):
        match = _FOLDER.match(child.name)
        if not match or not (child / "config.json").is_file():
            continue
        if match.group(1) is not None:
            found[int(match.group(1))] = str(child)
        else:
            found[tuple(int(c) for c in match.group(2).split("-"))] = str(child)
    return found


def load_base_recipe(base_dir: Union[str, os.PathLike]) -> TrainBaseArguments:
    """The recipe a base model was trained with (its ``train_base_config.yaml``), ``output_dir`` cleared.

    Example::

        recipe = load_base_recipe("runs/base-resnet")  # TrainBaseArguments(preset="resnet-tiny", ...)
    """
    path = Path(base_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{base_dir} has no {CONFIG_FILENAME}: the base recipe is read from a folder "
                                "written by train_base (recipes/train_base.py, hf-unlearn train-base)")
    values = load_config(str(path), (TrainBaseArguments,))  # an unknown key is a ValueError naming it
    values.pop("output_dir", None)  # never the base's own folder
    return TrainBaseArguments(**values)


def _main_process(cpu: bool = False) -> bool:
    return PartialState(cpu=cpu).is_main_process  # (train_base's Accelerator has usually set it up already)


def retrain(options: TrainBaseArguments, classes: Iterable[int], *, class_names: Optional[Sequence[str]] = None,
            base_dir: Optional[Union[str, os.PathLike]] = None) -> dict:
    """Train one retrain reference: ``train_base(options)`` without ``classes``; returns its ``retrain.json``.

    ``options.output_dir`` is the model folder. Example::

        info = retrain(dataclasses.replace(load_base_recipe(base), output_dir="runs/rt/class-3"), [3], base_dir=base)
    """
    ids = sorted({int(c) for c in classes})
    if base_dir is not None and Path(options.output_dir).resolve() == Path(base_dir).resolve():
        raise ValueError("--output_dir must not be the base model's folder")
    start = time.perf_counter()
    metrics = train_base(dataclasses.replace(options, exclude_classes=ids))
    wall = time.perf_counter() - start
    names = list(class_names) if class_names is not None else metrics.get("class_names")
    info = {
        "class_ids": ids,
        "classes": [names[c] for c in ids] if names else [str(c) for c in ids],
        "base_dir": None if base_dir is None else str(base_dir),
        "dataset": options.dataset,
        "wall_time_s": round(wall, 3),
        "train_time_s": metrics.get("train_time_s"),
        "num_train_examples": metrics.get("num_train_examples"),
        "train_class_counts": metrics.get("train_class_counts"),
        "test_accuracy": metrics.get("test_accuracy"),
        "num_labels": len(metrics.get("class_names") or []) or None,
        "epochs": metrics.get("epochs"),
        "seed": metrics.get("seed"),
    }
    if _main_process(options.cpu):
        atomic_write_json(Path(options.output_dir) / RETRAIN_INFO, info)
    return info


def retrain_units(classes: Sequence[Union[int, str]], class_names: Sequence[str], *,
                  together: bool = False) -> list[list[int]]:
    """The class sets to retrain without: one per class, or one set ``together``.

    ``classes`` is ``["all"]`` or class ids/names (case-insensitive, as everywhere). Example::

        retrain_units(["5", "2"], names, together=True)  # [[2, 5]]
    """
    n = len(class_names)
    if list(classes) == ["all"]:
        ids = list(range(n))
    else:
        label2id = {name: i for i, name in enumerate(class_names)}
        ids = sorted({resolve_class(int(c) if str(c).lstrip("-").isdigit() else c, n, label2id) for c in classes})
    return [ids] if together else [[c] for c in ids]


def check_retrain_request(options: TrainBaseArguments, classes: Sequence[Union[int, str]], *, together: bool = False,
                          base_dir: Optional[Union[str, os.PathLike]] = None) -> None:
    """``ValueError`` for a request :func:`run` cannot carry out, before anything is trained::

        check_retrain_request(recipe, ["all"], together=True)  # ValueError: nothing to train on
    """
    if not classes:
        raise ValueError("--classes is required: 'all' or class ids/names")
    if not options.output_dir:
        raise ValueError("--output_dir (the root for class-<c>/ folders) is required")
    if base_dir and Path(options.output_dir).resolve() == Path(base_dir).resolve():
        raise ValueError("--output_dir must not be the base model's folder")
    if together and list(classes) == ["all"]:
        raise ValueError("--together with --classes all would leave nothing to train on")
    resolve_arguments(options)  # the recipe itself (one model, positive sizes...): fail before any training


def run(options: TrainBaseArguments, classes: Sequence[Union[int, str]], *, together: bool = False,
        skip_existing: bool = False, base_dir: Optional[Union[str, os.PathLike]] = None) -> dict:
    """Train every requested retrain reference under ``options.output_dir``; returns (and writes) the summary.

    ``skip_existing`` keeps a folder that already holds a finished retrain (its ``retrain.json``)::

        summary = run(dataclasses.replace(recipe, output_dir="runs/rt"), ["all"], base_dir="runs/base")
    """
    check_retrain_request(options, classes, together=together, base_dir=base_dir)
    class_names = load_image_dataset(options.dataset, split=options.train_split, image_column=options.image_column,
                                     label_column=options.label_column, revision=options.dataset_revision).class_names
    units = retrain_units(classes, class_names, together=together)
    root = Path(options.output_dir)
    summary = {"base_dir": None if base_dir is None else str(base_dir), "dataset": options.dataset,
               "preset": options.preset, "model_name_or_path": options.model_name_or_path, "epochs": options.epochs,
               "seed": options.seed, "models": {}, "total_wall_time_s": 0.0}
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for unit in units:
        folder = root / retrain_folder_name(unit)
        if skip_existing and (folder / RETRAIN_INFO).is_file():
            info = {**json.loads((folder / RETRAIN_INFO).read_text()), "skipped": True}
        else:
            info = retrain(dataclasses.replace(options, output_dir=str(folder)), unit, class_names=class_names,
                           base_dir=base_dir)
        summary["models"][folder.name] = {"folder": str(folder), **info}
        summary["total_wall_time_s"] = round(time.perf_counter() - start, 3)
        if _main_process(options.cpu):
            atomic_write_json(root / SUMMARY_FILENAME, summary)
            done = "skipped (already there)" if info.get("skipped") else f"in {info['wall_time_s']:.1f} s"
            print(f"retrained without {info['classes']} {done} (test accuracy {info.get('test_accuracy')}) "
                  f"-> {folder}", flush=True)
    if _main_process(options.cpu):
        print(f"{len(units)} retrain model(s), {summary['total_wall_time_s']:.1f} s in all; summary in "
              f"{root / SUMMARY_FILENAME}", flush=True)
    return summary
