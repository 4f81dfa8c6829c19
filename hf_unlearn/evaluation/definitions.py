"""The one table of metric definitions: the report's ``definitions``, its Markdown glossary and the cards.

``DEFINITIONS`` holds templates: ``{shots}``, ``{draws}``, ``{relearn_steps}`` and ``{exact_limit}`` are
the run's settings, filled by :func:`format_definitions` (the suite writes the filled table into every
report, so a reader sees the numbers that run used).

Example:
    >>> format_definitions(shots=3)["few-shot probe"][:60]
    'nearest-class-mean classifier over all classes from `shots` '
"""

from __future__ import annotations

__all__ = ["DEFINITIONS", "format_definitions"]

DEFINITIONS = {
    "FA / RA": "forget accuracy = accuracy (%) on the test samples of the forgotten class(es), target ~0 (a "
    "model retrained without them scores 0; UA = 100 - FA); retain accuracy = accuracy (%) on all other test "
    "samples, sample-weighted (RA_c = sum over y != c of n_y A[c][y], divided by the sum over y != c of n_y). For an adapter row c forgets "
    "class c.",
    "base RA / drop": "the original model's accuracy on the same retain samples; drop = base RA - RA in points "
    "(negative = better than the base: a removed class no longer attracts the others' predictions).",
    "accuracy matrix": "A[c][y] = accuracy (%) on test class y with row c selected; mean FA = mean diagonal, mean "
    "RA = mean of RA_c over rows. Exact (every row x every sample) up to {exact_limit} classes, above that FA "
    "exact and RA estimated from sampled (row, sample) pairs, stratified by row, with its standard error "
    "(accuracy.method says which).",
    "MIA-efficacy": "SalUn protocol: feature = softmax confidence on the true label; members = "
    "|test retain| retain training samples drawn at random (seeded), non-members = the test samples of the "
    "retained classes; SVC(C=3, gamma='auto', rbf) fitted members vs non-members and applied to the forget "
    "TRAINING samples; % predicted non-member (higher = more forgotten).",
    "ZRF": "1 - mean over the forget TRAINING samples of JS(p_model || p_random), Jensen-Shannon with "
    "base-2 logarithms (so JS and ZRF lie in [0, 1]; 1 = indistinguishable from random); p_random = a randomly "
    "initialised copy of the same architecture (AutoModelForImageClassification.from_config, seeded with "
    "`seed`). Not the reference code's reversed-KL element mean.",
    "linear probe": "inputs of the final classifier layer (ResNet/ConvNeXt: pooled output; ViT: CLS "
    "token after the final layernorm), standardised; class-balanced logistic regression 'is this "
    "sample of the forgotten class(es)?' fitted on training-split features, scored on test-split "
    "features: balanced accuracy (%) and ROC AUC. 50% / 0.5 = cannot tell the class apart.",
    "few-shot probe": "nearest-class-mean classifier over all classes from `shots` ({shots}) labelled "
    "training samples per class (cosine to each class's mean L2-normalised penultimate feature), scored "
    "on the test samples of the forgotten class(es): % assigned to their own class, mean of {draws} seeded "
    "draws. Equal to the base = the features still encode the class (logit masking scores exactly the "
    "base); near the retrain = it is gone from the representation.",
    "linear CKA to retrain": "linear centred kernel alignment (Kornblith et al. 2019) of the penultimate "
    "features of the forgotten class's test samples (the probe's test subset) with the retrained model's "
    "features of the same samples, in [0, 1]; reported for the unlearned model and for the base. Higher "
    "than the base = the class's representation moved towards the oracle's.",
    "k-shot relearning": "a copy of the model (an adapter row exported) fine-tuned with Adam for `steps` "
    "({relearn_steps}) full-batch steps on `k` labelled training samples of every class (seeded), the final "
    "classifier only ('head', lr 1e-2) or every parameter ('full', lr 1e-3), eval mode (BatchNorm statistics "
    "fixed); the forgotten class's test accuracy (%) after, for the unlearned model, the base and the "
    "retrain under the same budget. Near the retrain = the class comes back no faster than in a model "
    "that never learned it.",
    "retrain": "the gold standard: the base recipe trained from scratch without the forgotten "
    "class(es), keeping all N outputs (hf_unlearn.training.retrain).",
}


def format_definitions(*, shots: int = 5, draws: int = 10, relearn_steps: int = 30,
                       exact_limit: int = 20) -> dict[str, str]:
    """:data:`DEFINITIONS` with a run's settings filled in (the defaults are the suite's defaults).

    Example:
        >>> "(30) full-batch" in format_definitions()["k-shot relearning"]
        True
    """
    return {name: text.format(shots=shots, draws=draws, relearn_steps=relearn_steps, exact_limit=exact_limit)
            for name, text in DEFINITIONS.items()}
