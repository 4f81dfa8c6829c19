"""One prepared check of the CUDA path: mixed precision, real-size step cost and latency, a launched round.

    bash scripts/gpu_check.sh                          # full size on a GPU (about 3-5 min on an H200)
    bash scripts/gpu_check.sh --output_dir $OUT        # the report somewhere else
    bash scripts/gpu_check.sh --smoke --cpu            # tiny models on CPU, ~1 min: what the test suite runs

(`scripts/gpu_check.sh` sets the environment and calls this file; its header says how to run it on a
lent GPU machine.) Offline; needs torch, transformers, peft and accelerate, not `datasets`/`evaluate`.
It writes ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` into ``--output_dir`` (rewritten
after every case, so a run stopped early still leaves what it measured) and nothing else there.

1. Models: ViT-B/16 (224), ConvNeXt-T and ResNet-50 from transformers configs, random weights, a
   100-class head; data: the built-in 100-class Fashion-MNIST composites when ``hf_unlearn.data.builtin`` has
   them and they load here, else Fashion-MNIST's training images resized to 224 (IDX files).
2. For each precision (bf16 autocast, fp16 autocast with accelerate's grad scaler, fp32), each model:
   - a weight-filter untraining step (``hf_unlearn.training.untrain``'s own loop) against a plain
     fine-tuning step (all weights, AdamW) at the same input batch: step times, images/s, the ratio,
     peak memory, and finite filters and losses;
   - inference latency of the base model, the adapter with nothing selected, one row for the batch,
     a row per sample, and the exported model, at batch 1, 8 and 64, as ratios to the base.
3. A short untraining round per model in a separate process started by ``accelerate launch
   --mixed_precision bf16``: filters and losses finite, the saved adapter loads on CPU, and the
   exported model's logits on CPU and on the device agree within a stated tolerance.
4. GPU name, numeric settings, versions; peak GPU memory per case.

All device placement, autocast and grad scaling go through accelerate (``Accelerator(mixed_precision=...)``,
``accelerator.autocast()``, ``accelerator.backward``, prepared optimizers); timings synchronise the
device properly (CUDA events for training steps, a synchronised wall clock per inference call);
every ratio is measured within this one run.
"""

from __future__ import annotations

import copy
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
MODELS = ("vit-b16", "convnext-t", "resnet-50")
MODEL_TITLES = {"vit-b16": "ViT-B/16", "convnext-t": "ConvNeXt-T", "resnet-50": "ResNet-50"}
PRECISIONS = ("bf16", "fp16", "no")  # bf16 first: the step targets are stated for it
VARIANTS = ("base", "adapter, nothing selected", "one row per batch", "row per sample", "exported")
FORGET_CLASS = 3
NUM_LABELS = 100


@dataclass
class GpuCheckArguments:
    """Options of the GPU check; the ones left unset take the full-size or the ``--smoke`` value."""

    output_dir: str = field(default="runs/gpu_check", metadata={"help": "where gpu_check.{json,md,log} go"})
    smoke: bool = field(default=False, metadata={"help": "tiny models, few steps, tiny data (CPU test size)"})
    cpu: bool = field(default=False, metadata={"help": "run on CPU even if a GPU is there"})
    parts: list[str] = field(default_factory=lambda: ["steps", "inference", "round"],
                             metadata={"help": "any of: steps inference round"})
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS), metadata={"help": "bf16 fp16 no"})
    models: list[str] = field(default_factory=lambda: list(MODELS), metadata={"help": " ".join(MODELS)})
    round_models: list[str] = field(default_factory=lambda: list(MODELS))
    image_size: Optional[int] = field(default=None, metadata={"help": "224 (smoke: 32)"})
    batch_size: Optional[int] = field(default=None, metadata={"help": "training input batch (64; smoke: 8)"})
    warmup_steps: Optional[int] = field(default=None, metadata={"help": "untimed steps per case (10; smoke: 1)"})
    timed_steps: Optional[int] = field(default=None, metadata={"help": "timed steps per case (30; smoke: 2)"})
    inference_batch_sizes: Optional[list[int]] = field(default=None, metadata={"help": "1 8 64 (smoke: 1 4)"})
    inference_warmup: Optional[int] = field(default=None, metadata={"help": "5 (smoke: 1)"})
    inference_repeats: Optional[int] = field(default=None, metadata={"help": "interleaved rounds (30; smoke: 2)"})
    round_steps: Optional[int] = field(default=None, metadata={"help": "untraining steps per model (300; smoke: 4)"})
    round_images: Optional[int] = field(default=None, metadata={"help": "images the round cycles over (1024; smoke: 32)"})
    step_images: Optional[int] = field(default=None, metadata={"help": "images the step timings cycle over (256; smoke: 16)"})
    time_budget_s: Optional[float] = field(default=None, metadata={
        "help": "stop starting new cases after this many seconds (450; smoke: 600); the round keeps round_reserve_s"})
    round_reserve_s: Optional[float] = field(default=None, metadata={"help": "time kept for the round (150; smoke: 120)"})
    logit_rtol_fp32: float = field(default=1e-2, metadata={
        "help": "exported model, device fp32 vs CPU: max |diff| / max |CPU logit| (TF32 convolutions allowed)"})
    logit_rtol_amp: float = field(default=1e-1, metadata={"help": "the same under the launched autocast (reported)"})
    fashion_mnist_dir: Optional[str] = field(default=None, metadata={
        "help": "folder of the IDX .gz files (default: $HF_UNLEARN_FASHION_MNIST_DIR or the Debian package's)"})
    work_dir: Optional[str] = field(default=None, metadata={"help": "scratch folder for saved models (default: temporary, removed)"})
    seed: int = 0
    num_threads: Optional[int] = None
    child: Optional[str] = field(default=None, metadata={"help": "internal: 'round' in the launched process"})
    child_settings: Optional[str] = field(default=None, metadata={"help": "internal"})
    child_result: Optional[str] = field(default=None, metadata={"help": "internal"})


FULL = dict(image_size=224, batch_size=64, warmup_steps=10, timed_steps=30, inference_batch_sizes=[1, 8, 64],
            inference_warmup=5, inference_repeats=30, round_steps=300, round_images=1024, step_images=256,
            time_budget_s=450.0, round_reserve_s=150.0)
SMOKE = dict(image_size=32, batch_size=8, warmup_steps=1, timed_steps=2, inference_batch_sizes=[1, 4],
             inference_warmup=1, inference_repeats=2, round_steps=4, round_images=32, step_images=16,
             time_budget_s=600.0, round_reserve_s=120.0)


def resolve(args: GpuCheckArguments) -> GpuCheckArguments:
    """Fill the unset options from the full-size or smoke defaults and check the rest."""
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [p for p in args.parts if p not in ("steps", "inference", "round")]
    bad += [p for p in args.precisions if p not in PRECISIONS]
    bad += [m for m in list(args.models) + list(args.round_models) if m not in MODELS]
    if bad:
        raise SystemExit(f"gpu_check: unknown values {bad}; parts: steps inference round; precisions: "
                         f"{' '.join(PRECISIONS)}; models: {' '.join(MODELS)}")
    if args.step_images < args.batch_size or args.step_images < max(args.inference_batch_sizes):
        raise SystemExit(f"gpu_check: --step_images ({args.step_images}) must hold a training batch "
                         f"({args.batch_size}) and the largest inference batch ({max(args.inference_batch_sizes)}).")
    if args.round_images < args.batch_size:
        raise SystemExit(f"gpu_check: --round_images ({args.round_images}) must hold a batch ({args.batch_size}).")
    return args


# ------------------------------------------------------------------------------------------- shared pieces


def builders(args):
    from hf_unlearn.benchmarking import real_size_models, smoke_models

    return (smoke_models if args.smoke else real_size_models)(NUM_LABELS)


def build_base(args, name: str):
    import torch

    torch.manual_seed(args.seed)
    return builders(args)[name]()


def default_fashion_mnist_dir(args) -> Optional[str]:
    """--fashion_mnist_dir, else $HF_UNLEARN_FASHION_MNIST_DIR, else a copy carried in .gpu_check_data/."""
    if args.fashion_mnist_dir:
        return args.fashion_mnist_dir
    if os.environ.get("HF_UNLEARN_FASHION_MNIST_DIR"):
        return os.environ["HF_UNLEARN_FASHION_MNIST_DIR"]
    carried = REPO / ".gpu_check_data" / "fashion-mnist"
    return str(carried) if (carried / "train-images-idx3-ubyte.gz").is_file() else None


def load_images(args, count: int):
    from hf_unlearn.benchmarking import image_stream

    return image_stream(count, args.image_size, seed=args.seed, fashion_mnist_dir=default_fashion_mnist_dir(args))


def filters_of(adapter):
    return [p for n, p in adapter.model.named_parameters() if "weight_filter_theta" in n]


def all_finite(tensors) -> bool:
    import torch

    return bool(all(torch.isfinite(t.detach()).all() for t in tensors))


def versions() -> dict:
    import importlib

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "transformers", "peft", "accelerate", "huggingface_hub", "safetensors", "numpy",
                 "hf_unlearn", "datasets", "evaluate"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # not installed (datasets/evaluate on a bare GPU machine): say so
            out[name] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except Exception:
        out["git_commit"] = None
    return out


class Log:
    """Print and append to gpu_check.log (flushed: a run killed at its limit keeps its log)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


# ------------------------------------------------------------------------------------------- part 2a: steps


def _batches(loader):
    while True:  # as many epochs as the steps need
        yield from loader


def finetune_steps(model, dataset, accelerator, args) -> dict:
    """Plain fine-tuning: every weight trainable, train mode, AdamW, cross-entropy; timed per step."""
    import torch
    import torch.nn.functional as F

    from hf_unlearn.benchmarking import DictBatches, PeakMemory, StepTimer

    model.train()
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=DictBatches.collate,
                                         generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    timer, losses, skipped = StepTimer(accelerator.device), [], 0
    batches = _batches(loader)
    with PeakMemory(accelerator.device) as memory:
        for _ in range(args.warmup_steps + args.timed_steps):
            batch = next(batches)
            timer.mark()
            with accelerator.autocast():
                logits = model(pixel_values=batch["pixel_values"]).logits
            loss = F.cross_entropy(logits.float(), batch["labels"])
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            skipped += int(accelerator.optimizer_step_was_skipped)
            losses.append(loss.detach())
        timer.mark()
    seconds = timer.step_seconds(skip=args.warmup_steps)
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "images_per_s": args.batch_size / statistics.median(seconds),
        "timed_steps": len(seconds),
        "losses_finite": all_finite(losses),
        "params_finite": all_finite(accelerator.unwrap_model(model).parameters()),
        "steps_skipped_by_grad_scaler": skipped,
        "memory": memory.to_dict(),
    }


def untraining_steps(model, dataset, accelerator, args) -> dict:
    """The weight-filter untraining step, run by ``hf_unlearn.training.untrain`` itself; timed per step."""
    import torch

    from hf_unlearn import UnlearnAdapter
    from hf_unlearn.benchmarking import DictBatches, PeakMemory, StepTimer
    from hf_unlearn.training.untrain import UntrainingArguments, untrain

    adapter = UnlearnAdapter.attach(model)
    before = [p.detach().clone() for p in filters_of(adapter)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=DictBatches.collate,
                                         generator=torch.Generator().manual_seed(args.seed))
    # The library's defaults (the paper's objective, T = 1 retain row per sample); log_every=1 so that
    # every step's losses are checked (the timer already waits on the device once per step).
    targs = UntrainingArguments(batch_size=args.batch_size, max_steps=args.warmup_steps + args.timed_steps,
                                log_every=1, progress=False, seed=args.seed)
    timer, skipped = StepTimer(accelerator.device), [0]

    def on_batch(batch, epoch, acc):
        if timer.wall:  # the step before this batch's
            skipped[0] += int(acc.optimizer_step_was_skipped)
        timer.mark()

    with PeakMemory(accelerator.device) as memory:
        summary = untrain(adapter, loader, targs, accelerator=accelerator, on_batch=on_batch)
        timer.mark()
    skipped[0] += int(accelerator.optimizer_step_was_skipped)
    seconds = timer.step_seconds(skip=args.warmup_steps)
    history = summary["history"]
    loss_values = [v for record in history for k, v in record.items() if k != "step"]
    after = filters_of(adapter)
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "images_per_s": args.batch_size / statistics.median(seconds),
        "rows_per_step": args.batch_size * (1 + targs.retain_rows),
        "timed_steps": len(seconds),
        "losses_finite": bool(history) and all(math.isfinite(v) for v in loss_values),
        "filters_finite": all_finite(after),
        "filters_changed": any(not torch.equal(a.detach().cpu(), b.cpu()) for a, b in zip(after, before)),
        "last_loss": history[-1]["loss"] if history else None,
        "steps_skipped_by_grad_scaler": skipped[0],
        "memory": memory.to_dict(),
    }


def step_case(name, base, dataset, accelerator, args) -> dict:
    case = {"model": name, "precision": precision_name(accelerator), "batch_size": args.batch_size}
    case["finetune"] = finetune_steps(copy.deepcopy(base), dataset, accelerator, args)
    release(accelerator, args)
    case["untrain"] = untraining_steps(copy.deepcopy(base), dataset, accelerator, args)
    release(accelerator, args)
    case["ratio"] = case["untrain"]["median_ms"] / case["finetune"]["median_ms"]
    return case


def precision_name(accelerator) -> str:
    """fp32 / bf16 / fp16 as it really runs: accelerate leaves fp16 off on CPU (no autocast there)."""
    mp = accelerator.mixed_precision
    if mp == "no":
        return "fp32"
    return mp if accelerator.native_amp else f"{mp} (inactive here: fp32)"


def release(accelerator, args) -> None:
    """Free the last case's models before the next one, so that its peak memory is its own.

    ``free_memory`` drops accelerate's references, collects garbage and empties the device cache.
    At smoke size on CPU the models are tiny and no memory is measured: the collection (a second
    per call on a busy 2-core box) is skipped.
    """
    if accelerator.device.type == "cpu" and args.smoke:
        return
    accelerator.free_memory()


# ------------------------------------------------------------------------------------------- part 2b: latency


def inference_case(name, base, pixels, accelerator, args) -> dict:
    """Latency of the five ways to run a model, per batch size, as ratios to the base model."""
    import torch

    from hf_unlearn import UnlearnAdapter
    from hf_unlearn.benchmarking import PeakMemory, time_interleaved

    device = accelerator.device
    base_model = copy.deepcopy(base).eval().to(device)
    adapter = UnlearnAdapter.attach(copy.deepcopy(base))
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():  # trained-looking filters: a random value per unit and class
        for p in filters_of(adapter):
            p.copy_(torch.empty(p.shape).uniform_(-3, 3, generator=gen))
    adapter.eval().to(device)
    exported = adapter.export(forget=FORGET_CLASS)
    rows = []
    for batch in args.inference_batch_sizes:
        x = pixels[:batch]
        per_sample = torch.arange(batch) % NUM_LABELS
        calls = {
            "base": lambda x=x: base_model(pixel_values=x),
            "adapter, nothing selected": lambda x=x: adapter(pixel_values=x),
            "one row per batch": lambda x=x: adapter(pixel_values=x, forget=FORGET_CLASS),
            "row per sample": lambda x=x, s=per_sample: adapter(pixel_values=x, forget=s),
            "exported": lambda x=x: exported(pixel_values=x),
        }

        def under_precision(fn):
            def run():
                with torch.inference_mode(), accelerator.autocast():
                    return fn()
            return run

        variants = {k: under_precision(fn) for k, fn in calls.items()}
        times = time_interleaved(variants, device, repeats=args.inference_repeats, warmup=args.inference_warmup)
        memory = {}
        for key, fn in variants.items():
            with PeakMemory(device) as mem:
                fn()
            memory[key] = mem.to_dict()
        with torch.inference_mode():
            logits = {k: variants[k]().logits.float() for k in ("base", "adapter, nothing selected",
                                                               "one row per batch", "exported")}
        scale = float(logits["base"].abs().max().clamp_min(1e-12))
        base_ms = times["base"]["median_ms"]
        rows.append({
            "model": name, "precision": precision_name(accelerator), "batch": batch,
            "base_ms": base_ms, "times": times,
            "ratios": {k: v["median_ms"] / base_ms for k, v in times.items()},
            "memory": memory,
            # With nothing selected the adapter runs the base layers themselves: equal to the base.
            "nothing_selected_vs_base_rel": float((logits["adapter, nothing selected"] - logits["base"]).abs().max()) / scale,
            "exported_vs_one_row_rel": float((logits["exported"] - logits["one row per batch"]).abs().max())
            / float(logits["one row per batch"].abs().max().clamp_min(1e-12)),
        })
    return {"model": name, "precision": precision_name(accelerator), "rows": rows,
            "filters_per_class": sum(m.out_features for m in adapter.filter_layers().values()),
            "base_params": sum(p.numel() for p in base.parameters())}


# ------------------------------------------------------------------------------------------- part 3: the round


def round_child(args) -> int:
    """Runs inside ``accelerate launch --mixed_precision bf16``: one short untraining round per model."""
    import torch
    from accelerate.utils import DataLoaderConfiguration

    from hf_unlearn import UnlearnAdapter
    from hf_unlearn.benchmarking import DictBatches, PeakMemory, device_info
    from hf_unlearn.training.untrain import UntrainingArguments, untrain

    from accelerate import Accelerator

    result_path = Path(args.child_result)
    # No mixed_precision here: the launcher's --mixed_precision decides (what a user's job gets).
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(even_batches=False, use_seedable_sampler=True))
    result = {"mixed_precision": accelerator.mixed_precision, "native_amp": bool(accelerator.native_amp),
              "device": device_info(accelerator.device), "models": []}
    pixels, labels, data_info = load_images(args, args.round_images)
    result["data"] = data_info
    work = Path(args.work_dir)
    for name in args.round_models:
        entry = {"model": name, "steps": args.round_steps}
        result["models"].append(entry)
        try:
            base = build_base(args, name)
            base_dir = work / f"base-{name}"
            base.save_pretrained(base_dir)  # safetensors
            adapter = UnlearnAdapter.attach(base)
            loader = torch.utils.data.DataLoader(DictBatches(pixels, labels), batch_size=args.batch_size, shuffle=True,
                                                 collate_fn=DictBatches.collate,
                                                 generator=torch.Generator().manual_seed(args.seed))
            targs = UntrainingArguments(batch_size=args.batch_size, max_steps=args.round_steps,
                                        log_every=max(1, args.round_steps // 30), progress=False, seed=args.seed)
            with PeakMemory(accelerator.device) as memory:
                summary = untrain(adapter, loader, targs, accelerator=accelerator)
            losses = [v for record in summary["history"] for k, v in record.items() if k != "step"]
            theta = [p.detach().float().cpu() for p in filters_of(adapter)]
            alpha = torch.cat([torch.sigmoid(t).flatten() for t in theta])
            entry.update(
                seconds=summary["seconds"], steps=summary["steps"], memory=memory.to_dict(),
                losses_finite=bool(losses) and all(math.isfinite(v) for v in losses),
                first_loss=summary["history"][0]["loss"] if summary["history"] else None,
                last_loss=summary["history"][-1]["loss"] if summary["history"] else None,
                filters_finite=all_finite(theta),
                filters_min=float(alpha.min()), filters_mean=float(alpha.mean()),
            )
            adapter_dir = work / f"adapter-{name}"
            adapter.save_pretrained(adapter_dir)
            release(accelerator, args)

            # A fresh load from the saved files, on CPU, as a user without a GPU would do it.
            loaded = UnlearnAdapter.from_pretrained(adapter_dir, base_model=str(base_dir))
            loaded_theta = [p.detach().float() for p in filters_of(loaded)]
            devices = sorted({p.device.type for p in loaded.model.parameters()})
            entry["loads_on_cpu"] = devices == ["cpu"] and len(loaded_theta) == len(theta)
            entry["loaded_devices"] = devices
            entry["loaded_vs_trained_max_abs"] = max(float((a - b).abs().max()) for a, b in zip(loaded_theta, theta))
            entry["loads_on_cpu"] = entry["loads_on_cpu"] and entry["loaded_vs_trained_max_abs"] == 0.0

            exported = loaded.export(forget=FORGET_CLASS)
            x = pixels[:8]
            with torch.no_grad():
                cpu_logits = exported(pixel_values=x).logits.float()
                on_device = copy.deepcopy(exported).to(accelerator.device)
                device_fp32 = on_device(pixel_values=x.to(accelerator.device)).logits.float().cpu()
                with accelerator.autocast():
                    device_amp = on_device(pixel_values=x.to(accelerator.device)).logits.float().cpu()
            scale = float(cpu_logits.abs().max().clamp_min(1e-12))
            entry.update(
                logits_fp32_rel=float((device_fp32 - cpu_logits).abs().max()) / scale,
                logits_amp_rel=float((device_amp - cpu_logits).abs().max()) / scale,
                argmax_agree_fp32=float((device_fp32.argmax(-1) == cpu_logits.argmax(-1)).float().mean()),
                argmax_agree_amp=float((device_amp.argmax(-1) == cpu_logits.argmax(-1)).float().mean()),
                logit_scale=scale, compared_images=int(x.shape[0]),
            )
            del on_device, exported, loaded, adapter, base
            release(accelerator, args)
        except Exception as err:  # one model's failure must not hide the others' results
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            print(entry["traceback"], file=sys.stderr, flush=True)
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, result_path)
    from hf_unlearn.run_utils import end_distributed

    end_distributed()
    return 0


def launch_round(args, work_dir: Path, cpu: bool, timeout: float, log: Log) -> dict:
    """Start the round under ``accelerate launch --mixed_precision bf16`` and read what it wrote."""
    settings = work_dir / "round-settings.json"
    result = work_dir / "round-result.json"
    child = copy.copy(args)
    child.child, child.work_dir, child.child_result = "round", str(work_dir), str(result)
    settings.write_text(json.dumps(asdict(child)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    if cpu:
        cmd.append("--cpu")
    cmd += [str(Path(__file__).resolve()), "--child", "round", "--child_settings", str(settings)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    log("round: " + " ".join(cmd[1:]))
    start = time.perf_counter()
    with open(log.path, "a") as sink:
        try:
            proc = subprocess.run(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    out = json.loads(result.read_text()) if result.is_file() else {"models": []}
    out.update(command="accelerate launch --num_processes 1 --mixed_precision bf16 "
                       + ("--cpu " if cpu else "") + "recipes/gpu_check.py --child round",
               returncode=returncode, wall_s=time.perf_counter() - start)
    if returncode != 0:
        out["error"] = f"the launched round ended with {returncode} (its output is in gpu_check.log)"
    return out


# ------------------------------------------------------------------------------------------- verdicts


def evaluate(report: dict) -> None:
    """Fill report['checks'] (correctness: pass/fail) and report['targets'] (the issue's: met/missed)."""
    smoke = report["settings"]["smoke"]
    checks, targets = [], []

    def check(name, ok, detail):
        checks.append({"check": name, "passed": bool(ok), "detail": detail})

    for case in report["steps"]:
        wf, ft = case["untrain"], case["finetune"]
        tag = f"{MODEL_TITLES[case['model']]}, {case['precision']}"
        check(f"untraining steps: filters and losses finite ({tag})", wf["filters_finite"] and wf["losses_finite"],
              f"filters finite {wf['filters_finite']}, losses finite {wf['losses_finite']}, "
              f"{wf['steps_skipped_by_grad_scaler']} steps skipped by the grad scaler")
        check(f"untraining steps: filters learn ({tag})", wf["filters_changed"], "filters changed from their start")
        check(f"fine-tuning steps: finite ({tag})", ft["losses_finite"] and ft["params_finite"],
              f"losses finite {ft['losses_finite']}, weights finite {ft['params_finite']}")
    for case in report["inference"]:
        worst = max(r["nothing_selected_vs_base_rel"] for r in case["rows"])
        check(f"adapter with nothing selected = base ({MODEL_TITLES[case['model']]}, {case['precision']})",
              worst <= 1e-4, f"max |diff| / max |logit| = {worst:.2e} (≤ 1e-4)")
    rnd = report.get("round") or {}
    if rnd:
        check("round: launched with --mixed_precision bf16", rnd.get("mixed_precision") == "bf16",
              f"the launched process's accelerator: {rnd.get('mixed_precision')}")
        for entry in rnd.get("models", []):
            t = MODEL_TITLES[entry["model"]]
            if "error" in entry:
                check(f"round: {t}", False, entry["error"])
                continue
            check(f"round: filters and losses finite ({t}, {entry['steps']} steps)",
                  entry["filters_finite"] and entry["losses_finite"],
                  f"filters finite {entry['filters_finite']}, losses finite {entry['losses_finite']}")
            check(f"round: saved adapter loads on CPU ({t})", entry["loads_on_cpu"],
                  f"parameters on {entry['loaded_devices']}, max |loaded - trained| = {entry['loaded_vs_trained_max_abs']}")
            tol = report["settings"]["logit_rtol_fp32"]
            check(f"round: exported logits, device fp32 vs CPU ({t})", entry["logits_fp32_rel"] <= tol,
                  f"max |diff| / max |logit| = {entry['logits_fp32_rel']:.2e} (≤ {tol:g}); argmax agrees on "
                  f"{entry['argmax_agree_fp32']:.0%}")
        if rnd.get("error"):
            check("round: the launched process", False, rnd["error"])
    for part, info in report["parts"].items():
        if info.get("status") == "error":
            check(f"part '{part}' ran", False, info.get("error", ""))

    def target(name, case, value, limit, unit="x"):
        met = None if value is None else value <= limit
        targets.append({"target": name, "case": case, "value": value, "limit": limit, "met": met, "unit": unit})

    steps = {(c["model"], c["precision"]): c for c in report["steps"]}
    for model, limit in (("vit-b16", 1.0), ("resnet-50", 0.6), ("convnext-t", 0.6)):
        c = steps.get((model, "bf16"))
        target(f"WF untraining step ≤ {limit:g}x a fine-tuning step (bf16)", MODEL_TITLES[model],
               c["ratio"] if c else None, limit)
    batches = report["settings"]["inference_batch_sizes"]
    big = 64 if 64 in batches else max(batches)
    for case in report["inference"]:
        row = next((r for r in case["rows"] if r["batch"] == big), None)
        tag = f"{MODEL_TITLES[case['model']]}, {case['precision']}, batch {big}"
        target(f"row per sample ≤ 1.10x base latency at batch {big}", tag,
               row["ratios"]["row per sample"] if row else None, 1.10)
        target(f"exported ≤ 1.02x base latency at batch {big}", tag, row["ratios"]["exported"] if row else None, 1.02)
    finite = [(f"untraining steps, {MODEL_TITLES[c['model']]}, {c['precision']}",
               c["untrain"]["filters_finite"] and c["untrain"]["losses_finite"])
              for c in report["steps"] if c["precision"] in ("bf16", "fp16")]
    finite += [(f"round, {MODEL_TITLES[e['model']]}, {rnd.get('mixed_precision')}",
                e.get("filters_finite", False) and e.get("losses_finite", False)) for e in rnd.get("models", [])]
    for case, ok in finite:
        targets.append({"target": "no NaN/Inf in filters or losses under bf16 or fp16", "case": case,
                        "value": None, "limit": None, "met": ok, "unit": ""})
    if smoke:
        for t in targets:
            t["note"] = "smoke size: not the targets' conditions"
    report["checks"], report["targets"] = checks, targets


# ------------------------------------------------------------------------------------------- the report


def _fmt(v, spec=".2f", none="–"):
    return none if v is None else format(v, spec)


def _mb(m):
    return _fmt((m or {}).get("peak_mb"), ",.0f")


def markdown(report: dict) -> str:
    dev = report.get("device") or {}
    s = report["settings"]
    v = report["versions"]
    lines = [
        f"# GPU check ({'SMOKE: tiny models, numbers mean nothing' if s['smoke'] else 'full size'})",
        "",
        f"- device: **{dev.get('name')}** ({dev.get('device')}, {dev.get('total_memory_gb')} GiB, compute capability "
        f"{dev.get('capability')}, CUDA {dev.get('cuda')}, cuDNN {dev.get('cudnn')}); TF32 matmul "
        f"{dev.get('cuda_matmul_allow_tf32')}, TF32 cuDNN {dev.get('cudnn_allow_tf32')}, {dev.get('torch_threads')} CPU threads",
        f"- versions: torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}, accelerate "
        f"{v.get('accelerate')}, huggingface_hub {v.get('huggingface_hub')}, hf_unlearn {v.get('hf_unlearn')} "
        f"(commit {v.get('git_commit')}), Python {v.get('python')}; datasets {v.get('datasets')}",
        f"- data: {(report.get('data') or {}).get('source')} — {(report.get('data') or {}).get('reason')}",
        "- precisions (accelerate): " + "; ".join(
            f"{k}: mixed_precision={p['accelerator_mixed_precision']}, autocast {'on' if p['native_amp'] else 'OFF'}, "
            f"grad scaler {'yes' if p['grad_scaler'] else 'no'}" for k, p in report.get("precisions", {}).items()),
        f"- command: `{report['command']}`; started {report['started_utc']}, took {_fmt(report.get('wall_s'), '.0f')} s",
        f"- result: **{report.get('verdict')}**",
        "",
        "## Targets (issue 14; ratios measured within this run)",
        "",
        "| target | case | measured | met |",
        "|---|---|---|---|",
    ]
    for t in report["targets"]:
        value = "" if t["value"] is None and t["unit"] == "" else _fmt(t["value"], ".3f") + t["unit"]
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['case']} | {value} | {met}{' (' + t['note'] + ')' if t.get('note') else ''} |")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    for c in report["checks"]:
        lines.append(f"| {c['check']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |")
    lines += [
        "", f"## Training steps (input batch {s['batch_size']}, median of {s['timed_steps']} steps after "
        f"{s['warmup_steps']} warm-up)", "",
        "WF = one step of `hf_unlearn.training.untrain` (B forget rows + B retain rows in one forward, gradients "
        "to the filters only, Adam); FT = plain fine-tuning (all weights, train mode, AdamW). Images/s count "
        "input images. On CUDA a step is the interval between CUDA events recorded at the start of consecutive "
        "steps. Peak memory: `torch.cuda.max_memory_allocated`, reset before each case.", "",
        "| model | precision | FT ms | FT img/s | WF ms | WF img/s | WF / FT | FT peak MB | WF peak MB | grad-scaler skips (WF) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["steps"]:
        ft, wf = c["finetune"], c["untrain"]
        lines.append(f"| {MODEL_TITLES[c['model']]} | {c['precision']} | {ft['median_ms']:.1f} | {ft['images_per_s']:,.0f} | "
                     f"{wf['median_ms']:.1f} | {wf['images_per_s']:,.0f} | **{c['ratio']:.3f}x** | {_mb(ft['memory'])} | "
                     f"{_mb(wf['memory'])} | {wf['steps_skipped_by_grad_scaler']} |")
    lines += [
        "", f"## Inference latency (median of {s['inference_repeats']} interleaved rounds after {s['inference_warmup']} "
        "warm-up; device synchronised around every call; ratios to the base model)", "",
        "| model | precision | batch | base ms | nothing selected | one row/batch | row per sample | exported | peak MB (base / per sample) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in report["inference"]:
        for r in case["rows"]:
            q = r["ratios"]
            lines.append(f"| {MODEL_TITLES[r['model']]} | {r['precision']} | {r['batch']} | {r['base_ms']:.2f} | "
                         f"{q['adapter, nothing selected']:.3f}x | {q['one row per batch']:.3f}x | "
                         f"{q['row per sample']:.3f}x | {q['exported']:.3f}x | {_mb(r['memory']['base'])} / "
                         f"{_mb(r['memory']['row per sample'])} |")
    rnd = report.get("round")
    if rnd:
        lines += [
            "", f"## Untraining round under `{rnd.get('command')}`", "",
            f"Accelerator mixed precision in the launched process: **{rnd.get('mixed_precision')}**; "
            f"{s['round_steps']} steps at batch {s['batch_size']} per model; the exported model's logits compared on "
            f"{min(8, s['round_images'])} images "
            f"(tolerance: fp32 {s['logit_rtol_fp32']:g}, autocast {s['logit_rtol_amp']:g}, relative to max |CPU logit|). "
            "Random weights: ConvNeXt's layer scale starts at 1e-6, so its blocks, and their filters, barely act "
            "before training; the round checks numerics, not forgetting.", "",
            "| model | steps | s | loss first → last | filters min / mean | peak MB | loads on CPU | fp32 vs CPU | autocast vs CPU | argmax agree (fp32 / autocast) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in rnd.get("models", []):
            if "error" in e:
                lines.append(f"| {MODEL_TITLES[e['model']]} | error: {e['error']} |||||||||")
                continue
            lines.append(
                f"| {MODEL_TITLES[e['model']]} | {e['steps']} | {e['seconds']:.1f} | {_fmt(e['first_loss'], '.3f')} → "
                f"{_fmt(e['last_loss'], '.3f')} | {e['filters_min']:.3f} / {e['filters_mean']:.3f} | {_mb(e['memory'])} | "
                f"{'yes' if e['loads_on_cpu'] else 'NO'} | {e['logits_fp32_rel']:.1e} | {e['logits_amp_rel']:.1e} | "
                f"{e['argmax_agree_fp32']:.0%} / {e['argmax_agree_amp']:.0%} |")
    skipped = [f"{k}: {v.get('status')} {v.get('error', '') or v.get('note', '')}".strip()
               for k, v in report["parts"].items() if v.get("status") != "ok"]
    if skipped or report.get("skipped_cases"):
        lines += ["", "## Not run", ""] + [f"- {x}" for x in skipped + report.get("skipped_cases", [])]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    evaluate(report)
    failed = [c for c in report["checks"] if not c["passed"]]
    report["verdict"] = (f"{len(failed)} check(s) FAILED" if failed else "all checks passed") + (
        f"; targets met {sum(t['met'] is True for t in report['targets'])}, missed "
        f"{sum(t['met'] is False for t in report['targets'])}, not measured "
        f"{sum(t['met'] is None for t in report['targets'])}")
    for name, text in (("gpu_check.json", json.dumps(report, indent=2, default=str)), ("gpu_check.md", markdown(report))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)  # a reader never sees half a report


# ------------------------------------------------------------------------------------------- main


def run_check(args) -> int:
    import torch

    from hf_unlearn.benchmarking import DictBatches, device_info, fresh_accelerator

    start = time.perf_counter()
    deadline = start + args.time_budget_s
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").write_text("")
    log = Log(out / "gpu_check.log")
    cpu = args.cpu or not torch.cuda.is_available()
    report = {
        "schema": 1, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "settings": asdict(args), "versions": versions(), "device": None, "data": None,
        "precisions": {}, "steps": [], "inference": [], "round": None, "parts": {}, "skipped_cases": [],
    }
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="hf_unlearn-gpu-check-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"gpu_check: {'smoke' if args.smoke else 'full size'} on {'CPU' if cpu else torch.cuda.get_device_name(0)}; "
        f"report in {out}")
    try:
        in_process = [p for p in ("steps", "inference") if p in args.parts]
        if in_process:
            for part in in_process:
                report["parts"][part] = {"status": "ok"}
            try:
                pixels, labels, data_info = load_images(args, args.step_images)
                report["data"] = data_info
                log(f"data: {data_info['source']} ({data_info['reason']})")
                bases = {name: build_base(args, name) for name in args.models}
                keep_for_round = args.round_reserve_s if "round" in args.parts else 0.0
                on_device = None
                for precision in args.precisions:
                    accelerator = fresh_accelerator(precision, cpu=cpu)
                    report["device"] = device_info(accelerator.device)
                    if on_device is None:
                        on_device = DictBatches(pixels.to(accelerator.device), labels.to(accelerator.device))
                    report["precisions"][precision] = {
                        "accelerator_mixed_precision": accelerator.mixed_precision,
                        "native_amp": bool(accelerator.native_amp), "grad_scaler": accelerator.scaler is not None}
                    log(f"precision {precision}: {report['precisions'][precision]}")
                    for name in args.models:
                        for part in in_process:
                            if time.perf_counter() > deadline - keep_for_round:
                                report["skipped_cases"].append(f"{part}: {name}, {precision} (time budget)")
                                continue
                            t0 = time.perf_counter()
                            try:
                                if part == "steps":
                                    case = step_case(name, bases[name], on_device, accelerator, args)
                                    report["steps"].append(case)
                                    log(f"steps {name} {precision}: FT {case['finetune']['median_ms']:.1f} ms, "
                                        f"WF {case['untrain']['median_ms']:.1f} ms, ratio {case['ratio']:.3f} "
                                        f"({time.perf_counter() - t0:.1f} s)")
                                else:
                                    case = inference_case(name, bases[name], on_device.pixel_values, accelerator, args)
                                    report["inference"].append(case)
                                    last = case["rows"][-1]
                                    log(f"inference {name} {precision}: batch {last['batch']} base "
                                        f"{last['base_ms']:.2f} ms, per sample {last['ratios']['row per sample']:.3f}x, "
                                        f"exported {last['ratios']['exported']:.3f}x ({time.perf_counter() - t0:.1f} s)")
                            except Exception as err:  # recorded; the other cases still run
                                info = report["parts"][part]
                                info["status"] = "error"
                                info["error"] = "; ".join(filter(None, [info.get("error"), f"{name}, {precision}: "
                                                                        f"{type(err).__name__}: {err}"]))
                                log(traceback.format_exc())
                            release(accelerator, args)
                            write_report(report, out)
                del on_device, bases
                gc.collect()
            except Exception as err:
                for part in in_process:
                    report["parts"][part] = {"status": "error", "error": f"{type(err).__name__}: {err}"}
                log(traceback.format_exc())
            write_report(report, out)
        if "round" in args.parts:
            # The in-process parts left at least round_reserve_s of the budget for this.
            timeout = max(60.0, deadline - time.perf_counter())
            report["round"] = launch_round(args, work_dir, cpu, timeout, log)
            report["parts"]["round"] = ({"status": "error", "error": report["round"]["error"]}
                                        if report["round"].get("error") else {"status": "ok"})
            for e in report["round"].get("models", []):
                if "error" not in e:
                    log(f"round {e['model']}: {e['steps']} steps in {e['seconds']:.1f} s, filters finite "
                        f"{e['filters_finite']}, loads on CPU {e['loads_on_cpu']}, fp32 vs CPU {e['logits_fp32_rel']:.1e}")
    finally:
        report["wall_s"] = time.perf_counter() - start
        write_report(report, out)
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    log(f"{report['verdict']}; {out / 'gpu_check.md'}")
    return 0 if all(c["passed"] for c in report["checks"]) else 1


def parse(argv=None) -> GpuCheckArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(GpuCheckArguments, description=__doc__.split("\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.child_settings:  # the launched round: every setting comes from the parent, resolved
        args = GpuCheckArguments(**json.loads(Path(args.child_settings).read_text()))
        return args
    return resolve(args)


def main(argv=None) -> int:
    args = parse(argv)
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    if args.child == "round":
        return round_child(args)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
