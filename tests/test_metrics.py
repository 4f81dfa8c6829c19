"""Tests for hf_unlearn.evaluation: known answers, error messages, evaluate modules, DDP gather,
plots and reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hf_unlearn.evaluation import metric_path
from hf_unlearn.evaluation.metrics import accuracy_matrix, class_counts, per_class_accuracy, set_accuracy, summarize_matrix
from hf_unlearn.evaluation.plots import plot_accuracy_matrix, plot_filter_sparsity, plot_forget_retain
from hf_unlearn.evaluation.privacy import mia_efficacy, true_label_confidence, zrf_score
from hf_unlearn.evaluation.probes import few_shot_probe_accuracy, linear_probe_accuracy
from hf_unlearn.evaluation.report import write_report
from hf_unlearn.evaluation.sampled import sample_retain_pairs, sampled_retain_estimate

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# accuracy matrix and its summary
# --------------------------------------------------------------------------------------------

# 3 classes, unbalanced: 4 samples of class 0, 2 of class 1, 1 of class 2.
LABELS = np.array([0, 0, 0, 0, 1, 1, 2])
PREDS = {
    0: np.array([1, 1, 0, 1, 1, 1, 2]),  # class 0: 1/4, class 1: 2/2, class 2: 1/1
    1: np.array([0, 0, 0, 0, 0, 2, 0]),  # class 0: 4/4, class 1: 0/2, class 2: 0/1
    2: np.array([0, 0, 0, 1, 1, 0, 0]),  # class 0: 3/4, class 1: 1/2, class 2: 0/1
}


def test_accuracy_matrix_known_answer():
    A = accuracy_matrix(PREDS, LABELS, num_classes=3)
    expected = np.array([[25.0, 100.0, 100.0], [100.0, 0.0, 0.0], [75.0, 50.0, 0.0]])
    np.testing.assert_array_equal(A, expected)
    # array input (row index = forgotten class) gives the same matrix
    stacked = np.stack([PREDS[c] for c in range(3)])
    np.testing.assert_array_equal(accuracy_matrix(stacked, LABELS, 3), expected)
    # torch tensors are accepted too
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(accuracy_matrix(torch.as_tensor(stacked), torch.as_tensor(LABELS), 3), expected)


def test_accuracy_matrix_partial_rows_and_absent_class():
    A = accuracy_matrix({1: PREDS[1]}, LABELS, num_classes=4)  # class 3 has no test samples
    assert np.isnan(A[0]).all() and np.isnan(A[2]).all() and np.isnan(A[3]).all()
    np.testing.assert_array_equal(A[1, :3], [100.0, 0.0, 0.0])
    assert np.isnan(A[1, 3])
    s = summarize_matrix(A, None, class_counts(LABELS, 4))
    assert s["rows"] == [1] and s["n_rows"] == 1
    assert s["retain_acc_per_class"][1] == pytest.approx(100.0 * 4 / 5)
    assert math.isnan(s["retain_acc_per_class"][0])


def test_summarize_matrix_weighted_retain_exact():
    A = accuracy_matrix(PREDS, LABELS, 3)
    counts = class_counts(LABELS, 3)
    assert counts.tolist() == [4, 2, 1]
    base = per_class_accuracy(np.array([0, 0, 0, 1, 1, 1, 2]), LABELS, 3)  # 75, 100, 100
    np.testing.assert_array_equal(base, [75.0, 100.0, 100.0])
    s = summarize_matrix(A, base, counts)

    assert s["method"] == "exact" and s["stderr"] == 0.0
    assert s["forget_acc_per_class"] == [25.0, 0.0, 0.0]
    # RA_c = correct retain samples / retain samples of row c (sample-weighted)
    ra = [100 * 3 / 3, 100 * 4 / 5, 100 * 4 / 6]
    assert s["retain_acc_per_class"] == pytest.approx(ra, abs=1e-12)
    # the unweighted off-diagonal mean would differ for rows 1 and 2
    assert s["retain_acc_per_class"][2] != pytest.approx((75.0 + 50.0) / 2)
    # also equal to the direct accuracy on the pool of samples not of class c
    for c in range(3):
        pool = LABELS != c
        assert s["retain_acc_per_class"][c] == pytest.approx(100 * np.mean(PREDS[c][pool] == LABELS[pool]))
    base_ra = [100 * 3 / 3, 100 * 4 / 5, 100 * 5 / 6]
    assert s["base_retain_acc_per_class"] == pytest.approx(base_ra)
    assert s["base_forget_acc_per_class"] == [75.0, 100.0, 100.0]
    drops = [b - r for b, r in zip(base_ra, ra)]
    assert s["retain_drop_per_class"] == pytest.approx(drops)
    assert s["mean_forget_acc"] == pytest.approx(25.0 / 3)
    assert s["mean_retain_acc"] == pytest.approx(np.mean(ra))
    assert s["mean_base_retain_acc"] == pytest.approx(np.mean(base_ra))
    assert s["mean_retain_drop"] == pytest.approx(np.mean(drops))
    assert (s["worst_forget_row"], s["worst_forget_acc"]) == (0, 25.0)
    assert s["worst_retain_row"] == 2 and s["worst_retain_acc"] == pytest.approx(ra[2])
    assert s["worst_drop_row"] == 2 and s["worst_retain_drop"] == pytest.approx(100 / 6)


def test_summarize_matrix_rejects_inconsistent_inputs():
    A = accuracy_matrix(PREDS, LABELS, 3)
    with pytest.raises(ValueError, match="class_counts"):
        summarize_matrix(A, None, [4, 2])
    with pytest.raises(ValueError, match="square"):
        summarize_matrix(A[:2], None, [4, 2, 1])
    with pytest.raises(ValueError, match="percent"):
        summarize_matrix(A / 100 - 0.5, None, [4, 2, 1])
    with pytest.raises(ValueError, match="base_per_class_acc"):
        summarize_matrix(A, [1.0, 2.0], [4, 2, 1])


# --------------------------------------------------------------------------------------------
# sampled retain estimate
# --------------------------------------------------------------------------------------------


def test_sampled_retain_estimate_is_unbiased_and_reports_method():
    rng = np.random.default_rng(0)
    num_classes, n = 30, 600
    labels = rng.choice(num_classes, size=n, p=rng.dirichlet(np.ones(num_classes) * 3))
    # per-row accuracies differ; predictions right with that probability, else another class
    row_acc = rng.uniform(0.5, 0.95, size=num_classes)
    right = rng.random((num_classes, n)) < row_acc[:, None]
    P = np.where(right, labels[None, :], (labels[None, :] + 1) % num_classes)
    exact = summarize_matrix(accuracy_matrix(P, labels, num_classes), None, class_counts(labels, num_classes))
    assert exact["method"] == "exact"

    estimates, stderrs = [], []
    for seed in range(300):
        pairs = sample_retain_pairs(labels, num_classes, samples_per_row=8, seed=seed)
        assert len(pairs) == num_classes * 8
        assert np.all(labels[pairs.samples] != pairs.rows)
        est = sampled_retain_estimate(P[pairs.rows, pairs.samples], labels, pairs)
        assert est["method"] == "sampled" and est["n_pairs"] == len(pairs)
        estimates.append(est["mean_retain_acc"])
        stderrs.append(est["stderr"])
    estimates = np.array(estimates)
    sem = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact["mean_retain_acc"]) < 2 * sem
    # the reported standard error matches the spread of the estimates
    assert 0.8 < np.mean(stderrs) / estimates.std(ddof=1) < 1.25


def test_sampled_retain_estimate_base_and_exhaustive_case():
    # sampling every retain sample of every row reproduces the exact numbers, stderr 0
    A = accuracy_matrix(PREDS, LABELS, 3)
    base = np.array([75.0, 100.0, 100.0])
    exact = summarize_matrix(A, base, class_counts(LABELS, 3))
    pairs = sample_retain_pairs(LABELS, 3, samples_per_row=100, seed=0)
    P = np.stack([PREDS[c] for c in range(3)])
    est = sampled_retain_estimate(P[pairs.rows, pairs.samples], LABELS, pairs, base_per_class_acc=base)
    assert est["mean_retain_acc"] == pytest.approx(exact["mean_retain_acc"])
    assert est["stderr"] == pytest.approx(0.0, abs=1e-12)
    assert est["mean_base_retain_acc"] == pytest.approx(exact["mean_base_retain_acc"])
    assert est["mean_retain_drop"] == pytest.approx(exact["mean_retain_drop"])
    with pytest.raises(ValueError, match="Mismatched lengths"):
        sampled_retain_estimate(P[pairs.rows, pairs.samples][:-1], LABELS, pairs)
    with pytest.raises(ValueError, match="samples_per_row"):
        sample_retain_pairs(LABELS, 3, samples_per_row=1)


# --------------------------------------------------------------------------------------------
# forgotten set
# --------------------------------------------------------------------------------------------


def test_set_accuracy_known_answer():
    preds = [1, 0, 1, 1, 2, 2, 0, 3]
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    r = set_accuracy(preds, labels, forget_set={0, 3})
    assert r == {"forget_acc": 50.0, "retain_acc": 100.0, "n_forget": 4, "n_retain": 4}
    assert set_accuracy(preds, labels, 2)["forget_acc"] == 100.0


def test_set_accuracy_errors_are_clear():
    with pytest.raises(ValueError, match="empty"):
        set_accuracy([], [], {0})
    with pytest.raises(ValueError, match=r"Forget class 7 has no samples.*split that contains class 7"):
        set_accuracy([0, 1], [0, 1], {0, 7})
    with pytest.raises(ValueError, match="Mismatched lengths: preds=3, labels=2"):
        set_accuracy([0, 1, 1], [0, 1], {0})
    with pytest.raises(ValueError, match="argmax"):
        set_accuracy(np.zeros((2, 3)), [0, 1], {0})
    with pytest.raises(ValueError, match="nothing to compute retain"):
        set_accuracy([0, 0], [0, 0], {0})
    with pytest.raises(ValueError, match="NaN"):
        set_accuracy([0.0, np.nan], [0, 1], {0})


def test_bad_inputs_elsewhere():
    with pytest.raises(ValueError, match="empty"):
        accuracy_matrix({0: []}, [], 2)
    with pytest.raises(ValueError, match="num_classes=2"):
        accuracy_matrix({0: [0, 1]}, [0, 2], 2)
    with pytest.raises(ValueError, match=r"preds_by_row\[0\] has 1 predictions, labels has 2"):
        accuracy_matrix({0: [0]}, [0, 1], 2)
    with pytest.raises(ValueError, match="NaN"):
        true_label_confidence([[0.0, np.nan]], [0])
    with pytest.raises(ValueError, match="Mismatched lengths"):
        true_label_confidence([[0.0, 1.0]], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        mia_efficacy([], [0.5], [0.5])
    with pytest.raises(ValueError, match="true_label_confidence"):
        mia_efficacy([3.2, 1.0], [0.5], [0.5])


# --------------------------------------------------------------------------------------------
# MIA-efficacy
# --------------------------------------------------------------------------------------------


def _mia_data(seed=0):
    rng = np.random.default_rng(seed)
    retain_train = rng.beta(40, 1, size=800)  # members: very confident
    test_retain = rng.beta(4, 2, size=300)  # non-members: much less confident
    return rng, retain_train, test_retain


def test_true_label_confidence():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    conf = true_label_confidence(logits, [2, 0])
    expected0 = math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))
    np.testing.assert_allclose(conf, [expected0, 1.0])


def test_mia_efficacy_synthetic():
    rng, retain_train, test_retain = _mia_data()
    forgotten = rng.beta(4, 2, size=200)  # forget samples look like unseen data
    remembered = rng.beta(40, 1, size=200)  # forget samples still look like training data
    high = mia_efficacy(retain_train, test_retain, forgotten, seed=0)
    low = mia_efficacy(retain_train, test_retain, remembered, seed=0)
    assert high > 90.0
    assert low < 20.0
    assert mia_efficacy(retain_train, test_retain, forgotten, seed=0) == high  # seeded
    capped = mia_efficacy(retain_train, test_retain, forgotten, seed=0, max_samples=100)
    assert capped > 85.0


# --------------------------------------------------------------------------------------------
# ZRF
# --------------------------------------------------------------------------------------------


def test_zrf_identical_is_one():
    p = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert zrf_score(p, p) == 1.0


def test_zrf_onehot_vs_uniform_hand_computed():
    K = 4
    onehot = np.eye(K)[[0, 2]]
    uniform = np.full((2, K), 1 / K)
    # m = ((1+1/K)/2, 1/(2K), ...); KL(onehot||m) = log2(2K/(K+1)),
    # KL(uniform||m) = (1/K) log2(2/(K+1)) + (K-1)/K
    kl1 = math.log2(2 * K / (K + 1))
    kl2 = (1 / K) * math.log2(2 / (K + 1)) + (K - 1) / K
    js = 0.5 * (kl1 + kl2)
    assert 0.0 < js < 1.0
    assert zrf_score(onehot, uniform) == pytest.approx(1 - js, abs=1e-12)
    # disjoint supports: JS = 1 bit, ZRF = 0
    assert zrf_score(np.eye(K)[[0]], np.eye(K)[[1]]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.filterwarnings("ignore:reduction")
def test_zrf_reference_code_variant_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=7)
    q = rng.dirichlet(np.ones(5), size=7)
    tp, tq = torch.as_tensor(p), torch.as_tensor(q)
    m = (tp + tq) / 2
    # the authors' code: F.kl_div with its default reduction="mean"
    ref = 1 - (0.5 * F.kl_div(torch.log(tp), m) + 0.5 * F.kl_div(torch.log(tq), m)).item()
    assert zrf_score(p, q, variant="reference_code") == pytest.approx(ref, abs=1e-12)
    assert zrf_score(p, q) < zrf_score(p, q, variant="reference_code")


def test_zrf_errors():
    with pytest.raises(ValueError, match="softmax"):
        zrf_score([[2.0, 1.0]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="Mismatched shapes"):
        zrf_score([[0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="variant"):
        zrf_score([[0.5, 0.5]], [[0.5, 0.5]], variant="kl")


# --------------------------------------------------------------------------------------------
# linear probe
# --------------------------------------------------------------------------------------------


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(0)
    n, d = 600, 16
    is_c = rng.random(n) < 0.1  # unbalanced on purpose: balanced accuracy must handle it
    feats = rng.normal(size=(n, d))
    feats[is_c, 0] += 6.0
    r = linear_probe_accuracy(feats[:400], is_c[:400], feats[400:], is_c[400:], seed=0)
    assert r["balanced_accuracy"] > 95.0 and r["auc"] > 0.99
    assert r["n_test"] == 200 and r["n_test_positive"] == int(is_c[400:].sum())

    noise = rng.normal(size=(n, d))
    r = linear_probe_accuracy(noise[:400], is_c[:400], noise[400:], is_c[400:], seed=0)
    assert 35.0 < r["balanced_accuracy"] < 65.0
    assert 0.35 < r["auc"] < 0.65

    with pytest.raises(ValueError, match="both samples"):
        linear_probe_accuracy(feats[:10], np.zeros(10, bool), feats[10:20], is_c[10:20])
    with pytest.raises(ValueError, match="Mismatched lengths"):
        linear_probe_accuracy(feats[:10], is_c[:9], feats[10:20], is_c[10:20])


def _clusters(rng, n_per_class, centres, spread):
    feats = np.concatenate([c + spread * rng.normal(size=(n_per_class, len(c))) for c in centres])
    labels = np.repeat(np.arange(len(centres)), n_per_class)
    return feats, labels


def test_few_shot_probe_tells_an_encoded_class_from_a_collapsed_one():
    rng = np.random.default_rng(0)
    eye = np.eye(8) * 4.0
    # four well separated classes: 5 shots recover every one of them
    centres = [eye[0], eye[1], eye[2], eye[3]]
    Xtr, ytr = _clusters(rng, 50, centres, 0.3)
    Xte, yte = _clusters(rng, 40, centres, 0.3)
    r = few_shot_probe_accuracy(Xtr, ytr, Xte, yte, [3], shots=5, draws=6, seed=0)
    assert r["accuracy"] == 100.0 and r["std"] == 0.0 and len(r["per_draw"]) == 6
    assert r["shots"] == 5 and r["n_test"] == 40
    # class 3 no longer has features of its own (they sit inside class 2's cluster): chance between 2 and 3
    collapsed = [eye[0], eye[1], eye[2], eye[2]]
    Xtr, ytr = _clusters(rng, 50, collapsed, 0.3)
    Xte, yte = _clusters(rng, 40, collapsed, 0.3)
    r = few_shot_probe_accuracy(Xtr, ytr, Xte, yte, [3], shots=5, draws=20, seed=0)
    assert 15.0 < r["accuracy"] < 85.0
    # a set: the test samples of both classes, each must land on its own class
    r = few_shot_probe_accuracy(Xtr, ytr, Xte, yte, [0, 1], shots=5, draws=3)
    assert r["accuracy"] == 100.0 and r["n_test"] == 80
    # seeded: the same draws give the same number
    assert few_shot_probe_accuracy(Xtr, ytr, Xte, yte, [3], seed=4) == few_shot_probe_accuracy(
        Xtr, ytr, Xte, yte, [3], seed=4)


def test_few_shot_probe_errors_are_clear():
    rng = np.random.default_rng(1)
    X, y = _clusters(rng, 4, [np.ones(3), -np.ones(3)], 0.1)
    with pytest.raises(ValueError, match="fewer than shots=5"):
        few_shot_probe_accuracy(X, y, X, y, [0], shots=5)
    with pytest.raises(ValueError, match=r"Classes \[7\] have no training samples"):
        few_shot_probe_accuracy(X, y, X, y, [7], shots=2)
    with pytest.raises(ValueError, match="No test samples"):
        few_shot_probe_accuracy(X, y, X[y == 0], y[y == 0], [1], shots=2)
    with pytest.raises(ValueError, match="Feature sizes differ"):
        few_shot_probe_accuracy(X, y, X[:, :2], y, [0], shots=2)
    with pytest.raises(ValueError, match="shots and draws"):
        few_shot_probe_accuracy(X, y, X, y, [0], shots=0)


# --------------------------------------------------------------------------------------------
# evaluate modules, loaded offline in a fresh process
# --------------------------------------------------------------------------------------------

_EVALUATE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import evaluate
    from hf_unlearn.evaluation import load_metric, metric_path

    data = json.load(open(sys.argv[1]))
    out = {}
    fra = load_metric("forget_retain_accuracy")
    out["fra"] = fra.compute(predictions=data["preds"], references=data["labels"], forget_classes=data["forget"])
    direct = evaluate.load(str(metric_path("forget_retain_accuracy")), keep_in_memory=True)
    for i in range(0, len(data["preds"]), 3):  # batched accumulation
        direct.add_batch(predictions=data["preds"][i:i + 3], references=data["labels"][i:i + 3])
    out["fra_batched"] = direct.compute(forget_classes=data["forget"])
    try:
        fra.compute(predictions=data["preds"], references=data["labels"], forget_classes=[9])
    except ValueError as exc:
        out["fra_error"] = str(exc)

    spec = importlib.util.spec_from_file_location("fra_mod", metric_path("forget_retain_accuracy"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out["fra_imported"] = mod.ForgetRetainAccuracy(keep_in_memory=True).compute(
        predictions=data["preds"], references=data["labels"], forget_classes=data["forget"])

    mia = load_metric("mia_efficacy", keep_in_memory=True)
    for group in ("retain_train", "test_retain", "forget_train"):
        mia.add_batch(confidences=data[group], groups=[group] * len(data[group]))
    out["mia"] = mia.compute(seed=3)
    print("RESULT" + json.dumps(out))
    """
)


def test_evaluate_modules_offline(tmp_path):
    rng, retain_train, test_retain = _mia_data(1)
    forget_conf = np.concatenate([rng.beta(4, 2, size=60), rng.beta(40, 1, size=40)])
    preds = rng.integers(0, 4, size=40)
    labels = rng.integers(0, 4, size=40)
    labels[:2] = [1, 3]
    data = {
        "preds": preds.tolist(), "labels": labels.tolist(), "forget": [1, 3],
        "retain_train": retain_train.tolist(), "test_retain": test_retain.tolist(), "forget_train": forget_conf.tolist(),
    }
    data_path = tmp_path / "data.json"
    data_path.write_text(json.dumps(data))
    hf_home = tmp_path / "hf_home"
    env = dict(os.environ)
    env.update(
        HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("HF_MODULES_CACHE", None)
    env.pop("HF_EVALUATE_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", _EVALUATE_SCRIPT, str(data_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])

    expected = set_accuracy(preds, labels, {1, 3})
    for key in ("fra", "fra_batched", "fra_imported"):
        r = out[key]
        assert r["forget_accuracy"] == pytest.approx(expected["forget_acc"])
        assert r["retain_accuracy"] == pytest.approx(expected["retain_acc"])
        assert r["accuracy"] == pytest.approx(100 * np.mean(preds == labels))
        assert (r["n_forget"], r["n_retain"]) == (expected["n_forget"], expected["n_retain"])
    assert "Forget class 9 has no samples" in out["fra_error"]
    assert out["mia"]["mia_efficacy"] == pytest.approx(mia_efficacy(retain_train, test_retain, forget_conf, seed=3))
    assert out["mia"]["n_members"] == len(test_retain)
    # the module cache went to the temporary HF_HOME
    assert (hf_home / "modules").is_dir()
    assert metric_path("mia_efficacy").is_file()
    with pytest.raises(ValueError, match="available"):
        metric_path("accuracy")


def test_evaluation_package_import_adds_nothing_heavy():
    # only what hf_unlearn.evaluation adds on top of the parent package counts
    code = (
        "import sys, hf_unlearn\n"
        "before = set(sys.modules)\n"
        "import hf_unlearn.evaluation\n"
        "added = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(','.join(sorted(added & {'evaluate', 'datasets', 'sklearn', 'matplotlib'})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""


# --------------------------------------------------------------------------------------------
# DDP gather: 1 and 2 processes give the same result on an uneven dataset
# --------------------------------------------------------------------------------------------

N_GATHER = 101


def _gather_data():
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_GATHER, 4, generator=g)
    y = torch.randint(0, 3, (N_GATHER,), generator=g)
    return x, y


def _gather_model():
    import torch

    class LinearClassifier(torch.nn.Module):
        """A Linear layer called like a transformers classifier: ``model(pixel_values=x).logits``."""

        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(4, 3)

        def forward(self, pixel_values):
            return SimpleNamespace(logits=self.classifier(pixel_values))

    torch.manual_seed(0)
    return LinearClassifier()


def _gather_worker(out_prefix):
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hf_unlearn.data.tensors import TensorDictDataset, collate_batches
    from hf_unlearn.evaluation.predict import Predictor, run_predictors

    accelerator = Accelerator(cpu=True)
    x, y = _gather_data()
    loader = DataLoader(TensorDictDataset(x, y), batch_size=8, collate_fn=collate_batches)
    model, loader = accelerator.prepare(_gather_model(), loader)
    model.eval()
    out = run_predictors([Predictor("m", model, features=True)], loader, accelerator=accelerator,
                         expected_labels=y.numpy(), keep_logits=True, progress=False)
    logits, labels = torch.from_numpy(out["m"]["logits"][0]), torch.from_numpy(out["labels"])
    acc = (logits.argmax(-1) == labels).float().mean().item()
    torch.save(
        {"logits": logits, "labels": labels, "acc": acc, "world": accelerator.num_processes,
         "features": torch.from_numpy(out["m"]["feats"][0])},
        f"{out_prefix}.rank{accelerator.process_index}.pt",
    )


@pytest.mark.slow  # one and two spawned gloo ranks: ~45 s on the shared 2-core box
def test_gather_one_vs_two_processes(tmp_path):
    torch = pytest.importorskip("torch")
    from ddp import launch_ranks

    x, y = _gather_data()
    with torch.no_grad():
        ref_logits = _gather_model()(x).logits
    ref_acc = (ref_logits.argmax(-1) == y).float().mean().item()

    results = {}
    for nproc in (1, 2):
        prefix = tmp_path / f"n{nproc}"
        # spawned, not accelerate.debug_launcher: a forked child inherits the parent's AcceleratorState
        # (both ranks then think they are rank 0) and its used OpenMP pool (deadlock); see tests/ddp.py
        launch_ranks(_gather_worker, str(prefix), nprocs=nproc)
        for rank in range(nproc):  # every rank holds the full, de-duplicated result
            r = torch.load(f"{prefix}.rank{rank}.pt")
            assert r["world"] == nproc
            assert r["labels"].shape == (N_GATHER,)
            assert torch.equal(r["labels"], y)
            torch.testing.assert_close(r["logits"], ref_logits)
            torch.testing.assert_close(r["features"], x)  # the classifier layer's input, every sample once
            assert r["acc"] == ref_acc
            results[(nproc, rank)] = r
    assert torch.equal(results[(1, 0)]["logits"], results[(2, 0)]["logits"])
    assert torch.equal(results[(2, 0)]["logits"], results[(2, 1)]["logits"])


def test_prediction_engine_requires_prepared_loader_when_distributed():
    from hf_unlearn.evaluation.predict import Predictor, run_predictors

    class FakeAccelerator:
        num_processes = 2

    with pytest.raises(ValueError, match="accelerator.prepare"):
        run_predictors([Predictor("m", _gather_model())], [{"pixel_values": None}], accelerator=FakeAccelerator())


def test_prediction_engine_refuses_a_shuffled_loader():
    import torch
    from torch.utils.data import DataLoader

    from hf_unlearn.data.tensors import TensorDictDataset, collate_batches
    from hf_unlearn.evaluation.predict import Predictor, run_predictors

    x, y = _gather_data()
    loader = DataLoader(TensorDictDataset(x, y), batch_size=8, shuffle=True, collate_fn=collate_batches,
                        generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="unshuffled"):
        run_predictors([Predictor("m", _gather_model())], loader, expected_labels=y.numpy(), progress=False)


# --------------------------------------------------------------------------------------------
# plots and report
# --------------------------------------------------------------------------------------------


def _assert_png(path: Path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_plots_write_valid_pngs(tmp_path):
    A = accuracy_matrix(PREDS, LABELS, 3)
    s = summarize_matrix(A, [75.0, 100.0, 100.0], class_counts(LABELS, 3))
    names = ["cat", "dog", "bird"]

    p = plot_accuracy_matrix(A, names, tmp_path / "new" / "dir" / "A.png")
    assert p == tmp_path / "new" / "dir" / "A.png"
    _assert_png(p)

    series = {
        "unlearned": s,
        "base": {"forget_acc": s["base_forget_acc_per_class"], "retain_acc": s["base_retain_acc_per_class"]},
        "retrain": {"forget_acc": [0.0, 0.0, 0.0], "retain_acc": [99.0, 98.0, 97.0]},
    }
    _assert_png(plot_forget_retain(series, names, tmp_path / "fr.png"))
    _assert_png(plot_forget_retain({"unlearned": s}, None, tmp_path / "fr_min.png"))

    share = {"layer.0.q_proj": np.array([0.1, 0.0, 0.3]), "layer.0.fc1": np.array([0.02, 0.5, 0.0])}
    _assert_png(plot_filter_sparsity(share, names, tmp_path / "sparsity.png"))

    # a big matrix (no numbers in cells) also works
    big = np.random.default_rng(0).uniform(0, 100, size=(40, 40))
    _assert_png(plot_accuracy_matrix(big, None, tmp_path / "big.png"))

    with pytest.raises(ValueError, match="class_names"):
        plot_accuracy_matrix(A, ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="one value per class"):
        plot_filter_sparsity({"a": [0.1, 0.2], "b": [0.1]}, None, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_write_report(tmp_path):
    A = accuracy_matrix(PREDS, LABELS, 3)
    s = summarize_matrix(A, np.array([75.0, 100.0, 100.0]), class_counts(LABELS, 3))
    report = {
        "model": "org/tiny-resnet",
        "adapter": "out/adapter",
        "dataset": "fashion_mnist",
        "split": "test",
        "seed": 0,
        "class_names": ["cat", "dog", "bird"],
        "accuracy": s,
        "retrain": {"forget_acc_per_class": [0.0, 0.0, 0.0], "retain_acc_per_class": [99.0, 98.0, float("nan")]},
        "mia_efficacy": {"unlearned": 97.5, "base": 8.0, "retrain": 99.0},
        "zrf": {"unlearned": np.float64(0.61)},
        "probe": {"unlearned": {"balanced_accuracy": 55.0, "auc": 0.56}, "base": {"balanced_accuracy": 99.0, "auc": 1.0}},
        "cost": {"train_seconds": 50.2, "storage_bytes": np.int64(12345)},
        "extra_curve": [1.0, 2.0, 3.0],
    }
    json_path, md_path = write_report(report, tmp_path / "eval")
    assert json_path.name == "report.json" and md_path.name == "report.md"
    data = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert data["retrain"]["retain_acc_per_class"][2] is None
    assert data["accuracy"]["retain_acc_per_class"] == pytest.approx(s["retain_acc_per_class"])
    assert data["cost"]["storage_bytes"] == 12345
    versions = data["environment"]["versions"]
    assert {"torch", "transformers", "peft", "hf_unlearn"} <= set(versions)
    assert versions["torch"]
    assert data["environment"]["machine"]
    md = md_path.read_text()
    for needle in ("| class (row) | FA | base acc | retrain FA | RA | base RA | drop | retrain RA |",
                   "0 cat", "MIA-efficacy", "ZRF", "Linear probe", "balanced_accuracy", "Glossary",
                   "extra_curve", "mean RA (%), exact"):
        assert needle in md, needle
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.endswith(".tmp")]

    # a sampled estimate and a single forgotten set render too
    pairs = sample_retain_pairs(LABELS, 3, samples_per_row=3, seed=0)
    P = np.stack([PREDS[c] for c in range(3)])
    est = sampled_retain_estimate(P[pairs.rows, pairs.samples], LABELS, pairs)
    _, md2 = write_report({"model": "m", "accuracy": est}, tmp_path / "eval2")
    assert "sampled" in md2.read_text() and "±" in md2.read_text()
    _, md3 = write_report({"model": "m", "accuracy": set_accuracy([1, 1, 2], [0, 1, 2], {0})}, tmp_path / "eval3")
    assert "| unlearned | 0.00 | 100.00 | 1 | 2 |" in md3.read_text()


def test_one_definitions_table_fills_the_report_glossary_with_the_runs_settings(tmp_path):
    from hf_unlearn.evaluation.definitions import DEFINITIONS, format_definitions

    # a report without its own definitions: the glossary is the table at the report's settings
    _, md = write_report({"model": "m", "settings": {"few_shot_shots": 3, "few_shot_draws": 4, "relearn_steps": 7}},
                         tmp_path / "a")
    text = md.read_text()
    glossary = text[text.index("## Glossary"):]
    assert "from `shots` (3) labelled" in glossary and "mean of 4 seeded draws" in glossary
    assert "`steps` (7) full-batch" in glossary and "(5)" not in glossary
    assert all(f"**{name}**" in glossary for name in DEFINITIONS)
    # a report with its definitions (the suite writes them): those, once, in the glossary
    filled = format_definitions(shots=2, exact_limit=8)
    _, md = write_report({"model": "m", "definitions": filled}, tmp_path / "b")
    text = md.read_text()
    assert "up to 8 classes" in text and text.count(filled["few-shot probe"]) == 1
    assert "{" not in "".join(filled.values())  # every template field was filled
