"""Forget sets of several classes: random sets per size, evaluated with rows multiplied."""

import pytest
import torch

from hf_unlearn import UnlearnAdapter
from hf_unlearn.evaluation.sets import evaluate_set_sizes, format_set_sizes, random_sets


def test_random_sets_are_distinct_seeded_and_checked():
    sets = random_sets(100, 5, 20, seed=0)
    assert len(sets) == 20 and len({tuple(s) for s in sets}) == 20
    assert all(len(set(s)) == 5 and s == sorted(s) and 0 <= min(s) and max(s) < 100 for s in sets)
    assert sets == random_sets(100, 5, 20, seed=0) and sets != random_sets(100, 5, 20, seed=1)
    assert len(random_sets(4, 3, 20)) == 4  # only C(4, 3) = 4 sets exist
    with pytest.raises(ValueError, match="A forget set of 11 classes is impossible with 10 classes"):
        random_sets(10, 11, 5)


def test_set_sizes_match_the_per_set_evaluation():
    from tiny_models import build

    from hf_unlearn.evaluation.predict import evaluate_sets

    torch.manual_seed(0)
    adapter = UnlearnAdapter.attach(build("resnet"))
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if "weight_filter_theta" in name:
                p.copy_(torch.randn_like(p) * 3)
    pixels = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    loader = [{"pixel_values": pixels[i:i + 32], "labels": torch.arange(32) % 4} for i in (0, 32)]
    out = evaluate_set_sizes(adapter, loader, [3, 2], sets_per_size=3, seed=0, progress=False)
    assert out["set_sizes"] == [2, 3] and set(out["by_size"]) == {"2", "3"}
    direct = evaluate_sets(adapter, loader, random_sets(4, 3, 3, seed=0), progress=False)
    assert out["sets"]["3"] == direct
    s = out["by_size"]["3"]
    assert s["mean_retain_drop"] == pytest.approx(sum(r["retain_drop"] for r in direct) / 3)
    assert s["worst_forget_acc"] == max(r["forget_acc"] for r in direct)
    assert "| 3 | 3 |" in format_set_sizes(out)


def test_job_reports_set_sizes_and_refuses_a_set_too_large(digits_base, tmp_path):
    from hf_unlearn.training.job import run_untraining, untraining_job_arguments

    base_dir, _ = digits_base
    common = dict(base_model=str(base_dir), dataset="digits", batch_size=64, no_progress=True, max_steps=4,
                  eval_pairs=0, num_threads=1)
    with pytest.raises(ValueError, match="impossible with 10 classes"):
        run_untraining(*untraining_job_arguments(**common, output_dir=str(tmp_path / "bad"), eval_set_sizes=[3, 11]))
    assert not (tmp_path / "bad" / "adapter_model.safetensors").exists()
    metrics = run_untraining(*untraining_job_arguments(**common, output_dir=str(tmp_path / "ok"), eval_set_sizes=[2, 5],
                               eval_sets_per_size=3))
    by_size = metrics["set_sizes"]["by_size"]
    assert set(by_size) == {"2", "5"} and by_size["5"]["n_sets"] == 3
    # the evaluation suite's set-size mode on the saved adapter: sets.json/sets.md, no full report
    from hf_unlearn.commands.evaluate import main

    out = tmp_path / "eval"
    result = main(["--adapter", str(tmp_path / "ok"), "--dataset", "digits", "--set_sizes", "3", "--sets_per_size",
                   "2", "--sets_only", "--no_progress", "--output_dir", str(out)])
    assert result["set_sizes"]["by_size"]["3"]["n_sets"] == 2
    assert (out / "sets.json").is_file() and "| 3 | 2 |" in (out / "sets.md").read_text()
    assert not (out / "report.json").exists()
