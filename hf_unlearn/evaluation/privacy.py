"""Privacy-style measures of forgetting on the forget TRAINING samples: MIA-efficacy and ZRF.

MIA-efficacy
    SalUn's membership-inference test on the forget training samples: % judged non-members.
ZRF
    Zero Retrain Forgetting (Chundawat et al. 2023): 1 - mean Jensen-Shannon divergence
    between the model and a randomly initialised copy on the forget samples.

Example::

    from hf_unlearn.evaluation.privacy import mia_efficacy, true_label_confidence, zrf_score
    conf = true_label_confidence(logits, labels)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import as_floats, as_labels, check_same_length

__all__ = ["mia_efficacy", "true_label_confidence", "zrf_score"]


# membership inference (SalUn)
# --------------------------------------------------------------------------------------------


def true_label_confidence(logits: Any, labels: Any) -> np.ndarray:
    """Softmax probability of the true label: ``softmax(logits[i])[labels[i]]``, shape ``(n,)``.

    The MIA feature of :func:`mia_efficacy`. Computed in float64 with the max-shift, so large
    logits do not overflow.

    Example:
        >>> true_label_confidence([[0.0, 0.0], [10.0, 0.0]], [1, 0]).round(4).tolist()
        [0.5, 1.0]
    """
    logits = as_floats(logits, "logits", ndim=2)
    labels = as_labels(labels, "labels", logits.shape[1])
    check_same_length(logits=logits, labels=labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return np.exp(shifted[np.arange(len(labels)), labels] - log_norm)


def _confidences(x: Any, name: str) -> np.ndarray:
    arr = as_floats(x, name, ndim=1)
    if arr.min() < -1e-6 or arr.max() > 1.0 + 1e-6:  # tolerate float32 rounding of a softmax
        raise ValueError(
            f"`{name}` must be softmax confidences in [0, 1]; got values in "
            f"[{arr.min():.3g}, {arr.max():.3g}]. Use true_label_confidence(logits, labels)."
        )
    return np.clip(arr, 0.0, 1.0)


def mia_efficacy(
    retain_train_conf: Any,
    test_retain_conf: Any,
    forget_train_conf: Any,
    seed: int = 0,
    *,
    max_samples: int | None = None,
) -> float:
    """MIA-efficacy (SalUn protocol): % of forget training samples an attacker calls non-members.

    Protocol (Fan et al., ICLR 2024, ``SVC_MIA`` with ``target_test=forget``):

    1. feature = softmax confidence on the true label (:func:`true_label_confidence`);
    2. non-members = the test samples of the retained classes (``test_retain_conf``);
    3. members = ``min(|retain train|, |non-members|)`` retain training samples drawn without
       replacement with ``seed`` (SalUn takes the first ``|test|``; we draw at random);
    4. fit ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` on members (1) vs non-members (0);
    5. predict the forget training samples; return 100 * the share predicted 0.

    Higher = more forgotten; a model retrained without the class is the reference (the forget
    samples look like unseen data to it). ``max_samples`` caps members and non-members alike
    (random, seeded) to bound the SVC's quadratic cost on very large test sets; it departs from
    SalUn, so report it when used.

    Example::

        mia = mia_efficacy(
            true_label_confidence(logits_retain_train, y_retain_train),
            true_label_confidence(logits_test_retained, y_test_retained),
            true_label_confidence(logits_forget_train, y_forget_train),
            seed=0,
        )  # e.g. 97.4 (% of forget samples judged non-members)
    """
    from sklearn.svm import SVC  # scikit-learn: optional, only for MIA

    retain = _confidences(retain_train_conf, "retain_train_conf")
    nonmembers = _confidences(test_retain_conf, "test_retain_conf")
    forget = _confidences(forget_train_conf, "forget_train_conf")
    rng = np.random.default_rng(seed)
    if max_samples is not None:
        if int(max_samples) < 1:
            raise ValueError(f"`max_samples` must be >= 1, got {max_samples!r}.")
        if len(nonmembers) > max_samples:
            nonmembers = rng.choice(nonmembers, size=int(max_samples), replace=False)
    n_members = min(len(retain), len(nonmembers))
    members = rng.choice(retain, size=n_members, replace=False)
    X = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(X, y)
    pred = clf.predict(forget[:, None])
    return float(100.0 * np.mean(pred == 0))


# --------------------------------------------------------------------------------------------
# ZRF
# --------------------------------------------------------------------------------------------


def _probs(x: Any, name: str) -> np.ndarray:
    arr = as_floats(x, name, ndim=2)
    if arr.min() < 0.0:
        raise ValueError(f"`{name}` must be probabilities (softmax outputs), found negative values.")
    sums = arr.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            f"`{name}` rows must sum to 1 (softmax outputs); found sums in [{sums.min():.4g}, "
            f"{sums.max():.4g}]. Apply softmax to the logits first."
        )
    return arr / sums[:, None]


def _xlogy2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log2(y) with 0 * log2(0) = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log2(np.where(y > 0, y, 1.0)), 0.0)


def zrf_score(model_probs: Any, random_probs: Any, *, variant: str = "js") -> float:
    """Zero Retrain Forgetting score (Chundawat et al., AAAI 2023) on the forget samples.

    ``ZRF = 1 - (1/n) sum_i JS(p_i || q_i)`` where ``p_i`` is the unlearned model's softmax on
    forget sample i and ``q_i`` that of a randomly initialised copy of the architecture.

    Normalisation (``variant="js"``, the default and what hf_unlearn reports): the Jensen-Shannon
    divergence uses base-2 logarithms,
    ``JS(p||q) = 0.5 KL(p||m) + 0.5 KL(q||m)``, ``m = (p + q)/2``, ``KL(a||b) = sum_k a_k log2(a_k/b_k)``,
    so ``JS`` lies in [0, 1] and so does ZRF. ZRF = 1: the model's outputs on the forget
    samples are indistinguishable from a random network's; ZRF = 0: maximally different
    (disjoint supports). ZRF of identical distributions is 1. (With natural logs JS would lie in
    [0, ln 2] and ZRF in [1 - ln 2, 1]; multiply our JS by ln 2 to convert.)

    ``variant="reference_code"`` reproduces the authors' public code instead, which computes a
    different quantity: ``1 - [0.5 F.kl_div(log p, m) + 0.5 F.kl_div(log q, m)]`` with torch's
    default ``reduction="mean"``, i.e. the reversed KL ``KL(m||p)`` in natural log, averaged over
    all n*K ELEMENTS (so divided by the number of classes K as well). Its values crowd near 1
    and are not comparable with ours; use it only to compare with numbers computed by that code.

    Example:
        >>> p = [[0.7, 0.2, 0.1]]
        >>> zrf_score(p, p)
        1.0
    """
    p = _probs(model_probs, "model_probs")
    q = _probs(random_probs, "random_probs")
    if p.shape != q.shape:
        raise ValueError(f"Mismatched shapes: model_probs {p.shape} vs random_probs {q.shape} (same samples, same classes).")
    m = 0.5 * (p + q)
    if variant == "js":
        kl_pm = np.sum(_xlogy2(p, p) - _xlogy2(p, m), axis=1)
        kl_qm = np.sum(_xlogy2(q, q) - _xlogy2(q, m), axis=1)
        js = np.clip(0.5 * (kl_pm + kl_qm), 0.0, 1.0)
        return float(1.0 - js.mean())
    if variant == "reference_code":
        with np.errstate(divide="ignore", invalid="ignore"):
            log_m = np.log(m)
            t1 = np.where(m > 0, m * (log_m - np.log(p)), 0.0).mean()
            t2 = np.where(m > 0, m * (log_m - np.log(q)), 0.0).mean()
        return float(1.0 - (0.5 * t1 + 0.5 * t2))
    raise ValueError(f"Unknown ZRF variant {variant!r}; use 'js' (base-2 JS, default) or 'reference_code'.")


# --------------------------------------------------------------------------------------------
