"""Measuring class unlearning: accuracy matrix, forget/retain accuracy, MIA, ZRF, probes,
plots and reports.

Import from the modules (``from hf_unlearn.evaluation.suite import evaluate_unlearning``); this package
re-exports nothing (importing ``hf_unlearn.evaluation.report`` stays as light as that module). The
metric functions are model-agnostic: they take predictions, logits, confidences or features
(numpy arrays, lists or torch tensors) that the caller computed. :func:`~hf_unlearn.evaluation.suite.evaluate_unlearning`
(``suite.py``) runs models over a train and a test split (through the one prediction engine,
``predict.py``) and computes all of them at once, next to the base model and the retrain references.
Metrics: ``metrics.py`` (accuracies, sets), ``sampled.py`` (RA above ~20 classes), ``privacy.py`` (MIA-efficacy, ZRF), ``probes.py`` (linear
and few-shot probes, CKA); their definitions: ``definitions.py``. The model helpers (classifier layer,
penultimate features, random reference) are in :mod:`hf_unlearn.modeling`. scikit-learn, matplotlib
and evaluate are optional and imported inside the functions that need them.

Two `evaluate` metric modules ship in ``hf_unlearn/evaluation/evaluate_modules/`` (a data folder, not a
package: ``hf_unlearn.evaluation.metrics`` is the ``metrics.py`` module). Load them offline
with :func:`load_metric`::

    from hf_unlearn.evaluation import load_metric
    metric = load_metric("forget_retain_accuracy")
    metric.compute(predictions=preds, references=labels, forget_classes=[3])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent / "evaluate_modules"
METRIC_NAMES = ("forget_retain_accuracy", "mia_efficacy")

__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]


def metric_path(name: str) -> Path:
    """Path of a packaged `evaluate` metric module: ``forget_retain_accuracy`` or ``mia_efficacy``.

    Example:
        >>> metric_path("forget_retain_accuracy").name
        'forget_retain_accuracy.py'
    """
    stem = name[:-3] if name.endswith(".py") else name
    path = METRICS_DIR / f"{stem}.py"
    if stem not in METRIC_NAMES or not path.is_file():
        raise ValueError(
            f"Unknown hf_unlearn metric {name!r}; available: {', '.join(METRIC_NAMES)}. "
            "For evaluate's own metrics use evaluate.load(...) directly (needs the Hub)."
        )
    return path


def load_metric(name: str, **kwargs: Any):
    """Load a packaged metric with ``evaluate.load`` from its local path (works offline).

    ``kwargs`` go to ``evaluate.load`` (e.g. ``keep_in_memory=True``, ``num_process``,
    ``process_id``, ``experiment_id``). evaluate is imported here, not at package import (~6 s).

    Example::

        metric = load_metric("forget_retain_accuracy")
        metric.compute(predictions=[1, 1, 2, 2], references=[0, 1, 2, 2], forget_classes=[0])
        # {'forget_accuracy': 0.0, 'retain_accuracy': 100.0, 'accuracy': 75.0, 'n_forget': 1, 'n_retain': 3}
    """
    path = metric_path(name)
    import evaluate

    return evaluate.load(str(path), **kwargs)
