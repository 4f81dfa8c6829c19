"""Retrain from scratch without the forgotten class(es): the gold standard, as a baseline.

Wraps :func:`hf_unlearn.training.retrain.retrain`: the base model's own recipe (its ``train_base_config.yaml``,
read from ``base_dir`` by :func:`~hf_unlearn.training.retrain.load_base_recipe`) is run by ``train_base``
on the training split minus the forgotten classes. The loaders passed to ``unlearn`` are not used: the
recipe names its dataset, and training from scratch needs the whole split, not the loaders' batches.
The recipe's own seed is used (so the retrain matches the base run in everything but the data) unless
``overrides={"seed": ...}``.

Hyperparameters:
    base_dir: folder written by ``train_base`` (default: the model's ``name_or_path`` when it is one).
    output_dir: where the retrained model is written (default: a temporary folder, removed after
        the model is loaded).
    overrides: ``TrainBaseArguments`` fields to change, e.g. ``{"num_threads": 1, "no_progress": True}``.

Example::

    result = get_baseline("retrain").unlearn(model, [3], hparams={"base_dir": "runs/base-resnet"})
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from transformers import AutoModelForImageClassification

from ..commands.train_base import TrainBaseArguments
from ..training.retrain import load_base_recipe, retrain
from .base import Unlearner


def recipe_options(base_dir: str, output_dir: str, overrides: dict) -> TrainBaseArguments:
    """The base recipe with the output folder, no progress bars, and ``overrides`` (checked names)."""
    known = {f.name for f in dataclasses.fields(TrainBaseArguments)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"retrain overrides {unknown} are not train_base options; valid: {sorted(known)}")
    options = dataclasses.replace(load_base_recipe(base_dir), output_dir=output_dir, no_progress=True)
    return dataclasses.replace(options, **overrides)


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
        base_dir = hp["base_dir"] or getattr(model, "name_or_path", None)
        if not base_dir or not Path(str(base_dir)).is_dir():
            raise ValueError("retrain needs hparams={'base_dir': <folder of the base model written by train_base>}.")
        tmp = None
        out = hp["output_dir"]
        if out is None:
            tmp = tempfile.mkdtemp(prefix="hf_unlearn-retrain-")
            out = tmp
        try:
            options = recipe_options(str(base_dir), str(out), dict(hp["overrides"] or {}))
            record = retrain(options, forget_ids, base_dir=str(base_dir))
            trained = AutoModelForImageClassification.from_pretrained(str(out), use_safetensors=True)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        info.update(record)
        return trained.to(device)
