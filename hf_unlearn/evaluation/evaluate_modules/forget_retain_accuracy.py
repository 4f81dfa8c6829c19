"""Forget/retain accuracy as an `evaluate` metric module (self-contained, numpy only).

Load it offline from its path (no Hub access needed)::

    import evaluate
    metric = evaluate.load("/path/to/forget_retain_accuracy.py")
    # or: from hf_unlearn.evaluation import load_metric; metric = load_metric("forget_retain_accuracy")
    metric.compute(predictions=[1, 1, 2, 2], references=[0, 1, 2, 2], forget_classes=[0])
    # {'forget_accuracy': 0.0, 'retain_accuracy': 100.0, 'accuracy': 75.0, 'n_forget': 1, 'n_retain': 3}

Under DDP, gather predictions first (``accelerator.gather_for_metrics``) and compute on one
process, or load with ``num_process``/``process_id`` and let evaluate combine the shards.
It agrees with ``hf_unlearn.evaluation.metrics.set_accuracy`` (the test suite checks it).
"""

import datasets
import evaluate
import numpy as np

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
        preds = np.asarray(predictions, dtype=np.int64)
        refs = np.asarray(references, dtype=np.int64)
        if refs.size == 0:
            raise ValueError("No predictions/references to score: the split is empty.")
        if preds.shape != refs.shape:
            raise ValueError(f"Mismatched lengths: {preds.size} predictions vs {refs.size} references.")
        if forget_classes is None:
            raise ValueError("Pass forget_classes=[...] (the forgotten class indices) to compute().")
        if np.ndim(forget_classes) == 0:
            forget_classes = [forget_classes]
        forget = sorted({int(c) for c in forget_classes})
        if not forget:
            raise ValueError("`forget_classes` is empty: name at least one class to forget.")
        present = set(np.unique(refs).tolist())
        for c in forget:
            if c not in present:
                raise ValueError(
                    f"Forget class {c} has no samples in `references` (classes present: {sorted(present)[:12]}"
                    f"{' ...' if len(present) > 12 else ''}). Use the model's class indices, or evaluate on a "
                    f"split that contains class {c}."
                )
        in_forget = np.isin(refs, forget)
        if in_forget.all():
            raise ValueError("Every sample belongs to the forget set: there is nothing to compute retain accuracy on.")
        correct = preds == refs
        return {
            "forget_accuracy": float(100.0 * correct[in_forget].mean()),
            "retain_accuracy": float(100.0 * correct[~in_forget].mean()),
            "accuracy": float(100.0 * correct.mean()),
            "n_forget": int(in_forget.sum()),
            "n_retain": int((~in_forget).sum()),
        }
