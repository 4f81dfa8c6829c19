"""MIA-efficacy (SalUn protocol) as an `evaluate` metric module: a wrapper of ``hf_unlearn.evaluation.privacy.mia_efficacy``.

The three sample groups travel as one column of confidences plus one column naming the group,
so the module also works with evaluate's batching and distributed combination::

    import evaluate
    mia = evaluate.load("/path/to/mia_efficacy.py")
    # or: from hf_unlearn.evaluation import load_metric; mia = load_metric("mia_efficacy")
    mia.add_batch(confidences=conf_retain_train, groups=["retain_train"] * len(conf_retain_train))
    mia.add_batch(confidences=conf_test_retain, groups=["test_retain"] * len(conf_test_retain))
    mia.add_batch(confidences=conf_forget_train, groups=["forget_train"] * len(conf_forget_train))
    mia.compute(seed=0)   # {'mia_efficacy': 97.4, 'n_members': ..., 'n_nonmembers': ..., 'n_forget': ...}

The number comes from ``hf_unlearn.evaluation.privacy.mia_efficacy`` (one implementation): evaluate
copies this file into its modules cache and imports it there, so the package is imported by its absolute
name (it must be installed, or on ``PYTHONPATH``), never relatively.
"""

import datasets
import evaluate
import numpy as np

from hf_unlearn.evaluation.privacy import mia_efficacy

GROUPS = ("retain_train", "test_retain", "forget_train")

_DESCRIPTION = """
MIA-efficacy, the membership-inference test of SalUn (Fan et al., ICLR 2024) for unlearning.
Feature: the softmax confidence on the true label. Members: min(|retain_train|, |test_retain|)
retain training samples drawn at random (seeded); non-members: the test samples of the retained
classes. An SVC(C=3, gamma="auto", kernel="rbf") is fitted on members (1) vs non-members (0)
and applied to the forget training samples. MIA-efficacy = % of them predicted non-member
(0-100, higher = more forgotten; compare with a model retrained without the forgotten classes).
"""

_KWARGS_DESCRIPTION = """
Args:
    confidences (`list` of `float`): softmax confidence on the true label, in [0, 1].
    groups (`list` of `str`): for each confidence, one of "retain_train" (training samples of
        retained classes), "test_retain" (test samples of retained classes), "forget_train"
        (training samples of the forgotten classes).
    seed (`int`, default 0): seed for drawing the members.
    max_samples (`int`, optional): cap on members and non-members each (departs from SalUn;
        only to bound the SVC's cost on very large test sets).
Returns:
    mia_efficacy (`float`): % of forget samples predicted non-member.
    n_members, n_nonmembers, n_forget (`int`).
Examples:
    >>> mia = evaluate.load("mia_efficacy.py")  # doctest: +SKIP
    >>> mia.compute(confidences=[0.99, 0.98, 0.6, 0.5, 0.55], groups=["retain_train", "retain_train",  # doctest: +SKIP
    ...     "test_retain", "test_retain", "forget_train"])
"""

_CITATION = """
@inproceedings{fan2024salun,
  title={SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation},
  author={Fan, Chongyu and Liu, Jiancheng and Zhang, Yihua and Wong, Eric and Wei, Dennis and Liu, Sijia},
  booktitle={ICLR},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MiaEfficacy(evaluate.Metric):
    """SalUn MIA-efficacy on the forget training samples."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"confidences": datasets.Value("float64"), "groups": datasets.Value("string")}
            ),
            reference_urls=["https://arxiv.org/abs/2310.12508"],
        )

    def _compute(self, confidences, groups, seed=0, max_samples=None):
        conf = np.asarray(confidences, dtype=np.float64)
        groups = np.asarray(groups, dtype=object)
        if conf.shape != groups.shape:
            raise ValueError(f"Mismatched lengths: {conf.size} confidences vs {groups.size} groups.")
        unknown = set(groups.tolist()) - set(GROUPS)
        if unknown:
            raise ValueError(f"Unknown group(s) {sorted(unknown)}; each group must be one of {list(GROUPS)}.")
        retain, nonmembers, forget = (conf[groups == g] for g in GROUPS)
        for name, arr in zip(GROUPS, (retain, nonmembers, forget)):
            if arr.size == 0:
                raise ValueError(f"No samples in group {name!r}; all three groups are required.")
        efficacy = mia_efficacy(retain, nonmembers, forget, seed=seed, max_samples=max_samples)  # checks values
        n_nonmembers = len(nonmembers) if max_samples is None else min(len(nonmembers), int(max_samples))
        return {
            "mia_efficacy": efficacy,
            "n_members": int(min(len(retain), n_nonmembers)),
            "n_nonmembers": int(n_nonmembers),
            "n_forget": int(len(forget)),
        }
