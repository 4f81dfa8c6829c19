"""Convergence-driven untraining: the validation split, the per-row measurement, the stop rule, the job."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_unlearn import UnlearnAdapter
from hf_unlearn.training.convergence import (ConvergenceTracker, binomial_tail, measure_rows, rows_above_target,
                                            stratified_validation_indices)
from hf_unlearn.training.objective import forget_class_weights
from hf_unlearn.training.untrain import UntrainingArguments, untrain

REPO = Path(__file__).resolve().parents[1]


def test_stratified_validation_split_holds_every_class_and_is_seeded():
    labels = np.repeat(np.arange(5), [50, 20, 10, 3, 2])
    train, val = stratified_validation_indices(labels, 5, fraction=0.2, max_samples=1000, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(labels)
    assert sorted(np.bincount(labels[val], minlength=5)) and (np.bincount(labels[val], minlength=5) >= 1).all()
    assert (np.bincount(labels[train], minlength=5) >= 1).all()  # every class keeps training data
    assert np.bincount(labels[val], minlength=5)[0] == 10  # 20% of 50
    again = stratified_validation_indices(labels, 5, fraction=0.2, max_samples=1000, seed=0)[1]
    other = stratified_validation_indices(labels, 5, fraction=0.2, max_samples=1000, seed=1)[1]
    assert np.array_equal(val, again) and not np.array_equal(val, other)
    # the cap applies to all classes together, proportionally
    _, capped = stratified_validation_indices(labels, 5, fraction=0.5, max_samples=17, seed=0)
    assert len(capped) <= 20 and (np.bincount(labels[capped], minlength=5) >= 1).all()


def test_validation_split_too_small_for_the_classes_is_a_clear_error():
    labels = np.array([0, 0, 0, 1, 2, 2])  # class 1 has one example: nothing left to train on
    with pytest.raises(ValueError, match=r"fewer than 2 examples of class\(es\) \[1\]"):
        stratified_validation_indices(labels, 3, fraction=0.5, max_samples=100, seed=0)
    with pytest.raises(ValueError, match="cannot hold one example of each of the 3 classes"):
        stratified_validation_indices(np.repeat(np.arange(3), 10), 3, fraction=0.5, max_samples=2, seed=0)


def test_tracker_stops_only_after_the_target_and_patience():
    tracker = ConvergenceTracker(target_forget_acc=1.0, patience=2, min_retain_delta=0.1)
    assert tracker.update(10, {"worst_forget_acc": 5.0, "retain_acc": 90.0}) is None  # not forgotten yet
    assert tracker.update(20, {"worst_forget_acc": 5.0, "retain_acc": 80.0}) is None  # stale 1
    assert tracker.update(25, {"worst_forget_acc": 5.0, "retain_acc": 80.0}) is None  # stale 2, but a row > 1%
    assert tracker.update(30, {"worst_forget_acc": 0.5, "retain_acc": 91.0}) is None  # target met, best so far
    assert tracker.update(40, {"worst_forget_acc": 0.5, "retain_acc": 91.5}) is None  # improved by > 0.1
    assert tracker.update(50, {"worst_forget_acc": 0.0, "retain_acc": 91.55}) is None  # stale 1
    restored = ConvergenceTracker(target_forget_acc=1.0, patience=2, min_retain_delta=0.1)
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))  # what a checkpoint keeps
    for t in (tracker, restored):
        assert t.update(60, {"worst_forget_acc": 0.0, "retain_acc": 91.4}) == "converged"



def test_forget_confidence_tolerates_a_miss_that_chance_explains_and_not_more():
    # 100 classes, 30 validation images each: one miss (3.3%) is what a row at a true 1% shows 26% of the
    # time; two misses only 3.6% of the time -> significant at 0.95.
    assert binomial_tail(1, 30, 0.01) == pytest.approx(1 - 0.99 ** 30)
    assert binomial_tail(2, 30, 0.01) == pytest.approx(0.0361, abs=1e-4)
    one_miss = {"forget_acc_per_class": [0.0, 100 / 30, 0.0], "forget_count_per_class": [30, 30, 30],
                "forget_hits_per_class": [0, 1, 0], "worst_forget_acc": 100 / 30, "retain_acc": 90.0}
    two_misses = {**one_miss, "forget_acc_per_class": [0.0, 100 / 30, 200 / 30], "forget_hits_per_class": [0, 1, 2],
                  "worst_forget_acc": 200 / 30}
    assert rows_above_target(one_miss, 1.0) == [1]  # the plain rule: any miss fails
    assert rows_above_target(one_miss, 1.0, confidence=0.95) == []
    assert rows_above_target(two_misses, 1.0, confidence=0.95) == [2]
    plain = ConvergenceTracker(target_forget_acc=1.0, patience=1)
    tolerant = ConvergenceTracker(target_forget_acc=1.0, patience=1, forget_confidence=0.95)
    for tracker in (plain, tolerant):
        tracker.update(10, one_miss)
    assert plain.update(20, one_miss) is None and not plain.target_met()
    assert tolerant.update(20, two_misses) is None and not tolerant.target_met()
    assert tolerant.update(30, one_miss) == "converged"
    # a checkpoint's history from before the counts were recorded falls back to the plain rule
    old = {k: v for k, v in one_miss.items() if k not in ("forget_count_per_class", "forget_hits_per_class")}
    assert rows_above_target(old, 1.0, confidence=0.95) == [1]


def test_forget_confidence_must_be_a_probability():
    with pytest.raises(ValueError, match="forget_confidence=1.5: give a probability in"):
        UntrainingArguments(max_steps=10, eval_every=5, forget_confidence=1.5)


def test_forget_class_weights_balance_rows():
    assert forget_class_weights([0, 1, 2, 0, 1, 2], 3) is None  # balanced: the plain mean, as before
    w = forget_class_weights([0, 0, 0, 1], 2)
    torch.testing.assert_close(w, torch.tensor([2 / 3, 2.0]))
    # each class's total weight is the same: the rare class's forget pairs count as much as the common one's
    assert float(w[0] * 3) == pytest.approx(float(w[1] * 1))


def test_measure_rows_matches_the_full_accuracy_matrix():
    """Every row's forget accuracy from the per-sample measurement equals the diagonal of the full
    per-row evaluation on the same data (each row runs on all of its class's samples)."""
    from tiny_models import build

    from hf_unlearn.evaluation.predict import evaluate_rows

    torch.manual_seed(0)
    adapter = UnlearnAdapter.attach(build("resnet"))
    with torch.no_grad():  # random filters, so rows really differ from the base model
        for name, p in adapter.model.named_parameters():
            if "weight_filter_theta" in name:
                p.copy_(torch.randn_like(p) * 3)
    pixels = torch.randn(96, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(96) % 4
    loader = [{"pixel_values": pixels[i:i + 32], "labels": labels[i:i + 32]} for i in range(0, 96, 32)]
    m = measure_rows(adapter.model, loader, 4, retain_rows=2, max_set_size=2, seed=0)
    full = evaluate_rows(adapter, loader, progress=False)
    np.testing.assert_allclose(m["forget_acc_per_class"], np.diag(full["matrix"]), atol=1e-3)
    assert m["worst_forget_acc"] == pytest.approx(max(np.diag(full["matrix"])), abs=1e-3)
    np.testing.assert_allclose([100 * h / n for h, n in zip(m["forget_hits_per_class"], m["forget_count_per_class"])],
                               m["forget_acc_per_class"], atol=1e-3)  # the counts the confidence rule tests
    assert m["base_acc"] == pytest.approx(full["base_accuracy"], abs=1e-6)
    assert {"retain_acc", "retain_drop", "set_forget_acc", "set_retain_drop"} <= set(m)
    assert m == measure_rows(adapter.model, loader, 4, retain_rows=2, max_set_size=2, seed=0)  # same pairs


def test_eval_every_without_validation_data_is_an_error():
    from tiny_models import build

    adapter = UnlearnAdapter.attach(build("resnet"))
    loader = [{"pixel_values": torch.randn(4, 3, 8, 8), "labels": torch.arange(4)}]
    with pytest.raises(ValueError, match="needs a validation_loader"):
        untrain(adapter, loader, UntrainingArguments(eval_every=5, max_steps=10, progress=False))


def _job(digits_base, tmp_path, name, **options):
    from hf_unlearn.training.job import run_untraining, untraining_job_arguments

    base_dir, _ = digits_base
    values = dict(base_model=str(base_dir), dataset="digits", output_dir=str(tmp_path / name), batch_size=64,
                  no_progress=True, eval_split="", eval_every=5, num_threads=1)
    values.update(options)
    return run_untraining(*untraining_job_arguments(**values))


def test_job_stops_when_converged_and_says_why(digits_base, tmp_path):
    # A loose target (every row's FA <= 100%) is met at once: the round ends after `patience` stale
    # measurements, long before the budget, with the reason, the history and the plot saved.
    metrics = _job(digits_base, tmp_path, "conv", target_forget_acc=100.0, patience=2, min_retain_delta=100.0,
                   max_steps=200)
    assert metrics["stop_reason"] == "converged"
    assert metrics["steps"] == 15  # measured at 5 (best), 10 (stale 1), 15 (stale 2: stop)
    assert metrics["budget_steps"] == 200
    history = metrics["convergence"]["history"]
    assert [h["step"] for h in history] == [5, 10, 15]
    assert len(history[0]["forget_acc_per_class"]) == 10
    # 10% of each class of the 1,437 training digits, carved out of the training data
    assert metrics["num_validation_examples"] + metrics["num_train_examples"] == 1437
    assert 135 <= metrics["num_validation_examples"] <= 150
    saved = json.loads((tmp_path / "conv" / "untraining_metrics.json").read_text())
    assert "retain accuracy stopped improving" in saved["stop_explanation"]
    assert (tmp_path / "conv" / "convergence.png").stat().st_size > 0


def test_job_stops_at_the_budget_with_a_warning_when_the_target_is_not_met(digits_base, tmp_path):
    with pytest.warns(UserWarning, match="was not met within the budget of 10 steps"):
        metrics = _job(digits_base, tmp_path, "budget", target_forget_acc=0.0, max_steps=10, learning_rate=1e-4)
    assert metrics["stop_reason"] == "budget_target_not_met" and metrics["steps"] == 10
    assert "BEFORE every row reached the forget target" in metrics["stop_explanation"]
    assert (tmp_path / "budget" / "adapter_model.safetensors").is_file()  # saved anyway: exit 0


def test_job_validation_split_missing_a_class_is_a_clear_error(digits_base, tmp_path):
    with pytest.raises(ValueError, match="cannot hold one example of each of the 10 classes"):
        _job(digits_base, tmp_path, "small", validation_max_samples=5, max_steps=10)
    with pytest.raises(ValueError, match="validation split has no example of"):
        _job(digits_base, tmp_path, "named", validation_split="test", validation_max_samples=5, max_steps=10)


def test_epochs_on_the_command_line_switch_a_convergence_config_to_epochs():
    from hf_unlearn.commands.train import parse_train_arguments

    def parse_args(argv):
        return parse_train_arguments(argv)[1]

    config = str(REPO / "recipes" / "configs" / "fashion_mnist_resnet.yaml")
    args = parse_args(["--config", config])
    assert args.eval_every > 0 and args.max_steps > 0  # the shipped config is convergence-driven
    args = parse_args(["--config", config, "--epochs", "2"])
    assert args.eval_every == 0 and args.max_steps == 0 and args.epochs == 2
    args = parse_args(["--config", config, "--epochs=2", "--eval-every", "7"])
    assert args.eval_every == 7 and args.max_steps == 0
    assert parse_args(["--config", config, "--balance_forget", "false"]).balance_forget is False
    assert parse_args(["--config", config, "--no_balance_forget"]).balance_forget is False
    assert parse_args(["--config", config]).balance_forget is True


@pytest.mark.slow  # three short jobs in subprocesses: ~50 s on a quiet 2-core box, minutes under load
def test_killed_convergence_run_resumes_to_the_same_filters_and_history(digits_base, tmp_path):
    base_dir, _ = digits_base
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    common = ["--base_model", str(base_dir), "--dataset",
              "digits", "--max_train_samples", "512", "--batch_size", "32", "--eval_split", "", "--no_progress",
              "--seed", "5", "--eval_every", "4", "--max_steps", "16", "--patience", "100", "--num_threads", "1"]
    def run(*extra, script=(str(REPO / "recipes" / "train.py"),)):
        return subprocess.run([sys.executable, *script, *common, *extra], env=env, capture_output=True, text=True,
                              timeout=600)

    whole = run("--output_dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run("--output_dir", str(tmp_path / "resumed"), "--checkpoint_every", "8",
                 script=(str(REPO / "tests" / "crash_after_step.py"), "9"))
    assert killed.returncode != 0
    resumed = run("--output_dir", str(tmp_path / "resumed"), "--checkpoint_every", "8", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    ma, mb = (json.loads((tmp_path / d / "untraining_metrics.json").read_text()) for d in ("whole", "resumed"))
    assert [h["step"] for h in mb["convergence"]["history"]] == [4, 8, 12, 16]
    assert ma["convergence"]["history"] == mb["convergence"]["history"]
    assert ma["stop_reason"] == mb["stop_reason"]
