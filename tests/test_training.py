"""Untraining: the objective's sampling, forgetting on real data, DDP with two gloo processes, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_unlearn import UnlearnAdapter
from hf_unlearn.training.objective import (masked_teacher_log_probs, sample_forget_sets, similar_classes,
                                          untraining_loss)
from hf_unlearn.training.untrain import UntrainingArguments, make_scheduler, untrain
from ddp import free_port
from hf_unlearn.modeling import classifier_module, classifier_weight, penultimate_features
from tiny_models import build, pixels

REPO = Path(__file__).resolve().parents[1]


def test_forget_and_retain_sets():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=gen)
    forget = sample_forget_sets(labels, 10, contain=True, max_set_size=3, set_prob=0.5, generator=gen)
    retain = sample_forget_sets(labels, 10, contain=False, max_set_size=3, set_prob=0.5, generator=gen)
    for sets, contains in ((forget, True), (retain, False)):
        assert sets.shape == (500, 3)
        for y, row in zip(labels.tolist(), sets.tolist()):
            members = [c for c in row if c >= 0]
            assert 1 <= len(members) <= 3 and len(set(members)) == len(members)
            assert (y in members) is contains
        sizes = (sets >= 0).sum(1)
        assert (sizes == 1).any() and (sizes > 1).any()  # singles and sets both occur
    only_singles = sample_forget_sets(labels, 10, contain=True, max_set_size=1, set_prob=0.5, generator=gen)
    assert torch.equal(only_singles[:, 0], labels)


def test_retain_sets_drawn_from_the_neighbours():
    """retain_neighbours: retain sets come from the class's nearest classes in the classifier with
    probability neighbour_prob, never contain the class, and probability 0 draws exactly as before."""
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1],
                           [0.0, 0.0, 1.0], [0.1, 0.0, 0.9]])
    neighbours = similar_classes(weight, 1)
    assert neighbours[:, 0].tolist() == [1, 0, 3, 2, 5, 4]  # the pairs the rows were built as
    labels = torch.arange(6).repeat(200)
    always = sample_forget_sets(labels, 6, contain=False, max_set_size=1, set_prob=0.0,
                                generator=torch.Generator().manual_seed(0), neighbours=neighbours, neighbour_prob=1.0)
    assert torch.equal(always[:, 0], neighbours[labels, 0])
    half = sample_forget_sets(labels, 6, contain=False, max_set_size=2, set_prob=0.5,
                              generator=torch.Generator().manual_seed(0), neighbours=neighbours, neighbour_prob=0.5)
    first_is_neighbour = (half[:, 0] == neighbours[labels, 0]).float().mean().item()
    assert 0.5 < first_is_neighbour < 0.75  # half always, the other half 1 in 5 by chance
    assert not (half == labels[:, None]).any()
    off = sample_forget_sets(labels, 6, contain=False, max_set_size=2, set_prob=0.5,
                             generator=torch.Generator().manual_seed(0), neighbours=neighbours, neighbour_prob=0.0)
    plain = sample_forget_sets(labels, 6, contain=False, max_set_size=2, set_prob=0.5,
                               generator=torch.Generator().manual_seed(0))
    assert torch.equal(off, plain)
    with pytest.raises(ValueError, match="neighbour_prob"):
        UntrainingArguments(retain_neighbours=3, neighbour_prob=1.5)


def test_kd_retain_term_matches_the_masked_base():
    """retain_loss='kd': the target is the base's distribution with the pair's set masked out; a student
    equal to it costs nothing, one that still puts mass on a masked class costs more."""
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 5, generator=gen)
    selection = torch.tensor([[1, -1], [0, 2], [4, -1], [3, 1], [2, -1], [0, -1]])
    logp = masked_teacher_log_probs(teacher, selection)
    assert torch.isneginf(logp[0, 1]) and torch.isneginf(logp[1, 0]) and torch.isneginf(logp[1, 2])
    assert torch.allclose(logp.exp().sum(-1), torch.ones(6))
    args = UntrainingArguments(retain_loss="kd")
    forget_logits = torch.randn(3, 5, generator=gen)
    student = teacher.masked_fill(torch.isneginf(logp), -1e4)
    logits = torch.cat([forget_logits, student])
    targets = torch.cat([torch.tensor([1, 0, 4]), torch.tensor([0, 1, 0, 0, 0, 1])])
    loss_equal, _ = untraining_loss(logits, targets, 3, [torch.ones(2)], args, teacher_log_probs=logp[:6])
    loss_leak, _ = untraining_loss(torch.cat([forget_logits, teacher]), targets, 3, [torch.ones(2)], args,
                                   teacher_log_probs=logp[:6])
    forget_only = (1.0 / (torch.nn.functional.cross_entropy(forget_logits, targets[:3], reduction="none")
                          + args.inverse_ce_eps)).mean()
    assert torch.allclose(loss_equal, forget_only, atol=1e-5)  # KL term exactly 0
    assert loss_leak > loss_equal + 1e-3
    with pytest.raises(ValueError, match="teacher_log_probs"):
        untraining_loss(logits, targets, 3, [torch.ones(2)], args)


def test_boundary_forget_term_targets_the_base_nearest_other_class():
    """forget_loss='boundary': a forget pair is pushed towards the base's best class outside its set."""
    base_logits = torch.tensor([[5.0, 4.0, 1.0, 0.0], [0.0, 3.0, 2.5, 2.0]])
    selection = torch.tensor([[0, -1], [1, 2]])  # forget pairs: sets {0} and {1, 2}
    targets = masked_teacher_log_probs(base_logits, selection).argmax(-1)
    assert targets.tolist() == [1, 3]  # the best class outside each set
    args = UntrainingArguments(forget_loss="boundary")
    logits = torch.cat([torch.randn(2, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 4)])
    labels = torch.tensor([0, 1, 2, 3])
    loss, _ = untraining_loss(logits, labels, 2, [torch.ones(1)], args, forget_targets=targets)
    expected = torch.nn.functional.cross_entropy(logits[:2], targets) + torch.nn.functional.cross_entropy(
        logits[2:], labels[2:])
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="forget_targets"):
        untraining_loss(logits, labels, 2, [torch.ones(1)], args)
    with pytest.raises(ValueError, match="Unknown forget_loss"):
        untrain(None, [], UntrainingArguments(forget_loss="negative"))


@pytest.mark.parametrize("name", ["constant", "cosine", "linear"])
def test_transformers_schedule_gives_the_per_step_rates_of_the_former_hand_written_one(name):
    """make_scheduler is transformers' get_scheduler: without warm-up (every shipped config, the default)
    each step's rate equals the formula the loop used before (LambdaLR on ``factor(step)``)."""
    import math

    def former(step, total):  # the hand-written schedule this replaced (warmup_steps=0)
        progress = min(1.0, step / max(1, total))
        return {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1.0 - progress}[name]

    total = 37
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(optimizer, UntrainingArguments(lr_scheduler=name), total, 0)
    for step in range(total):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * former(step, total), rel=1e-12, abs=1e-15), step
        optimizer.step()
        scheduler.step()
    with pytest.raises(ValueError, match="Unknown lr_scheduler"):
        make_scheduler(optimizer, UntrainingArguments(lr_scheduler="step"), total, 0)


def test_warmup_ramps_like_transformers():
    """With warm-up the rate is transformers' ramp ``step / warmup`` (the former hand-written ramp was
    one step ahead, ``(step + 1) / warmup``; no shipped config uses warm-up), then the schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, UntrainingArguments(lr_scheduler="constant", warmup_steps=4), 10, 4)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])


def test_on_step_sees_every_optimiser_step_and_can_stop_the_process_there():
    """on_step(step, accelerator) runs after each optimiser step, after its checkpoint: the hook a test
    (or a user's logger) uses; raising from it ends the round right there."""
    from tiny_models import build

    pixels, labels = _indexed_batches(40)
    loader = torch.utils.data.DataLoader([{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels)],
                                         batch_size=8)
    seen = []
    untrain(UnlearnAdapter.attach(build("resnet")), loader, UntrainingArguments(epochs=2, progress=False),
            on_step=lambda step, accelerator: seen.append(step))
    assert seen == list(range(1, 11))

    class Stop(Exception):
        pass

    def stop_at_3(step, accelerator):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        untrain(UnlearnAdapter.attach(build("resnet")), loader, UntrainingArguments(epochs=2, progress=False),
                on_step=stop_at_3)


def test_unknown_objective_is_a_usage_error_before_anything_is_written(tmp_path, capsys):
    from hf_unlearn.commands.train import main

    out = tmp_path / "wf"
    with pytest.raises(SystemExit):
        main(["--base_model", str(tmp_path), "--output_dir", str(out), "--forget_loss", "negative"])
    assert "Unknown forget_loss 'negative'" in capsys.readouterr().err
    assert not out.exists()


def test_untraining_forgets_every_class_on_digits(digits_base, tmp_path):
    """The recipe's job end to end on real data: every row forgets its class, the rest survives."""
    from hf_unlearn.training.job import run_untraining, untraining_job_arguments

    base_dir, base_metrics = digits_base
    assert base_metrics["test_accuracy"] > 0.88
    metrics = run_untraining(*untraining_job_arguments(
        base_model=str(base_dir), dataset="digits", output_dir=str(tmp_path / "wf"), epochs=5.0, batch_size=64,
        no_progress=True))
    ev = metrics["accuracy"]  # the evaluation suite's report format
    assert ev["mean_forget_acc"] <= 10.0, ev
    assert ev["mean_retain_drop"] <= 4.0, ev
    # every row takes its own class far below the base model's accuracy on it (~90%)
    assert max(ev["forget_acc_per_class"]) <= 50.0, ev
    # saved as safetensors with the resolved config next to it, and loads back
    files = {p.name for p in (tmp_path / "wf").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "untraining_config.yaml",
            "untraining_metrics.json", "preprocessor_config.json"} <= files
    adapter = UnlearnAdapter.from_pretrained(tmp_path / "wf")
    assert adapter.num_classes == 10


# ------------------------------------------------------------------------- two processes


def _indexed_batches(n):
    """n tiny 3x8x8 'images' whose first pixel is their index, labels cycling over 4 classes."""
    pixels = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    labels = torch.arange(n) % 4
    return pixels, labels


def _ddp_worker(out_dir, streaming, n):
    torch.set_num_threads(1)  # 2 ranks fill the 2 cores
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from tiny_models import build

    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(even_batches=False,
                                                                                  use_seedable_sampler=True))
    pixels, labels = _indexed_batches(n)
    if streaming:
        import datasets

        ds = datasets.Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()})
        ds = ds.to_iterable_dataset(num_shards=1).with_format("torch")
        loader = torch.utils.data.DataLoader(ds, batch_size=8)
        steps = int(np.ceil(n / (8 * accelerator.num_processes)))
    else:
        ds = [{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels)]
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        steps = None
    adapter = UnlearnAdapter.attach(build("resnet"))
    seen = []
    untrain(adapter, loader, UntrainingArguments(epochs=2, learning_rate=0.05, progress=False, seed=3),
            accelerator=accelerator, steps_per_epoch=steps,
            on_batch=lambda batch, epoch, acc: seen.extend((epoch, int(i)) for i in batch["pixel_values"][:, 0, 0, 0]))
    filters = {n: p.detach().clone() for n, p in accelerator.unwrap_model(adapter.model).named_parameters()
               if "weight_filter_theta" in n}
    torch.save({"filters": filters, "seen": seen}, Path(out_dir) / f"rank{accelerator.process_index}.pt")


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_two_gloo_processes_share_filters_and_see_each_example_once(tmp_path, streaming):
    from ddp import launch_two_ranks

    n = 101  # uneven on purpose: 101 examples, batches of 8, two ranks
    launch_two_ranks(_ddp_worker, str(tmp_path), streaming, n)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, value in ranks[0]["filters"].items():
        assert torch.equal(value, ranks[1]["filters"][name]), name
    assert any(not torch.allclose(v, torch.full_like(v, 3.0)) for v in ranks[0]["filters"].values()), "nothing trained"
    for epoch in (0, 1):
        per_rank = [[i for e, i in r["seen"] if e == epoch] for r in ranks]
        assert per_rank[0] and per_rank[1], "a rank got no data"
        everything = sorted(per_rank[0] + per_rank[1])
        assert everything == list(range(n)), f"epoch {epoch}: examples lost or repeated"


def _launch(args, env, processes=2, script=(str(REPO / "recipes" / "train.py"),)):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), *script, "--cpu", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _filters(folder):
    from safetensors.torch import load_file

    return load_file(Path(folder) / "adapter_model.safetensors")


@pytest.mark.slow  # end to end: runs in CI (the whole suite), not in the fast subset
def test_killed_two_process_run_resumes_to_the_same_filters(digits_base, tmp_path):
    base_dir, _ = digits_base
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    common = ["--base_model", str(base_dir), "--dataset", "digits", "--max_train_samples", "512",
              "--batch_size", "32", "--epochs", "2", "--eval_split", "", "--no_progress", "--seed", "5"]
    whole = _launch(common + ["--output_dir", str(tmp_path / "whole")], env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # 512 examples / (32 x 2 ranks) = 8 steps per epoch, 16 in all: die at 11, after the checkpoint at 10
    killed = _launch(common + ["--output_dir", str(tmp_path / "resumed"), "--checkpoint_every", "5"], env,
                     script=(str(REPO / "tests" / "crash_after_step.py"), "11"))
    assert killed.returncode != 0
    assert not (tmp_path / "resumed" / "adapter_model.safetensors").exists()
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-10").is_dir()
    resumed = _launch(common + ["--output_dir", str(tmp_path / "resumed"), "--checkpoint_every", "5",
                                "--resume", "latest"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout + resumed.stderr
    a, b = _filters(tmp_path / "whole"), _filters(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    metrics = json.loads((tmp_path / "resumed" / "untraining_metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["steps"] == 16


# ------------------------------------------------------------------------- feature-level forget term


def test_nearest_centroid_targets_and_feature_term_known_answer():
    """feature_loss='centroid': a forget pair's target is the base's batch centroid of its nearest other
    class; features already there cost 0, features orthogonal to it cost 1, pairs with no centroid skip."""
    from hf_unlearn.training.objective import feature_forget_loss, nearest_centroid_targets

    base = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 4.0], [3.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 2])
    targets, valid = nearest_centroid_targets(base, labels, torch.tensor([1, 0, 3, 1]))
    assert targets[0].tolist() == [0.0, 3.0] and targets[1].tolist() == [1.0, 0.0]
    assert valid.tolist() == [True, True, False, True]  # no sample of class 3 in the batch
    on_target = feature_forget_loss(targets * 2.0, targets, valid)  # cosine ignores the scale
    orthogonal = feature_forget_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [1.0, 0.0]]), targets, valid)
    assert on_target.item() == pytest.approx(0.0, abs=1e-6)
    assert orthogonal.item() == pytest.approx(1.0, abs=1e-6)
    assert feature_forget_loss(targets, targets, torch.zeros(4, dtype=torch.bool)).item() == 0.0

    args = UntrainingArguments(feature_loss="centroid", lambda_feature=2.0)
    logits, y = torch.zeros(8, 4), torch.tensor([0, 1, 1, 2, 1, 0, 0, 1])
    plain, _ = untraining_loss(logits, y, 4, [torch.ones(1)], UntrainingArguments())
    loss, parts = untraining_loss(logits, y, 4, [torch.ones(1)], args, forget_features=torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [1.0, 0.0]]), feature_targets=targets, feature_valid=valid)
    assert torch.allclose(loss, plain + 2.0 * orthogonal) and "feature" in parts
    with pytest.raises(ValueError, match="feature_loss='centroid' needs"):
        untraining_loss(logits, y, 4, [torch.ones(1)], args)
    with pytest.raises(ValueError, match="Unknown feature_loss"):
        UntrainingArguments(feature_loss="collapse")
    with pytest.raises(ValueError, match="lambda_feature"):
        UntrainingArguments(feature_loss="centroid", lambda_feature=-1.0)


def test_prototype_term_wants_the_forget_feature_nearer_the_target_than_its_own_class():
    """feature_loss='prototype': CE over cosine similarities to the batch centroids, label = the nearest
    other class; a feature on its own class's centroid costs much more than one on the target's."""
    from hf_unlearn.training.objective import batch_centroids, prototype_forget_loss

    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    centroids, present = batch_centroids(base, torch.tensor([0, 1, 1]), 4)
    assert present.tolist() == [True, True, False, False] and centroids[1].tolist() == [0.0, 0.5, 0.5]
    target = torch.tensor([1])  # a sample of class 0 should look like class 1
    on_own = prototype_forget_loss(torch.tensor([[1.0, 0.0, 0.0]]), centroids, present, target, 0.1)
    on_target = prototype_forget_loss(torch.tensor([[0.0, 1.0, 1.0]]), centroids, present, target, 0.1)
    assert on_target.item() < 1e-3 and on_own.item() > 5.0
    # no centroid for the target class in the batch: skipped
    assert prototype_forget_loss(base[:1], centroids, present, torch.tensor([3]), 0.1).item() == 0.0
    args = UntrainingArguments(feature_loss="prototype")
    with pytest.raises(ValueError, match="feature_loss='prototype' needs"):
        untraining_loss(torch.zeros(4, 4), torch.tensor([0, 1, 1, 2]), 2, [torch.ones(1)], args)
    with pytest.raises(ValueError, match="feature_temperature"):
        UntrainingArguments(feature_loss="prototype", feature_temperature=0.0)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_feature_term_trains_through_the_loop_and_moves_forget_features(kind):
    """The loop feeds the term: with it the filtered forget features move towards the base centroids
    (the measured distance falls), and the summary logs it."""
    from tiny_models import build

    from hf_unlearn.modeling import penultimate_features
    from hf_unlearn.training.objective import feature_forget_loss, nearest_centroid_targets

    torch.manual_seed(0)
    pixels, labels = torch.randn(64, 3, 8, 8), torch.arange(64) % 4
    loader = torch.utils.data.DataLoader([{"pixel_values": p, "labels": y} for p, y in zip(pixels, labels)],
                                         batch_size=64)
    adapter = UnlearnAdapter.attach(build(kind))

    def distance():
        base = penultimate_features(adapter, pixels)
        logits = adapter.model(pixel_values=pixels).logits.detach()
        nearest = masked_teacher_log_probs(logits, labels[:, None]).argmax(-1)
        t, ok = nearest_centroid_targets(base, labels, nearest)
        return feature_forget_loss(penultimate_features(adapter, pixels, forget=labels[:, None]), t, ok).item()

    before = distance()
    summary = untrain(adapter, loader, UntrainingArguments(
        max_steps=15, learning_rate=0.2, feature_loss="centroid", lambda_feature=5.0, set_prob=0.0,
        max_set_size=1, lambda_forget=0.0, log_every=5, progress=False))
    assert "feature" in summary["history"][-1]
    after = distance()
    assert before > 0 and after < 0.7 * before, (before, after)


def test_the_written_recipe_reproduces_the_options_through_config(tmp_path):
    """`hf-unlearn train --config untraining_config.yaml` (the reproduce command on every card) parses
    back into exactly the options the job ran with."""
    from hf_unlearn.commands.train import parse_train_arguments
    from hf_unlearn.training.job import job_options, untraining_job_arguments, write_recipe

    args = untraining_job_arguments(base_model="runs/base", output_dir="runs/wf", dataset="digits", epochs=2.0,
                                    eval_set_sizes=[2, 3], target_modules=["conv"], balance_forget=False,
                                    eval_split="", no_progress=True, forget_loss="boundary")
    write_recipe(job_options(*args), tmp_path)
    assert parse_train_arguments(["--config", str(tmp_path / "untraining_config.yaml")]) == args
    with pytest.raises(ValueError, match=r"unknown options \['learning'\]"):
        untraining_job_arguments(base_model="b", output_dir="o", learning=0.1)


@pytest.mark.parametrize("kind", ["vit", "convnext", "resnet"])
def test_classifier_weight_is_the_heads_linear_map(kind):
    """The neighbours come from the classifier's weight: features @ W.T + b gives the model's logits,
    on a plain model and on the adapter's wrapped one."""
    model = build(kind, seed=0).eval()
    x = pixels(3)
    for target in (model, UnlearnAdapter.attach(build(kind, seed=0)).model):
        feats, logits = penultimate_features(target, x, return_logits=True)
        head = [m for m in classifier_module(target).modules() if isinstance(m, torch.nn.Linear)][-1]
        weight = classifier_weight(target)
        assert weight.shape == (logits.shape[1], feats.shape[1])
        assert torch.allclose(feats @ weight.T + head.bias, logits, atol=1e-5)
