"""``hf-unlearn evaluate`` (and ``recipes/evaluate.py``): FA/RA, MIA-efficacy, ZRF and probes of an adapter
or a plain model, next to the base model and the retrain references; writes report.json/.md and PNG plots.

The options are dataclasses (``HfArgumentParser``); the same dataclasses are the Python API::

    from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments
    from hf_unlearn.commands.evaluate import EvaluationArguments, SplitArguments, TargetArguments
    from hf_unlearn.evaluation.job import run_evaluation

    report = run_evaluation(TargetArguments(adapter="runs/wf-resnet", output_dir="runs/eval"),
                            DataArguments(dataset="fashion_mnist"), SplitArguments(max_test_samples=1000),
                            EvaluationArguments(), RuntimeArguments(num_threads=1))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from accelerate import Accelerator

from ..evaluation.job import run_evaluation
from ..evaluation.relearn import RELEARN_MODES
from .arguments import DataArguments, RuntimeArguments, parse_arguments

__all__ = ["EvaluationArguments", "SplitArguments", "TargetArguments", "main"]

DESCRIPTION = ("Evaluate unlearning: FA/RA (accuracy matrix), MIA-efficacy, ZRF and a linear probe, next to the base "
               "model and retrain-from-scratch references; writes report.json/.md and PNG plots.")


@dataclass
class TargetArguments:
    """What to evaluate (exactly one of ``adapter`` / ``model``), against what, and where the report goes."""

    output_dir: str = field(metadata={"help": "where report.json, report.md and the PNGs go"})
    adapter: Optional[str] = field(default=None, metadata={"help": "adapter folder or Hub repo id (every row, or "
                                                                   "--rows / --forget); or --model"})
    model: Optional[str] = field(default=None, metadata={"help": "folder of a plain classifier (exported, baseline "
                                                                 "or retrain); or --adapter"})
    base_model: Optional[str] = field(default=None, metadata={
        "help": "with --adapter: base model overriding the one the adapter names; with --model: the original "
                "model, for base numbers"})
    forget: Optional[list[str]] = field(default=None, metadata={
        "help": "class ids or names: the forgotten set (with --model: default its config's unlearned_class_ids)"})
    rows: Optional[list[str]] = field(default=None, metadata={"help": "adapter rows to evaluate (default: all)"})
    retrain_root: Optional[str] = field(default=None, metadata={
        "help": "folder with class-<c>/ (and classes-<a>-<b>/) retrain references (recipes/retrain.py)"})

    def __post_init__(self):
        if (self.adapter is None) == (self.model is None):
            raise ValueError("Pass exactly one of --adapter (an adapter folder or Hub id) or --model (a plain "
                             "classifier folder).")


@dataclass
class SplitArguments:
    """Which splits of the dataset, and how much of them."""

    train_split: str = field(default="train", metadata={"help": "MIA members, ZRF, the probes' training split"})
    test_split: str = field(default="test", metadata={"help": "FA/RA and the probes' test split"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "seeded subset of the train split "
                                                                              "(quick runs)"})
    max_test_samples: Optional[int] = field(default=None, metadata={"help": "seeded subset of the test split "
                                                                             "(quick runs)"})


@dataclass
class EvaluationArguments:
    """How to evaluate: the measures' settings, set sizes, outputs."""

    seed: int = field(default=0, metadata={"help": "seeds MIA members, probe subsets, sampled pairs, the ZRF "
                                                    "reference"})
    batch_size: int = field(default=128, metadata={"help": "samples per forward (x rows+1 for an adapter)"})
    max_mia_samples: Optional[int] = field(default=None, metadata={"help": "cap MIA members/non-members (departs "
                                                                            "from SalUn)"})
    max_probe_samples: int = field(default=10_000, metadata={"help": "probe subset per split (0 = all)"})
    few_shot_shots: int = field(default=5, metadata={"help": "few-shot probe: labelled samples per class"})
    few_shot_draws: int = field(default=10, metadata={"help": "few-shot probe: seeded repetitions"})
    relearn_shots: list[int] = field(default_factory=list, metadata={"nargs": "*",
        "help": "k-shot relearning budgets (samples per class), e.g. 1 5 25; none = skip"})
    relearn_steps: int = field(default=30, metadata={"help": "k-shot relearning: optimiser steps"})
    relearn_modes: list[str] = field(default_factory=lambda: list(RELEARN_MODES), metadata={
        "help": "k-shot relearning: fine-tune the head only and/or the full model (head, full)"})
    require_retrain: bool = field(default=False, metadata={
        "help": "fail unless every evaluated row has a retrain reference under --retrain_root"})
    samples_per_row: int = field(default=50, metadata={"help": "sampled RA above 20 classes"})
    set_sizes: Optional[list[int]] = field(default=None, metadata={
        "help": "adapter only: also evaluate random forget sets of these sizes (rows multiplied), e.g. 2 3 4 5"})
    sets_per_size: int = field(default=20, metadata={"help": "random sets per size for --set_sizes"})
    sets_only: bool = field(default=False, metadata={
        "help": "with --set_sizes: only the set-size evaluation (sets.json, sets.md), not the full report"})
    no_plots: bool = field(default=False, metadata={"help": "write no PNG plots"})

    def __post_init__(self):
        bad = [m for m in self.relearn_modes if m not in RELEARN_MODES]
        if bad:
            raise ValueError(f"--relearn_modes: unknown mode(s) {bad}; choose from {list(RELEARN_MODES)}.")


ARGUMENT_TYPES = (TargetArguments, DataArguments, SplitArguments, EvaluationArguments, RuntimeArguments)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``recipes/evaluate.py`` / ``hf-unlearn evaluate``: parse ``argv`` and run the evaluation; returns the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(ARGUMENT_TYPES, argv, prog="hf-unlearn evaluate", description=DESCRIPTION)
    report = run_evaluation(*arguments, argv=argv)
    # Leave the process group cleanly (a gloo group alive at interpreter exit can abort the process
    # after all the work was done, failing the launcher); the barrier first, so no rank tears down
    # while another still communicates. The Accelerator shares the state run_evaluation set up.
    accelerator = Accelerator(cpu=arguments[-1].cpu)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report
