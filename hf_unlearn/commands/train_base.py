"""``hf-unlearn train-base`` (and ``recipes/train_base.py``): the options of base training and its CLI.

``TrainBaseArguments`` is both the command line and the Python API of
:func:`hf_unlearn.training.base.train_base`:

```py
>>> from hf_unlearn.commands.train_base import TrainBaseArguments
>>> from hf_unlearn.training.base import train_base
>>> metrics = train_base(TrainBaseArguments(preset="resnet-micro", dataset="digits", epochs=2,
...                                         output_dir="runs/base-digits"))
```

On the command line ``--config base.yaml`` pre-fills the options (flags win), and ``--preset`` /
``--model_name_or_path`` given as a flag replaces the other one coming from the YAML file:

    hf-unlearn train-base --config base.yaml --epochs 3
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from accelerate import Accelerator

from ..training.base import SCHEDULERS, resolve_arguments, train_base
from .arguments import DataArguments, RuntimeArguments, build_parser, parse_arguments

__all__ = ["TrainBaseArguments", "drop_replaced_alternative", "given_on_command_line", "parse_train_base_args", "main"]

DESCRIPTION = "Train a base image classifier (a preset from scratch, or fine-tune a Hub/local checkpoint)."
PROG = "hf-unlearn train-base"


@dataclass
class TrainBaseArguments(DataArguments, RuntimeArguments):
    """Every option of base training (pass exactly one of ``preset`` / ``model_name_or_path``).

    The field names are the keys of the ``train_base_config.yaml`` each run saves, which a retrain
    reads back as the base recipe.
    """

    # the model
    preset: Optional[str] = field(default=None, metadata={
        "help": "preset trained from scratch, e.g. resnet-tiny, convnext-tiny28, vit-tiny28, resnet-micro"})
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "Hub id or local directory of a checkpoint to fine-tune, e.g. google/vit-base-patch16-224"})
    model_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of --model_name_or_path"})
    image_size: Optional[int] = field(default=None, metadata={"help": "input size for a preset (default: its own)"})
    image_mean: Optional[list[float]] = field(default=None, metadata={
        "help": "normalisation mean for a preset (default: the dataset's, else Fashion-MNIST's)"})
    image_std: Optional[list[float]] = field(default=None, metadata={"help": "normalisation std for a preset"})
    num_channels: Optional[int] = field(default=None, metadata={
        "choices": (1, 3),
        "help": "input channels for a preset (default 3: grey images are converted to RGB, as transformers "
                "pipelines feed RGB)"})
    # the data (dataset and columns come from DataArguments)
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str = field(default="test", metadata={"help": "split the test accuracy is measured on"})
    streaming: bool = field(default=False, metadata={"help": "stream the dataset instead of loading it"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "random subset for quick runs"})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "random subset of the eval split"})
    exclude_classes: Optional[list[int]] = field(default=None, metadata={
        "help": "train without these class ids; the model keeps every output (the retrain reference)"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    # training
    epochs: int = field(default=8, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=128, metadata={"help": "per process"})
    eval_batch_size: int = field(default=512, metadata={"help": "per process, for the test accuracy"})
    learning_rate: Optional[float] = field(default=None, metadata={
        "help": "peak learning rate (default: 2e-3 for a preset, 5e-5 for fine-tuning)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    lr_scheduler: str = field(default="onecycle", metadata={"choices": SCHEDULERS, "help": "learning-rate schedule"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "warm-up fraction (cosine, linear, onecycle)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "0 disables clipping"})
    seed: int = field(default=42, metadata={"help": "seeds data subsets, shuffling and the model init"})
    output_dir: Optional[str] = field(default=None, metadata={
        "help": "where the model, metrics.json and config go (required)"})


# The two ways of naming the model: one given as a flag replaces the other from a YAML file.
MODEL_ALTERNATIVES = ("preset", "model_name_or_path")


def given_on_command_line(argv: Sequence[str], name: str) -> bool:
    """Whether ``--name`` is in ``argv``, also spelled ``--name=value`` or with dashes (HfArgumentParser's
    alias); abbreviations are off, so there is no other spelling::

        given_on_command_line(["--model-name-or-path=x"], "model_name_or_path")  # True
    """
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(arg.split("=", 1)[0] in flags for arg in argv)


def drop_replaced_alternative(args: TrainBaseArguments, argv: Sequence[str]) -> TrainBaseArguments:
    """``--preset`` and ``--model_name_or_path`` are alternatives: the one given on the command line
    replaces the other coming from a YAML file (or a base model's saved recipe). Edits ``args`` in place::

        drop_replaced_alternative(TrainBaseArguments(preset="a", model_name_or_path="b"), ["--preset", "a"])
        # -> model_name_or_path=None
    """
    given = [name for name in MODEL_ALTERNATIVES if given_on_command_line(argv, name)]
    if len(given) == 1:
        other = MODEL_ALTERNATIVES[1 - MODEL_ALTERNATIVES.index(given[0])]
        setattr(args, other, None)
    return args


def parse_train_base_args(argv: Optional[Sequence[str]] = None) -> TrainBaseArguments:
    """The command line (``--config file.yaml`` pre-fills, flags win) as checked ``TrainBaseArguments``.

    A bad combination (no model, both models, no ``--output_dir``...) exits with a usage error::

        args = parse_train_base_args(["--config", "base.yaml", "--epochs", "3"])
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_arguments((TrainBaseArguments,), argv, prog=PROG, description=DESCRIPTION)
    args = drop_replaced_alternative(args, argv)
    try:
        return resolve_arguments(args)
    except ValueError as err:
        build_parser((TrainBaseArguments,), prog=PROG).error(str(err))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``hf-unlearn train-base`` / ``recipes/train_base.py``: parse, train, save; returns the metrics."""
    args = parse_train_base_args(argv)
    metrics = train_base(args)
    # Leave the process group cleanly: a gloo group still alive at interpreter exit can abort the
    # process (SIGABRT) after all the work was done. train_base ends on a barrier, so no rank is
    # still communicating.
    Accelerator(cpu=args.cpu).end_training()
    return metrics
