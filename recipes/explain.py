"""Explain an adapter's filters: what each class's row switches off, and where in the image.

    python recipes/explain.py --adapter runs/wf-resnet --dataset fashion_mnist --split test \
        --images_per_class 2 --auc_images 200 --output_dir runs/explain-wf-resnet

Writes ``explain.json`` (everything), ``explain.md`` (tables and definitions) and PNGs:
``filter_usage.png`` (mean 1-alpha and share alpha<0.5, classes x layers), ``filter_maps_NN.png``
(1-alpha per class and unit, per layer), ``similarity_confusion.png`` (row similarity in
dendrogram order next to the base model's confusion, with their Spearman/Pearson correlation),
``auc_curves.png`` (mean RISE deletion/insertion curves) and ``saliency_<id>_<name>.png``
(original | filter saliency | Grad-CAM | random, with each map's deletion/insertion AUC).
``--classes`` and ``--layer`` choose what to explain; ``--help`` lists every option. The job is
``hf_unlearn.explain.job.run_explain``, its options ``hf_unlearn.commands.explain``.
"""

import os
import sys

try:
    from hf_unlearn.commands.explain import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hf_unlearn.commands.explain import main


if __name__ == "__main__":
    main()
