"""What the penultimate features still know about a forgotten class: linear and few-shot probes, linear CKA.

linear probe
    Can a linear classifier on penultimate features still tell class c apart?
few-shot probe
    Can class c be told apart from a few labelled samples per class (nearest class mean)?
linear CKA
    Centred kernel alignment of two feature sets on the same samples (1 = same up to rotation and
    scale, ~0 = unrelated); read as the gap to the retrained model.

Example::

    from hf_unlearn.evaluation.probes import linear_cka, linear_probe_accuracy
    linear_probe_accuracy(train_feats, train_y == c, test_feats, test_y == c)["balanced_accuracy"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import as_bool_mask, as_floats, as_labels, check_same_length

__all__ = ["few_shot_probe_accuracy", "linear_cka", "linear_probe_accuracy"]


# representation probe
# --------------------------------------------------------------------------------------------


def _probe_inputs(train_features, train_y, test_features, test_y, convert, y_name: str):
    """Checked ``(Xtr, ytr, Xte, yte)`` for a probe: 2-D features of one width, one target per row."""
    Xtr = as_floats(train_features, "train_features", ndim=2)
    Xte = as_floats(test_features, "test_features", ndim=2)
    ytr = convert(train_y, f"train_{y_name}")
    yte = convert(test_y, f"test_{y_name}")
    check_same_length(**{"train_features": Xtr, f"train_{y_name}": ytr})
    check_same_length(**{"test_features": Xte, f"test_{y_name}": yte})
    if Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"Feature sizes differ: train {Xtr.shape[1]} vs test {Xte.shape[1]}.")
    return Xtr, ytr, Xte, yte


def linear_probe_accuracy(
    train_features: Any,
    train_is_class: Any,
    test_features: Any,
    test_is_class: Any,
    seed: int = 0,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
) -> dict[str, Any]:
    """Can a linear probe on (penultimate) features still tell class c from the rest?

    A one-vs-rest probe: standardise the features (fit on train), then a class-balanced
    logistic regression (``class_weight="balanced"``, L2, ``C``) fitted on ``train_*`` to predict
    "is this sample of class c?", scored on ``test_*``:

    - ``balanced_accuracy`` (%): mean of the true-positive and true-negative rates, so 50 means
      the probe cannot tell class c apart and 100 means it always can, whatever the class ratio;
    - ``auc``: ROC AUC of the probe's score, in [0, 1] (0.5 = chance).

    Knowledge removed from the representation (not only from the head) shows as a probe score
    near that of a model retrained without c; logit masking leaves it at the base model's level.

    Example::

        r = linear_probe_accuracy(feats_train, y_train == c, feats_test, y_test == c, seed=0)
        r["balanced_accuracy"], r["auc"]   # e.g. (99.1, 0.998) base; ~(50, 0.5) if c is gone
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn: optional, only for the probe
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, ytr, Xte, yte = _probe_inputs(train_features, train_is_class, test_features, test_is_class,
                                       as_bool_mask, "is_class")
    for name, y in (("train_is_class", ytr), ("test_is_class", yte)):
        if y.all() or not y.any():
            raise ValueError(f"`{name}` must contain both samples of class c (True) and others (False).")
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed),
    )
    probe.fit(Xtr, ytr)
    pred = probe.predict(Xte)
    score = probe.decision_function(Xte)
    return {
        "balanced_accuracy": float(100.0 * balanced_accuracy_score(yte, pred)),
        "auc": float(roc_auc_score(yte, score)),
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
        "n_test_positive": int(yte.sum()),
    }


def few_shot_probe_accuracy(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    classes: Any,
    *,
    shots: int = 5,
    draws: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """How easily can the forgotten class be relearned from the frozen features? (few-shot probe)

    A nearest-class-mean classifier over **all** classes is built from ``shots`` labelled training
    samples per class (cosine similarity to each class's mean L2-normalised feature, as in few-shot
    evaluation), then scored on the test samples of ``classes``: the % assigned to their own class.
    Repeated for ``draws`` seeded draws of the shots; the mean and the spread are returned.

    Why next to :func:`linear_probe_accuracy`: with thousands of labelled samples a linear probe
    finds almost any class in almost any features (on Fashion-MNIST even a model that never saw the
    class gives ~94% balanced accuracy), so it cannot tell a class the network still encodes from one
    it never learned. A handful of samples can: features trained on the class cluster it tightly,
    features that never learned it (or had it removed) do not. Logit masking leaves the features
    untouched, so its score equals the base model's exactly; a model retrained without the class
    scores far lower. Closer to retrain = more forgotten.

    Args:
        train_features, train_labels: features ``(N, D)`` and labels of the training split; every
            class present needs at least ``shots`` samples.
        test_features, test_labels: the evaluation features and labels.
        classes: the forgotten class id(s) scored.
        shots: labelled samples per class (5 by default).
        draws: seeded repetitions.

    Example::

        r = few_shot_probe_accuracy(feats_train, y_train, feats_test, y_test, [5], shots=5)
        r["accuracy"], r["std"]   # e.g. 97.8 for the base model, 24.6 for a model retrained without 5
    """
    Xtr, ytr, Xte, yte = _probe_inputs(train_features, train_labels, test_features, test_labels, as_labels, "labels")
    if int(shots) < 1 or int(draws) < 1:
        raise ValueError(f"shots and draws must be >= 1, got shots={shots}, draws={draws}.")
    wanted = np.atleast_1d(np.asarray(classes, dtype=np.int64))
    label_set = np.unique(ytr)
    missing = sorted(set(wanted.tolist()) - set(label_set.tolist()))
    if missing:
        raise ValueError(f"Classes {missing} have no training samples: the probe cannot be given their shots.")
    counts = {int(c): int((ytr == c).sum()) for c in label_set}
    short = {c: n for c, n in counts.items() if n < shots}
    if short:
        raise ValueError(f"Classes with fewer than shots={shots} training samples: {short}; lower `shots` "
                         "or give more training samples.")
    scored = np.isin(yte, wanted)
    if not scored.any():
        raise ValueError(f"No test samples of classes {wanted.tolist()}.")

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    Ztr, Zte = unit(Xtr), unit(Xte[scored])
    target = np.searchsorted(label_set, yte[scored])  # positions in label_set
    by_class = [np.flatnonzero(ytr == c) for c in label_set]
    rng = np.random.default_rng(seed)
    per_draw = []
    for _ in range(int(draws)):
        means = np.stack([Ztr[rng.choice(idx, size=int(shots), replace=False)].mean(0) for idx in by_class])
        pred = (Zte @ unit(means).T).argmax(1)
        per_draw.append(float(100.0 * np.mean(pred == target)))
    return {
        "accuracy": float(np.mean(per_draw)),
        "std": float(np.std(per_draw)),
        "per_draw": per_draw,
        "shots": int(shots),
        "draws": int(draws),
        "n_test": int(scored.sum()),
    }


# --------------------------------------------------------------------------------------------
# representation similarity
# --------------------------------------------------------------------------------------------


def linear_cka(features_a: Any, features_b: Any) -> float:
    """Linear centred kernel alignment (Kornblith et al., ICML 2019) of two feature sets.

    ``features_a`` ``(n, d1)`` and ``features_b`` ``(n, d2)`` are two models' features of the SAME
    ``n`` samples, in the same order (the widths may differ). With column-centred ``X`` and ``Y``::

        CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

    It lies in [0, 1]; it is 1 for features equal up to an orthogonal transform and an isotropic
    scale, and near 0 for unrelated ones (about ``d / n`` for independent random features). The suite
    reports it on the forgotten class's test samples against the model retrained without the class
    ("Are We Truly Forgetting?", arXiv 2503.06991): the unlearned model's CKA to the retrain next to
    the base's; closer to 1 than the base = the class's representation moved towards the oracle's.

    Example:
        >>> X = np.random.default_rng(0).normal(size=(50, 4))
        >>> round(linear_cka(X, 3 * X @ np.linalg.qr(np.ones((4, 4)) + np.eye(4))[0]), 6)
        1.0
    """
    X = as_floats(features_a, "features_a", ndim=2)
    Y = as_floats(features_b, "features_b", ndim=2)
    check_same_length(features_a=X, features_b=Y)
    if len(X) < 2:
        raise ValueError(f"linear_cka needs at least 2 samples, got {len(X)}.")
    X = X - X.mean(0, keepdims=True)
    Y = Y - Y.mean(0, keepdims=True)
    # Work with the n x n Gram matrices when n is small, the d x d ones otherwise: same value.
    if len(X) <= max(X.shape[1], Y.shape[1]):
        K, L = X @ X.T, Y @ Y.T
        cross, norm_x, norm_y = float((K * L).sum()), float(np.linalg.norm(K)), float(np.linalg.norm(L))
    else:
        cross = float(np.linalg.norm(Y.T @ X) ** 2)
        norm_x, norm_y = float(np.linalg.norm(X.T @ X)), float(np.linalg.norm(Y.T @ Y))
    if norm_x == 0.0 or norm_y == 0.0:
        which = "features_a" if norm_x == 0.0 else "features_b"
        raise ValueError(f"`{which}` is constant over the samples: CKA is undefined (a collapsed feature set?).")
    return float(min(1.0, max(0.0, cross / (norm_x * norm_y))))
