"""k-shot relearning and linear CKA on constructed cases where the answer is known."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation.probes import linear_cka
from hf_unlearn.evaluation.relearn import check_relearn_budget, kshot_relearn, relearn_indices


class PointClassifier(torch.nn.Module):
    """2-D points -> a fixed feature map -> a linear head (``classifier``), transformers-style output.

    ``keep_class=True``: the features are the points themselves, so class 2 stays separable and only
    the head forgets it (its row is zero and its bias very low). ``keep_class=False``: the feature map
    drops the coordinate that tells class 2 from class 1, so no head can bring class 2 back.
    """

    def __init__(self, keep_class: bool):
        super().__init__()
        self.register_buffer("project", torch.eye(2) if keep_class else torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        self.classifier = torch.nn.Linear(2, 3)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
            self.classifier.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))

    def forward(self, pixel_values):
        return SimpleNamespace(logits=self.classifier(pixel_values @ self.project))


def points(n_per_class, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [4.0, 4.0]])
    x = torch.cat([c + 0.5 * torch.randn(n_per_class, 2, generator=g) for c in centres])
    return x, torch.arange(3).repeat_interleave(n_per_class)


def test_a_model_that_keeps_the_class_relearns_it_one_that_collapsed_it_cannot():
    xtr, ytr = points(30, 0)
    xte, yte = points(100, 1)
    keeps, collapses = PointClassifier(True), PointClassifier(False)
    for mode in ("head", "full"):
        kept = kshot_relearn(keeps, xtr, ytr, xte, yte, [2], shots=5, steps=40, mode=mode, learning_rate=0.5)
        gone = kshot_relearn(collapses, xtr, ytr, xte, yte, [2], shots=5, steps=40, mode=mode, learning_rate=0.5)
        assert kept["forget_acc_before"] == 0.0 and gone["forget_acc_before"] == 0.0  # both forgot at the output
        assert kept["forget_acc"] > 95.0, kept  # the features still hold class 2: it comes back
        # class 2 lies on class 1: the head can only trade one for the other. retain_acc is the mean over
        # classes 0 and 1 (100 for class 0), so class 1's accuracy is 2 * retain_acc - 100.
        class1 = 2 * gone["retain_acc"] - 100
        assert (gone["forget_acc"] + class1) / 2 < 65.0, gone
        assert (kept["forget_acc"] + 2 * kept["retain_acc"] - 100) / 2 > 95.0, kept
        assert kept["retain_acc"] > 95.0 and kept["n_train"] == 15 and kept["mode"] == mode
    # the model itself is untouched, and the procedure is deterministic
    assert keeps.classifier.bias[2].item() == -10.0
    again = kshot_relearn(keeps, xtr, ytr, xte, yte, [2], shots=5, steps=40, learning_rate=0.5)
    assert again == kshot_relearn(keeps, xtr, ytr, xte, yte, [2], shots=5, steps=40, learning_rate=0.5)


def test_one_step_budget_tells_a_masked_logit_from_nothing():
    """A huge single head step recovers a class that only its bias hid; zero steps is refused."""
    xtr, ytr = points(10, 0)
    xte, yte = points(50, 1)
    one = kshot_relearn(PointClassifier(True), xtr, ytr, xte, yte, [2], shots=10, steps=1, learning_rate=20.0)
    assert one["forget_acc"] > one["forget_acc_before"] + 50.0


def test_relearn_errors_are_clear():
    xtr, ytr = points(4, 0)
    model = PointClassifier(True)
    with pytest.raises(ValueError, match="shots=5 samples per class.*fewer"):
        kshot_relearn(model, xtr, ytr, xtr, ytr, [2], shots=5)
    with pytest.raises(ValueError, match="budget of 0 steps"):
        kshot_relearn(model, xtr, ytr, xtr, ytr, [2], shots=2, steps=0)
    with pytest.raises(ValueError, match="positive integers"):
        check_relearn_budget([0], 10, ["head"])
    with pytest.raises(ValueError, match="subset of"):
        check_relearn_budget([1], 10, ["probe"])
    with pytest.raises(ValueError, match="No test samples"):
        kshot_relearn(model, xtr, ytr, xtr[ytr < 2], ytr[ytr < 2], [2], shots=2)
    assert relearn_indices(ytr.numpy(), 3, seed=0).tolist() == relearn_indices(ytr.numpy(), 3, seed=0).tolist()
    assert np.bincount(ytr.numpy()[relearn_indices(ytr.numpy(), 3, seed=1)]).tolist() == [3, 3, 3]


def test_linear_cka_identical_rotated_unrelated_and_errors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, 2.5 * X @ Q + 7.0) == pytest.approx(1.0)  # rotation, scale and shift do not count
    assert linear_cka(X, rng.normal(size=(400, 9))) < 0.05  # unrelated features
    # a feature set that keeps half of the information sits in between
    half = np.concatenate([X[:, :3], rng.normal(size=(400, 3))], axis=1)
    assert 0.3 < linear_cka(X, half) < 0.8
    assert linear_cka(X[:5], X[:5] @ Q) == pytest.approx(1.0)  # n < d path
    with pytest.raises(ValueError, match="Mismatched lengths"):
        linear_cka(X, X[:10])
    with pytest.raises(ValueError, match="constant"):
        linear_cka(X, np.ones((400, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        linear_cka(X[:1], X[:1])


def test_probe_tradeoff_recipe_plots_settings_base_retrain_and_peers(tmp_path, capsys):
    """recipes/probe_tradeoff.py: one point per report (mean over its rows), base and retrain from the first,
    peers from --point; a table with the CKA/relearning columns the reports hold."""
    import json
    import runpy
    import sys
    from pathlib import Path

    def report(probe, drops):
        return {"settings": {"rows": [1, 2], "few_shot_shots": 3},
                "accuracy": {"forget_acc_per_class": [None, 0.0, 1.0], "retain_drop_per_class": [None] + drops,
                             "base_retain_acc_per_class": [None, 90.0, 92.0]},
                "retrain": {"retain_acc_per_class": [None, 91.0, 93.0]},
                "few_shot_probe": {"unlearned": [None] + probe, "base": [None, 80.0, 90.0],
                                   "retrain": [None, 40.0, 50.0]},
                "cka_to_retrain": {"unlearned": [None, 0.6, 0.8], "base": [None, 0.4, 0.4]},
                "relearn": {"head-5shot": {"unlearned": [None, 30.0, 50.0]}}}

    for name, probe, drops in (("a", [60.0, 70.0], [0.1, 0.3]), ("b", [50.0, 52.0], [0.5, 0.7])):
        (tmp_path / f"{name}.json").write_text(json.dumps(report(probe, drops)))
    script = Path(__file__).resolve().parents[1] / "recipes" / "probe_tradeoff.py"
    argv = ["probe_tradeoff.py", "--report", f"a={tmp_path / 'a.json'}", "--report", f"b={tmp_path / 'b.json'}",
            "--point", "neggrad=52.9,-0.3", "--output", str(tmp_path / "t.png")]
    old, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    assert "| a | 0.50 | 0.20 | 65.00 | 0.40 | 0.70 | 40.00 |" in out and "3-shot probe %" in out
    assert "base (85.0, 0.0), retrain (45.0, -1.0)" in err  # drop of the retrain = base RA - retrain RA
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tradeoff_plot_puts_a_collapsed_method_on_the_top_edge():
    """A method that collapses retain accuracy (SSD: 31.8 pt) is drawn on the edge, labelled, instead of
    squeezing every other point onto one line; the others stay where they are."""
    from hf_unlearn.evaluation.plots import tradeoff_layout

    points = {"retrain": (46.2, -0.74), "wf": (66.4, 0.11), "ssd": (69.9, 31.78), "base": (85.9, 0.0)}
    shown, top = tradeoff_layout(points, 5.0)
    assert top == pytest.approx(0.61) and shown["ssd"] == (69.9, top, True)
    assert {k: v[1] for k, v in shown.items() if k != "ssd"} == {"retrain": -0.74, "wf": 0.11, "base": 0.0}
    assert tradeoff_layout(points, None) == ({k: (x, y, False) for k, (x, y) in points.items()}, None)
    with pytest.raises(ValueError, match="non-finite"):
        tradeoff_layout({"x": (float("nan"), 0.0)}, 5.0)
