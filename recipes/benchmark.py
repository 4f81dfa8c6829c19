"""Benchmark: the weight-filter adapter (WF) against every peer unlearning method, same data,
same model, same machine.

Full run (Fashion-MNIST, ``resnet-tiny`` preset; reuses what exists, trains what is missing):

    OMP_NUM_THREADS=1 accelerate launch --num_processes 1 recipes/benchmark.py \\
        --base_dir runs/fm-base-resnet --retrain_root runs/fm-retrain-resnet \\
        --output_dir runs/benchmark-resnet --num_threads 1 --tune

(add ``--adapter runs/<wf folder>`` to reuse a trained adapter). Expected cost on the 2-core CPU box
with one thread: about 23 s per evaluation (~70 of them: base, retrain, WF rows and the fast peers
on all 10 classes, the other peers on 3), 13-53 s per peer run and class, 4 trials per tunable
peer, ~100 s per missing retrain model: about an hour. ``--eval_max_train_samples`` and
``--max_mia_samples`` shorten the evaluations (and say so in the JSON).

Without ``--base_dir`` a base model is trained (``--preset``, ``--base_epochs``) into
``<output_dir>/base``; without ``--adapter`` the adapter is untrained with ``--wf_config`` into
``<output_dir>/wf``; retrain models missing under ``--retrain_root`` (default
``<output_dir>/retrain``) are trained there. Smoke test (digits, micro preset, one class, tiny
budgets; seconds):

    python recipes/benchmark.py --smoke --output_dir /tmp/bench-smoke

What runs on which classes (N = number of classes):

- WF: one untraining round serves every class; every row is evaluated (all N classes);
- retrain and the fast gradient-free peers (``svd_projection``, ``ssd``, ``logit_mask``): all N
  classes (``--retrain_classes``, ``--all_class_methods``);
- the other peers: ``--classes`` (default: 3 classes drawn with ``--seed``).

For every (method, class): ``evaluate_unlearning`` on the test split (FA, RA, test accuracy) and the
training split (MIA-efficacy, ZRF, linear probe, 5-shot probe), see ``hf_unlearn.evaluation.definitions.DEFINITIONS``.
Costs:

- time to forget one class: the method's wall time for one class (WF: its single round, which
  serves every class);
- time to serve all N classes: WF: its single round; a peer run on all N classes: the measured sum;
  otherwise N x the mean per-class time, marked *extrapolated*;
- bytes stored to serve every class: a peer ships one full model per class, N x its parameter
  bytes; WF: the backbone plus the filters of all classes;
- per-request latency: the median forward time of one batch of ``--latency_batch`` (64) images,
  interleaved rounds over every model (WF: adapter with one row per request, a row per sample,
  and the exported/merged model).

``--tune``: each tunable peer gets the same budget, ``--tune_trials`` configurations (its defaults
plus random draws from its ``search_space``), each run on ``--tune_class`` with the training split
minus a stratified validation split (``--val_fraction``), scored on that validation split by
``RA - FA`` (both %); the best configuration is then used for every class on the full training
split. All trials are recorded in the JSON. WF's hyperparameters come from its own search
(``recipes/README.md``).

Outputs in ``--output_dir``: ``benchmark.json`` (everything), ``benchmark.md`` (tables),
``benchmark.png`` (forget vs retain accuracy, marker area = time to serve all classes), ``tradeoff.png``.

The logic lives in ``hf_unlearn.benchmark`` (``run.run_benchmark`` takes the same
``arguments.BenchmarkArguments`` from Python); the equal-budget search in ``hf_unlearn.baselines.tuning``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

try:
    import hf_unlearn  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_unlearn.benchmark.arguments import BenchmarkArguments
from hf_unlearn.benchmark.run import run_benchmark
from hf_unlearn.commands.arguments import parse_arguments

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WF_CONFIG = str(REPO / "recipes" / "configs" / "fashion_mnist_resnet.yaml")


def parse(argv: Optional[Sequence[str]] = None) -> BenchmarkArguments:
    """The command line (or ``--config file.yaml``) as a ``BenchmarkArguments``; an adapter trained here
    uses recipes/configs/fashion_mnist_resnet.yaml unless ``--wf_config`` says otherwise."""
    (args,) = parse_arguments((BenchmarkArguments,), argv, prog="recipes/benchmark.py",
                              description=__doc__.split("\n\n")[0], defaults={"wf_config": DEFAULT_WF_CONFIG})
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_benchmark(parse(argv))


if __name__ == "__main__":
    main()
