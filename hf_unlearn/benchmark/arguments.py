"""The benchmark's options: one dataclass, the command line of ``recipes/benchmark.py`` and the Python API.

```py
>>> from hf_unlearn.benchmark.arguments import BenchmarkArguments
>>> args = BenchmarkArguments(output_dir="/tmp/bench-smoke", smoke=True)
>>> args.dataset, args.classes, args.retrain_classes     # --smoke fills the smoke settings
('digits', [0], ['0'])
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["BenchmarkArguments", "FAST_METHODS", "PEERS", "ALL_METHODS", "SMOKE_HPARAMS"]

FAST_METHODS = ("svd_projection", "ssd", "logit_mask")
PEERS = ("finetune", "neggrad", "random_labels", "salun", "scrub", "ssd", "boundary_shrink", "svd_projection",
         "logit_mask")
ALL_METHODS = ("wf", "retrain") + PEERS

# Smoke mode: tiny budgets so that the whole pipeline runs in seconds on digits.
SMOKE_HPARAMS = {
    "finetune": {"epochs": 1.0},
    "neggrad": {"epochs": 2.0},
    "random_labels": {"epochs": 2.0},
    "salun": {"epochs": 2.0},
    "scrub": {"lr": 0.005},  # 3 forget batches per epoch on digits: see scrub.py
    "boundary_shrink": {"epochs": 2.0},
    "svd_projection": {"num_samples": 300},
}


@dataclass
class BenchmarkArguments:
    """Every option of the benchmark (field order = the order of ``settings`` in benchmark.json)."""

    output_dir: str = field(metadata={"help": "where benchmark.{json,md,png} and tradeoff.png go"})
    smoke: bool = field(default=False, metadata={
        "help": "digits + resnet-micro, class 0 only, tiny budgets: the pipeline in seconds (add --tune "
                "--tune_trials 2 to exercise the tuning too)"})
    # models
    base_dir: Optional[str] = field(default=None, metadata={
        "help": "base model folder (train_base output); trained if absent"})
    preset: str = field(default="resnet-tiny", metadata={"help": "preset for a base trained here"})
    base_epochs: int = 8
    adapter: Optional[str] = field(default=None, metadata={
        "help": "trained WF adapter folder; untrained here if absent"})
    wf_config: Optional[str] = field(default=None, metadata={
        "help": "untraining config for an adapter trained here (recipes/benchmark.py: "
                "recipes/configs/fashion_mnist_resnet.yaml)"})
    wf_epochs: Optional[float] = field(default=None, metadata={"help": "override the config's epochs"})
    retrain_root: Optional[str] = field(default=None, metadata={
        "help": "folder of class-<c>/ retrain models (recipes/retrain.py); missing ones are trained there "
                "(default <output_dir>/retrain)"})
    # data
    dataset: str = "fashion_mnist"
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "seeded subset of the train split"})
    max_test_samples: Optional[int] = field(default=None, metadata={"help": "seeded subset of the test split"})
    batch_size: int = field(default=128, metadata={"help": "batch size of the peers' retain/forget loaders"})
    # what to run
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS), metadata={
        "help": f"subset of {list(ALL_METHODS)}"})
    classes: Optional[list[int]] = field(default=None, metadata={
        "help": "classes for the peers (default: 3 drawn with --seed)"})
    num_peer_classes: int = 3
    all_class_methods: list[str] = field(default_factory=lambda: list(FAST_METHODS), metadata={"nargs": "*",
        "help": "peers run on every class (fast, gradient-free)"})
    retrain_classes: list[str] = field(default_factory=lambda: ["all"], metadata={"help": "'all' or class ids"})
    # Every evaluated class costs a full evaluation of the base too: with 100 classes, "all" means 200
    # evaluations before the first peer runs. WF still trains every row in its one round either way.
    wf_rows: str = field(default="all", metadata={
        "choices": ["all", "peer"],
        "help": "rows WF is evaluated on: 'all' (every class) or 'peer' (the peer classes; for many classes)"})
    hparams: Optional[str] = field(default=None, metadata={
        "help": 'JSON {"method": {"name": value}} overriding defaults (and tuning results)'})
    # tuning
    tune: bool = field(default=False, metadata={"help": "equal-budget search per peer on a validation split"})
    tune_trials: int = field(default=4, metadata={"help": "configurations per peer (defaults included)"})
    tune_class: Optional[int] = field(default=None, metadata={
        "help": "class tuned on (default: the first peer class)"})
    val_fraction: float = 0.1
    # evaluation and run
    eval_max_train_samples: Optional[int] = field(default=None, metadata={
        "help": "seeded subset of the train split for MIA/ZRF/probe (default: all)"})
    max_mia_samples: Optional[int] = None
    max_probe_samples: Optional[int] = 10_000
    eval_batch_size: int = 256
    few_shot_shots: int = field(default=5, metadata={"help": "few-shot probe: labelled samples per class"})
    relearn_shots: list[int] = field(default_factory=list, metadata={"nargs": "*",
        "help": "k-shot relearning budgets (samples per class), e.g. 1 5 25; not given = skip"})
    relearn_steps: int = field(default=30, metadata={"help": "k-shot relearning: optimiser steps"})
    relearn_modes: list[str] = field(default_factory=lambda: ["head", "full"], metadata={"choices": ["head", "full"]})
    latency_batch: int = 64
    latency_repeats: int = 20
    save_models: bool = field(default=False, metadata={"help": "save every peer model under <output_dir>/models/"})
    seed: int = 0
    num_threads: Optional[int] = field(default=None, metadata={
        "help": "torch.set_num_threads (1 on a shared CPU box)"})
    device: Optional[str] = field(default=None, metadata={"help": "default: cuda if available, else cpu"})

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {list(ALL_METHODS)}")
        if self.smoke:  # idempotent: a smoke run's settings read back give the same run
            self.dataset = "digits"
            self.preset = "resnet-micro"
            self.base_epochs = 15
            self.wf_epochs = self.wf_epochs or 3.0
            self.classes = self.classes or [0]
            self.retrain_classes = [str(c) for c in self.classes]
            self.all_class_methods = []
            self.latency_repeats = 3
            self.batch_size = 64
            self.max_probe_samples = None
