"""Retrain from scratch without the forgotten class(es): the gold standard, as a baseline.

Wraps :func:`hf_unlearn.training.retrain.retrain`: the base model's own recipe (its ``train_base_config.yaml``,
read from ``base_dir``) is run by ``train_base`` on the training split minus the forgotten classes.
The loaders passed to ``unlearn`` are not used: the recipe names its dataset, and training from
scratch needs the whole split, not the loaders' batches. The recipe's own seed is used (so the
retrain matches the base run in everything but the data) unless ``overrides={"seed": ...}``.

Hyperparameters:
    base_dir: folder written by ``train_base`` (default: the model's ``name_or_path`` when it is one).
    output_dir: where the retrained model is written (default: a temporary folder, removed after
        the model is loaded).
    overrides: ``train_base`` options to change, e.g. ``{"num_threads": 1, "no_progress": True}``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .base import Unlearner


def _recipe_options(base_dir: str, ids, output_dir: str) -> dict:
    from ..training.base import CONFIG_FILENAME
    from ..training.base import build_parser as base_parser
    from ..training.retrain import parse_args

    if not (Path(base_dir) / CONFIG_FILENAME).is_file():
        raise FileNotFoundError(f"{base_dir} has no {CONFIG_FILENAME}: the retrain baseline needs the base recipe "
                                "(a folder written by train_base / recipes/train_base.py).")
    args = parse_args(["--base_dir", str(base_dir), "--classes", *map(str, ids), "--output_dir", str(output_dir)])
    keys = set(vars(base_parser().parse_args([])))
    return {k: v for k, v in vars(args).items() if k in keys and k != "config"}


class Retrain(Unlearner):
    name = "retrain"
    description = "the base recipe trained from scratch without the forgotten class(es)"
    uses_retain = False
    uses_forget = False
    # Source: the gold standard of every paper (SalUn's scripts: 160 epochs, lr 0.1 on CIFAR-10). Here
    # it is exactly the base model's own recipe, so that only the data differ.
    default_hparams = {"base_dir": None, "output_dir": None, "overrides": {}}
    search_space = {}

    def _run(self, model, forget_ids, retain_loader, forget_loader, hp, *, device, seed, info):
        from transformers import AutoModelForImageClassification

        from ..training.retrain import retrain

        base_dir = hp["base_dir"] or getattr(model, "name_or_path", None)
        if not base_dir or not Path(str(base_dir)).is_dir():
            raise ValueError("retrain needs hparams={'base_dir': <folder of the base model written by train_base>}.")
        tmp = None
        out = hp["output_dir"]
        if out is None:
            tmp = tempfile.mkdtemp(prefix="hf_unlearn-retrain-")
            out = tmp
        try:
            options = _recipe_options(str(base_dir), forget_ids, str(out))
            options.update({"output_dir": str(out), "no_progress": True})
            options.update(dict(hp["overrides"] or {}))
            record = retrain(options, forget_ids, base_dir=str(base_dir))
            trained = AutoModelForImageClassification.from_pretrained(str(out), use_safetensors=True)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        info.update(json.loads(json.dumps(record, default=str)))
        return trained.to(device)
