"""Retrain the base recipe from scratch without the forgotten class(es): the gold-standard reference.

Every class of Fashion-MNIST, one model each (recipe read from the base model's folder):

    accelerate launch recipes/retrain.py --base_dir runs/base-resnet --classes all \
        --output_dir runs/retrain-resnet

writes ``runs/retrain-resnet/class-<c>/`` (model, processor, metrics.json, retrain.json with the
excluded classes, the training class counts and the wall time) and ``retrain_summary.json`` (all
models, total wall time). A set forgotten together: ``--classes Pullover Coat --together``
(``classes-2-4/``). Any train_base flag overrides the base recipe (e.g. ``--num_threads 1``);
``--skip_existing`` resumes a long loop. ``python recipes/retrain.py --help`` lists every option;
the command is ``hf_unlearn.commands.retrain.main``, the library ``hf_unlearn.training.retrain.run``.
"""

import os
import sys

try:
    from hf_unlearn.commands.retrain import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hf_unlearn.commands.retrain import main


if __name__ == "__main__":
    main()
