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

Each folder holds what ``train_base`` writes (model, image processor, ``metrics.json``,
``train_base_config.yaml``) plus ``retrain.json``: the excluded classes, the class counts of the
data it was trained on (0 for the excluded ones), and the wall time. ``retrain_summary.json`` in
the output root lists every model and the total wall time (the cost of the gold standard).

How the data is filtered: ``train_base``'s ``exclude_classes`` option drops the given classes from
the training split (after the base recipe's own subsampling) and records the class counts; nothing
else in the loop changes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

__all__ = [
    "RETRAIN_INFO", "SUMMARY_FILENAME", "retrain", "retrain_folder_name",
    "retrain_dirs_from_root", "build_parser", "parse_args", "run", "main",
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


def _main_process(cpu: bool = False) -> bool:
    from accelerate import PartialState

    return PartialState(cpu=cpu).is_main_process  # (train_base's Accelerator has usually set it up already)


def _write_json(path: Path, data: Mapping) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def retrain(options: Union[argparse.Namespace, Mapping[str, Any]], classes: Iterable[int], *,
            class_names: Optional[Sequence[str]] = None, base_dir: Optional[str] = None) -> dict:
    """Train one retrain reference: ``train_base(options)`` without ``classes``; returns its ``retrain.json``.

    ``options`` are ``train_base`` options (a dict or namespace); ``options["output_dir"]`` is the
    model folder.
    """
    from .base import train_base

    values = dict(vars(options)) if isinstance(options, argparse.Namespace) else dict(options)
    ids = sorted({int(c) for c in classes})
    start = time.perf_counter()
    values["exclude_classes"] = ids
    metrics = train_base(values)
    record = {"train_class_counts": metrics.get("train_class_counts"),
              "num_train_examples": metrics.get("num_train_examples")}
    wall = time.perf_counter() - start
    names = list(class_names) if class_names is not None else metrics.get("class_names")
    info = {
        "class_ids": ids,
        "classes": [names[c] for c in ids] if names else [str(c) for c in ids],
        "base_dir": base_dir,
        "dataset": values.get("dataset"),
        "wall_time_s": round(wall, 3),
        "train_time_s": metrics.get("train_time_s"),
        "num_train_examples": record.get("num_train_examples"),
        "train_class_counts": record.get("train_class_counts"),
        "test_accuracy": metrics.get("test_accuracy"),
        "num_labels": len(metrics.get("class_names") or []) or None,
        "epochs": metrics.get("epochs"),
        "seed": metrics.get("seed"),
    }
    if _main_process(bool(values.get("cpu"))):
        _write_json(Path(values["output_dir"]) / RETRAIN_INFO, info)
    return info


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .base import build_parser as base_parser

    parser = base_parser()
    parser.description = ("Retrain the base recipe from scratch without the forgotten class(es): the retrain "
                          "reference for evaluation. Takes every train_base option; --base_dir pre-fills them "
                          "from the base model's train_base_config.yaml.")
    group = parser.add_argument_group("retrain")
    group.add_argument("--base_dir", default=None,
                       help="folder of the base model: its train_base_config.yaml pre-fills the recipe (flags win)")
    group.add_argument("--classes", nargs="+", default=None,
                       help="'all' or class ids/names; one model per class, in <output_dir>/class-<c>/")
    group.add_argument("--together", action="store_true",
                       help="one model without all --classes at once, in <output_dir>/classes-<a>-<b>/")
    group.add_argument("--skip_existing", action="store_true",
                       help="skip classes whose folder already holds a finished retrain (retrain.json)")
    for action in parser._actions:
        if action.dest == "output_dir":
            action.help = "root folder: one class-<c>/ (or classes-<a>-<b>/) subfolder per retrain model (required)"
    return parser


_RETRAIN_KEYS = ("base_dir", "classes", "together", "skip_existing")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``--base_dir`` (then ``--config``) pre-fill the recipe; flags given on the command line win."""
    from .base import CONFIG_FILENAME, _explicit_dests, drop_replaced_alternative
    from ..run_utils import load_yaml_options, parse_with_config

    parser = build_parser()

    def base_recipe(pre) -> dict:
        if not pre.base_dir:
            return {}
        path = Path(pre.base_dir) / CONFIG_FILENAME
        if not path.is_file():
            parser.error(f"--base_dir {pre.base_dir} has no {CONFIG_FILENAME} (is it a folder written by train_base?)")
        values = load_yaml_options(str(path), parser)
        values.pop("output_dir", None)  # never the base's own folder
        return values

    args = parse_with_config(
        parser, argv, prefill=base_recipe,
        adjust=lambda values, given: drop_replaced_alternative(values, _explicit_dests(parser, given)))
    if not args.classes:
        parser.error("--classes is required: 'all' or class ids/names")
    if not args.output_dir:
        parser.error("--output_dir (the root for class-<c>/ folders) is required")
    if args.base_dir and Path(args.output_dir).resolve() == Path(args.base_dir).resolve():
        parser.error("--output_dir must not be the base model's folder")
    if args.together and args.classes == ["all"]:
        parser.error("--together with --classes all would leave nothing to train on")
    return args


def _units(args, class_names: Sequence[str]) -> list[list[int]]:
    from ..tuners.weight_filter.selection import resolve_class

    n = len(class_names)
    label2id = {name: i for i, name in enumerate(class_names)}
    if args.classes == ["all"]:
        ids = list(range(n))
    else:
        ids = [resolve_class(int(c) if c.lstrip("-").isdigit() else c, n, label2id) for c in args.classes]
        ids = sorted(set(ids))
    return [ids] if args.together else [[c] for c in ids]


def run(args: argparse.Namespace) -> dict:
    """Train every requested retrain reference; returns (and writes) the summary."""
    from .base import build_parser as base_parser
    from ..data.loading import load_image_dataset

    base_keys = set(vars(base_parser().parse_args([])))
    options = {k: v for k, v in vars(args).items() if k in base_keys and k != "config"}
    class_names = load_image_dataset(args.dataset, split=args.train_split, image_column=args.image_column,
                                     label_column=args.label_column, revision=args.dataset_revision).class_names
    units = _units(args, class_names)
    root = Path(args.output_dir)
    summary = {"base_dir": args.base_dir, "dataset": args.dataset, "preset": args.preset,
               "model_name_or_path": args.model_name_or_path, "epochs": args.epochs, "seed": args.seed,
               "models": {}, "total_wall_time_s": 0.0}
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for unit in units:
        folder = root / retrain_folder_name(unit)
        if args.skip_existing and (folder / RETRAIN_INFO).is_file():
            info = json.loads((folder / RETRAIN_INFO).read_text())
            info["skipped"] = True
        else:
            info = retrain({**options, "output_dir": str(folder)}, unit, class_names=class_names, base_dir=args.base_dir)
        summary["models"][folder.name] = {"folder": str(folder), **info}
        summary["total_wall_time_s"] = round(time.perf_counter() - start, 3)
        if _main_process(args.cpu):
            _write_json(root / SUMMARY_FILENAME, summary)
            done = "skipped (already there)" if info.get("skipped") else f"in {info['wall_time_s']:.1f} s"
            print(f"retrained without {info['classes']} {done} (test accuracy {info.get('test_accuracy')}) "
                  f"-> {folder}", flush=True)
    if _main_process(args.cpu):
        print(f"{len(units)} retrain model(s), {summary['total_wall_time_s']:.1f} s in all; summary in "
              f"{root / SUMMARY_FILENAME}", flush=True)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``recipes/retrain.py`` / ``hf-unlearn retrain``."""
    from ..run_utils import end_distributed

    metrics = run(parse_args(argv))
    end_distributed()
    return metrics
