"""``hf-unlearn retrain`` (and ``recipes/retrain.py``): the gold-standard retrain references.

Takes every ``train-base`` option (:class:`~hf_unlearn.commands.train_base.TrainBaseArguments`) plus
:class:`RetrainArguments`. ``--base_dir`` pre-fills the options from the base model's
``train_base_config.yaml``, then ``--config file.yaml``; flags on the command line win::

    hf-unlearn retrain --base_dir runs/base-resnet --classes all --output_dir runs/retrain-resnet

From Python, call :func:`hf_unlearn.training.retrain.run` with the base recipe
(:func:`~hf_unlearn.training.retrain.load_base_recipe`) instead of building a command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from accelerate import Accelerator

from ..training.retrain import check_retrain_request, load_base_recipe, run
from .arguments import build_parser, parse_arguments
from .train_base import TrainBaseArguments, drop_replaced_alternative

__all__ = ["RetrainArguments", "parse_retrain_args", "main"]

PROG = "hf-unlearn retrain"
DESCRIPTION = ("Retrain the base recipe from scratch without the forgotten class(es): the retrain reference for "
               "evaluation. Takes every train_base option; --base_dir pre-fills them from the base model's "
               "train_base_config.yaml. --output_dir is the root folder: one class-<c>/ (or classes-<a>-<b>/) "
               "subfolder per retrain model.")


@dataclass
class RetrainArguments:
    """Which references to train, and from which base recipe."""

    base_dir: Optional[str] = field(default=None, metadata={
        "help": "folder of the base model: its train_base_config.yaml pre-fills the recipe (flags win)"})
    classes: Optional[list[str]] = field(default=None, metadata={
        "help": "'all' or class ids/names; one model per class, in <output_dir>/class-<c>/"})
    together: bool = field(default=False, metadata={
        "help": "one model without all --classes at once, in <output_dir>/classes-<a>-<b>/"})
    skip_existing: bool = field(default=False, metadata={
        "help": "skip classes whose folder already holds a finished retrain (retrain.json)"})


def _base_dir_of(argv: Sequence[str]) -> Optional[str]:
    """``--base_dir`` alone, read before the full parse: its recipe becomes the other options' defaults."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--base_dir", "--base-dir", default=None)
    return pre.parse_known_args(argv)[0].base_dir


def parse_retrain_args(argv: Optional[Sequence[str]] = None) -> tuple[TrainBaseArguments, RetrainArguments]:
    """The command line as (the recipe to retrain, what to retrain); a bad request is a usage error::

        options, job = parse_retrain_args(["--base_dir", "runs/base", "--classes", "all", "--output_dir", "runs/rt"])
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    types = (TrainBaseArguments, RetrainArguments)
    parser = build_parser(types, prog=PROG, description=DESCRIPTION)  # for usage errors only
    base_dir = _base_dir_of(argv)
    defaults = {}
    if base_dir:
        try:
            defaults = dataclasses.asdict(load_base_recipe(base_dir))
        except (FileNotFoundError, ValueError) as err:
            parser.error(f"--base_dir: {err}")
    options, job = parse_arguments(types, argv, prog=PROG, description=DESCRIPTION, defaults=defaults)
    options = drop_replaced_alternative(options, argv)
    try:
        check_retrain_request(options, job.classes, together=job.together, base_dir=job.base_dir)
    except ValueError as err:
        parser.error(str(err))
    return options, job


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``hf-unlearn retrain`` / ``recipes/retrain.py``: train every requested reference; returns the summary."""
    options, job = parse_retrain_args(argv)
    summary = run(options, job.classes, together=job.together, skip_existing=job.skip_existing,
                  base_dir=job.base_dir)
    # Leave the process group cleanly (see commands.train_base.main); the last train_base ended on a barrier.
    Accelerator(cpu=options.cpu).end_training()
    return summary
