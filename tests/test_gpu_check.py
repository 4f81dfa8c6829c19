"""The prepared GPU check (recipes/gpu_check.py) at smoke size on CPU, and the mixed-precision paths a
CPU can run: bf16 autocast untraining steps, the adapter's forward under bf16, helpers of
hf_unlearn.benchmark (timing, models, images)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_unlearn import UnlearnAdapter
from hf_unlearn.benchmark.gpu import check as gpu_check
from hf_unlearn.benchmark.gpu.settings import SMOKE
from hf_unlearn.benchmark.images import image_stream, read_fashion_mnist
from hf_unlearn.benchmark.models import model_builders
from hf_unlearn.benchmark.timing import PeakMemory, StepTimer, fresh_accelerator, time_forward, time_interleaved
from hf_unlearn.data.tensors import TensorDictDataset, collate_batches
from hf_unlearn.training.untrain import UntrainingArguments, untrain
from hf_unlearn.tuners.weight_filter import WeightFilterLayer
from hf_unlearn.tuners.weight_filter.selection import selection_on
import tiny_models

REPO = Path(__file__).resolve().parents[1]
TOLERANCE_BF16 = 0.02  # max |bf16 - fp32| / max |fp32 logit|; measured 0.3-0.9% on the tiny models


@pytest.fixture
def clean_accelerate_state():
    """accelerate keeps one state per process: start and leave this test without one."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# --------------------------------------------------------------------------------- the script itself


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_on_cpu(tmp_path):
    """The same script as on the GPU, at smoke size, without `datasets`/`evaluate` (as on the lent machine)."""
    blocked = tmp_path / "blocked"
    for name in ("datasets", "evaluate"):  # the GPU machine has neither: importing them must not be needed
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text("raise ImportError('not installed on the GPU machine')\n")
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--smoke", "--cpu", "--num_threads", "1",
                           "--output_dir", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["versions"]["datasets"] is None  # the block worked: the run did not need it

    assert report["precisions"]["bf16"]["native_amp"] is True  # bf16 autocast really ran on CPU
    cases = {(c["model"], c["precision"].split()[0]): c for c in report["steps"]}
    assert len(cases) == 9  # 3 models x (bf16, fp16, fp32)
    for case in cases.values():
        wf, ft = case["untrain"], case["finetune"]
        assert wf["filters_finite"] and wf["losses_finite"] and wf["filters_changed"]
        assert ft["losses_finite"] and ft["params_finite"]
        assert wf["timed_steps"] == ft["timed_steps"] == 2 and case["ratio"] > 0
    assert len(report["inference"]) == 9
    for case in report["inference"]:
        assert [r["batch"] for r in case["rows"]] == [1, 4]
        for row in case["rows"]:
            assert set(row["ratios"]) == {"base", "adapter, nothing selected", "one row per batch", "row per sample",
                                          "exported"}
            assert row["nothing_selected_vs_base_rel"] == 0.0

    rnd = report["round"]
    assert rnd["returncode"] == 0 and rnd["mixed_precision"] == "bf16"  # from `accelerate launch --mixed_precision bf16`
    assert [e["model"] for e in rnd["models"]] == ["vit-b16", "convnext-t", "resnet-50"]
    for entry in rnd["models"]:
        assert "error" not in entry, entry.get("traceback")
        assert entry["filters_finite"] and entry["losses_finite"] and entry["loads_on_cpu"]
        assert entry["loaded_devices"] == ["cpu"] and entry["loaded_vs_trained_max_abs"] == 0.0
        assert entry["logits_fp32_rel"] <= report["settings"]["logit_rtol_fp32"]
        assert entry["logits_amp_rel"] <= report["settings"]["logit_rtol_amp"]

    assert report["checks"] and all(c["passed"] for c in report["checks"])
    step_targets = [t for t in report["targets"] if t["target"].startswith("WF untraining step")]
    assert [t["case"] for t in step_targets] == ["ViT-B/16", "ResNet-50", "ConvNeXt-T"]
    assert all(t["value"] is not None for t in step_targets)
    finite = [t for t in report["targets"] if t["target"].startswith("no NaN")]
    assert len(finite) == 6 and all(t["met"] for t in finite)  # 3 bf16 step cases + 3 round models
    md = (out / "gpu_check.md").read_text()
    for heading in ("## Targets", "## Checks", "## Training steps", "## Inference latency", "## Untraining round"):
        assert heading in md


def test_gpu_check_refuses_unknown_options(tmp_path):
    with pytest.raises(SystemExit, match="unknown values.*fp8"):
        gpu_check.parse(["--precisions", "fp8", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="step_images"):
        gpu_check.parse(["--smoke", "--step_images", "2", "--output_dir", str(tmp_path)])
    args = gpu_check.parse(["--smoke", "--inference_batch_sizes", "1", "2"])
    assert args.inference_batch_sizes == [1, 2] and args.timed_steps == SMOKE["timed_steps"]
    assert not any(tmp_path.iterdir())  # a usage error writes nothing


# --------------------------------------------------------------------------------- mixed precision on CPU


def _loader(num_labels, batch=4, count=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(count, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE, generator=gen)
    labels = torch.randint(0, num_labels, (count,), generator=gen)
    return torch.utils.data.DataLoader(TensorDictDataset(pixels, labels), batch_size=batch, shuffle=True,
                                       collate_fn=collate_batches, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["vit", "convnext", "resnet"])
def test_bf16_untraining_steps_as_launched(kind, monkeypatch, clean_accelerate_state):
    """`accelerate launch --mixed_precision bf16` (its environment variable) with no precision in the
    arguments: the round runs under bf16 autocast (filtered layers compute in bf16), and its
    losses and filters stay finite while the filters learn."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    adapter = UnlearnAdapter.attach(tiny_models.build(kind))
    before = [p.detach().clone() for n, p in adapter.model.named_parameters() if "weight_filter_theta" in n]
    dtypes, precisions = set(), set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
             for m in adapter.model.modules() if isinstance(m, WeightFilterLayer)]
    args = UntrainingArguments(max_steps=4, batch_size=4, log_every=1, progress=False)
    summary = untrain(adapter, _loader(adapter.num_classes), args,
                      on_batch=lambda batch, epoch, acc: precisions.add(acc.mixed_precision))
    for hook in hooks:
        hook.remove()
    assert precisions == {"bf16"}
    assert torch.bfloat16 in dtypes  # autocast reached the filtered layers
    values = [v for record in summary["history"] for k, v in record.items() if k != "step"]
    assert len(summary["history"]) == 4 and all(torch.isfinite(torch.tensor(values)))
    after = [p.detach() for n, p in adapter.model.named_parameters() if "weight_filter_theta" in n]
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_explicit_precision_wins_over_the_launcher(monkeypatch, clean_accelerate_state):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    adapter = UnlearnAdapter.attach(tiny_models.build("resnet"))
    dtypes = set()
    layer = next(m for m in adapter.model.modules() if isinstance(m, WeightFilterLayer))
    layer.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
    untrain(adapter, _loader(adapter.num_classes), UntrainingArguments(max_steps=1, batch_size=4, progress=False,
                                                                        mixed_precision="no"))
    assert dtypes == {torch.float32}
    with pytest.raises(ValueError, match="Unknown mixed_precision 'fp8'"):
        UntrainingArguments(mixed_precision="fp8")


@pytest.mark.parametrize("kind", ["vit", "convnext", "resnet"])
def test_adapter_forward_under_bf16_autocast_matches_fp32(kind, clean_accelerate_state):
    """Every way of selecting rows, and the exported model, under accelerate's bf16 autocast agree with
    fp32 within TOLERANCE_BF16, and are much closer to their own fp32 result than to another selection's."""
    accelerator = fresh_accelerator("bf16", cpu=True)
    adapter = UnlearnAdapter.attach(tiny_models.build(kind))
    tiny_models.randomize_filters(adapter.model)
    adapter.eval()
    x = tiny_models.pixels(6)
    selections = {"none": None, "one row": 2, "per sample": torch.tensor([0, 1, 2, 3, -1, 1]), "set": [0, 2]}
    with torch.no_grad():
        fp32 = {k: adapter(pixel_values=x, forget=v).logits for k, v in selections.items()}
        exported = adapter.export(forget=2)
        with accelerator.autocast():
            bf16 = {k: adapter(pixel_values=x, forget=v).logits for k, v in selections.items()}
            bf16["exported"] = exported(pixel_values=x).logits
    fp32["exported"] = fp32["one row"]
    assert all(v.dtype == torch.bfloat16 for v in bf16.values())  # autocast was on
    for key, value in bf16.items():
        scale = fp32[key].abs().max()
        error = float((value.float() - fp32[key]).abs().max() / scale)
        assert error <= TOLERANCE_BF16, (key, error)
        if key != "none":
            distance = float((fp32[key] - fp32["none"]).abs().max() / scale)
            assert error < 0.5 * distance, (key, error, distance)  # the filters did apply under bf16


# --------------------------------------------------------------------------------- helpers


def test_selection_moves_to_a_device_once_per_selection():
    """All filtered layers share one device copy of a selection (a blocking copy per layer would stall a GPU)."""
    device = torch.device("meta")
    selection = torch.tensor([[1, -1], [2, 3]])
    first = selection_on(selection, device)
    assert first.device == device and first is not selection
    assert selection_on(selection, device) is first  # the next layer reuses it
    assert selection_on(selection, torch.device("cpu")) is selection  # already there: no copy
    selection[0, 0] = 4  # changed in place: copied again
    assert selection_on(selection, device) is not first
    other = torch.tensor([[1, -1], [2, 3]])
    assert selection_on(other, device) is not first


def test_timers_and_memory_on_cpu():
    timer = StepTimer("cpu")
    with pytest.raises(ValueError, match="no step"):
        timer.step_seconds()
    for _ in range(5):
        timer.mark()
    assert len(timer.step_seconds(skip=2)) == 2 and all(s >= 0 for s in timer.step_seconds())
    calls = {"a": 0, "b": 0}

    def count(name):
        calls[name] += 1

    times = time_interleaved({"a": lambda: count("a"), "b": lambda: count("b")}, "cpu", repeats=3, warmup=2)
    assert calls == {"a": 5, "b": 5}
    assert set(times) == {"a", "b"} and times["a"]["calls"] == 3 and times["a"]["device_median_ms"] is None
    with PeakMemory("cpu") as mem:
        torch.zeros(10)
    assert mem.to_dict() == {"peak_mb": None, "added_mb": None}  # no GPU memory to report on CPU
    variants = {"a": lambda x: count("a"), "b": lambda x: count("b")}
    latency = time_forward(variants, torch.zeros(1), repeats=2, warmup=1)
    assert calls == {"a": 8, "b": 8} and set(latency) == {"a", "b"} and all(v >= 0 for v in latency.values())


def test_real_size_configs_are_the_published_models():
    """Parameter counts of google/vit-base-patch16-224, facebook/convnext-tiny-224 and microsoft/resnet-50
    (1000 classes), built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in build().parameters())
                  for name, build in model_builders("full", 1000).items()}
    assert counts == {"vit-b16": 86_567_656, "convnext-t": 28_589_128, "resnet-50": 25_557_032}
    with pytest.raises(ValueError, match="size must be one of"):
        model_builders("huge")
    smoke = model_builders("smoke", 100)
    assert set(smoke) == set(counts)
    for name, build in smoke.items():  # the smoke stand-ins get filters in the same kinds of layers
        adapter = UnlearnAdapter.attach(build())
        assert adapter.num_classes == 100 and adapter.filter_layers()


def test_image_stream_without_datasets_reads_the_idx_files(monkeypatch, tmp_path):
    """With a 100-class built-in declared but `datasets` missing (the GPU machine), the stream falls back
    to Fashion-MNIST's IDX files and says why."""
    import hf_unlearn.data.builtin as hf_data

    monkeypatch.setattr(hf_data, "BUILTIN_DATASETS", tuple(hf_data.BUILTIN_DATASETS) + ("fashion_mnist_100",))
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    pixels, labels, info = image_stream(6, 16, seed=1)
    assert pixels.shape == (6, 3, 16, 16) and pixels.dtype == torch.float32
    assert -1.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    assert labels.dtype == torch.long and set(labels.tolist()) <= set(range(10))
    assert info["source"].startswith("fashion_mnist (IDX") and info["num_classes"] == 10
    assert "fashion_mnist_100" in info["reason"] and "could not be loaded" in info["reason"]
    again, _, _ = image_stream(6, 16, seed=1)
    assert torch.equal(again, pixels)  # seeded
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        read_fashion_mnist(str(tmp_path))
