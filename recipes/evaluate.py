"""Evaluate unlearning: prove the class is gone.

Every row of an adapter, next to the base model and the retrain references:

    accelerate launch recipes/evaluate.py --adapter runs/wf-resnet --dataset fashion_mnist \
        --retrain_root runs/retrain-resnet --output_dir runs/eval-wf-resnet

One forgotten set (rows multiplied): add ``--forget Pullover Coat``. A plain model (an exported
adapter row, a baseline, a retrain) with the original for comparison:

    accelerate launch recipes/evaluate.py --model runs/resnet-without-coat --base_model runs/base-resnet \
        --forget Coat --retrain_root runs/retrain-resnet --output_dir runs/eval-export-coat

Writes ``report.json`` (everything), ``report.md`` (tables and the metric definitions) and PNG
plots: ``accuracy_matrix.png``, ``forget_retain.png`` (per class, next to base and retrain) and
``filter_sparsity.png`` (share of each row's filters below 0.5, per layer). Metrics: FA/RA (the
exact N x N matrix up to 20 classes, sampled RA with stderr above), MIA-efficacy (SalUn), ZRF
(Jensen-Shannon, base 2, vs a random copy of the architecture), a linear probe on penultimate
features. Two real DDP processes on a CPU-only machine:

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no --main_process_port 29513 \
        recipes/evaluate.py --cpu --adapter runs/wf-resnet --output_dir runs/eval-ddp

``python recipes/evaluate.py --help`` lists every option (``--config file.yaml`` pre-fills them); the
command is ``hf_unlearn.commands.evaluate.main``, the job ``hf_unlearn.evaluation.job.run_evaluation``.
"""

import os
import sys

try:
    from hf_unlearn.commands.evaluate import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hf_unlearn.commands.evaluate import main


if __name__ == "__main__":
    main()
