"""``hf-unlearn train``: untrain every class of a classifier in one round (the weight-filter adapter).

    hf-unlearn train --config recipes/configs/fashion_mnist_resnet.yaml
    accelerate launch recipes/train.py --config recipes/configs/fashion_mnist_resnet.yaml --epochs 2

The options are the fields of :class:`~hf_unlearn.training.job.UntrainingJobArguments`,
:class:`~hf_unlearn.training.untrain.UntrainingArguments`, ``DataArguments`` and ``RuntimeArguments``
(:mod:`hf_unlearn.commands.arguments`); the job is :func:`hf_unlearn.training.job.run_untraining`,
which takes the same dataclasses from Python.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..training.job import UntrainingJobArguments, run_untraining
from ..training.untrain import UntrainingArguments
from .arguments import DataArguments, RuntimeArguments, build_parser, parse_arguments

PROG = "hf-unlearn train"
DESCRIPTION = "Untrain every class of a classifier in one round (weight-filter adapter)."


@dataclass
class UntrainingOptions(UntrainingArguments):
    """``UntrainingArguments`` as the command line reads them: the progress bar is ``--no_progress``
    (``RuntimeArguments``, one flag for every job), so ``progress`` is no option here (a bool field
    defaulting to True would get a clashing ``--no_progress`` from ``HfArgumentParser``)."""

    progress: bool = field(default=True, init=False)


def parse_train_arguments(argv: Optional[Sequence[str]] = None) -> tuple:
    """``(job, untraining, data, runtime)`` from a command line; usage errors exit with status 2.

    ``--epochs N`` on the command line over a convergence-driven ``--config`` means an epoch schedule:
    the config's step budget (``max_steps``) and convergence check (``eval_every``) are switched off
    unless they are also given as flags.

    Example:
        >>> job, untraining, data, runtime = parse_train_arguments(
        ...     ["--base_model", "runs/base", "--output_dir", "runs/wf", "--epochs", "2"])
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    classes = (UntrainingJobArguments, UntrainingOptions, DataArguments, RuntimeArguments)
    try:
        job, options, data, runtime = parse_arguments(classes, argv, prog=PROG, description=DESCRIPTION)
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(UntrainingArguments) if f.init}
        given = {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
        if "epochs" in given:
            values.update({name: 0 for name in ("eval_every", "max_steps") if name not in given})
        untraining = UntrainingArguments(**values)  # validates the combination
    except ValueError as err:  # unknown objective names, nonsense numbers: a usage error, before any write
        build_parser(classes, prog=PROG, description=DESCRIPTION).error(str(err))
    return job, untraining, data, runtime


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run ``hf-unlearn train`` on ``argv`` (default ``sys.argv[1:]``); returns the metrics."""
    return run_untraining(*parse_train_arguments(argv))
