"""Forget/retain accuracy as an `evaluate` metric module: a wrapper of ``hf_unlearn.evaluation.metrics.set_accuracy``.

Load it offline from its path (no Hub access needed)::

    import evaluate
    metric = evaluate.load("/path/to/forget_retain_accuracy.py")
    # or: from hf_unlearn.evaluation import load_metric; metric = load_metric("forget_retain_accuracy")
    metric.compute(predictions=[1, 1, 2, 2], references=[0, 1, 2, 2], forget_classes=[0])
    # {'forget_accuracy': 0.0, 'retain_accuracy': 100.0, 'accuracy': 75.0, 'n_forget': 1, 'n_retain': 3}

Under DDP, gather predictions first (``accelerator.gather_for_metrics``) and compute on one
process, or load with ``num_process``/``process_id`` and let evaluate combine the shards.
The numbers come from ``hf_unlearn.evaluation.metrics.set_accuracy`` (one implementation): evaluate
copies this file into its modules cache and imports it there, so the package is imported by its absolute
name (it must be installed, or on ``PYTHONPATH``), never relatively.
"""

import datasets
import evaluate
import numpy as np

from hf_unlearn.evaluation.metrics import set_accuracy

_DESCRIPTION = """
Accuracy of a class-unlearned classifier, split by the forgotten class set S (percent, 0-100):

- forget_accuracy (FA): accuracy on the samples whose reference label is in S (target ~0);
- retain_accuracy (RA): accuracy on all other samples; compare with the original model's RA
  on the same samples;
- accuracy: plain accuracy on all samples.

UA (unlearning accuracy) in the SalUn papers is 100 - forget_accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices.
    references (`list` of `int`): true class indices.
    forget_classes (`int` or `list` of `int`): the forgotten class set S. Every class in S must
        occur in `references`.
Returns:
    forget_accuracy (`float`), retain_accuracy (`float`), accuracy (`float`), all in percent;
    n_forget (`int`), n_retain (`int`): samples behind each number.
Examples:
    >>> metric = evaluate.load("forget_retain_accuracy.py")  # doctest: +SKIP
    >>> metric.compute(predictions=[1, 1, 2, 2], references=[0, 1, 2, 2], forget_classes=[0])  # doctest: +SKIP
    {'forget_accuracy': 0.0, 'retain_accuracy': 100.0, 'accuracy': 75.0, 'n_forget': 1, 'n_retain': 3}
"""

_CITATION = """
@article{poppi2024multiclass,
  title={Multi-Class Unlearning for Image Classification via Weight Filtering},
  author={Poppi, Samuele and Sarto, Sara and Cornia, Marcella and Baraldi, Lorenzo and Cucchiara, Rita},
  journal={IEEE Intelligent Systems},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ForgetRetainAccuracy(evaluate.Metric):
    """Forget / retain accuracy for a forgotten class set."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2304.02049"],
        )

    def _compute(self, predictions, references, forget_classes=None):
        if forget_classes is None:
            raise ValueError("Pass forget_classes=[...] (the forgotten class indices) to compute().")
        result = set_accuracy(predictions, references, forget_classes)  # checks lengths, classes, empty sets
        correct = np.asarray(predictions, dtype=np.int64) == np.asarray(references, dtype=np.int64)
        return {
            "forget_accuracy": result["forget_acc"],
            "retain_accuracy": result["retain_acc"],
            "accuracy": float(100.0 * correct.mean()),
            "n_forget": result["n_forget"],
            "n_retain": result["n_retain"],
        }
