"""The GPU check's options, constants and the small pieces its parts share.

```py
>>> from hf_unlearn.benchmark.gpu.settings import GpuCheckArguments, resolve
>>> args = resolve(GpuCheckArguments(smoke=True, cpu=True))   # unset options take the smoke sizes
>>> args.image_size, args.timed_steps
(32, 2)
```
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..images import image_stream
from ..models import model_builders

# The checkout's root: the check runs from one (scripts/gpu_check.sh), with its carried data in
# .gpu_check_data/ there and its commit recorded in the report.
REPO = Path(__file__).resolve().parents[3]
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


def build_base(args, name: str):
    """The model ``name`` at the run's size, its random weights seeded with ``--seed``."""
    torch.manual_seed(args.seed)
    return model_builders("smoke" if args.smoke else "full", NUM_LABELS)[name]()


def default_fashion_mnist_dir(args) -> Optional[str]:
    """--fashion_mnist_dir, else $HF_UNLEARN_FASHION_MNIST_DIR, else a copy carried in .gpu_check_data/."""
    if args.fashion_mnist_dir:
        return args.fashion_mnist_dir
    if os.environ.get("HF_UNLEARN_FASHION_MNIST_DIR"):
        return os.environ["HF_UNLEARN_FASHION_MNIST_DIR"]
    carried = REPO / ".gpu_check_data" / "fashion-mnist"
    return str(carried) if (carried / "train-images-idx3-ubyte.gz").is_file() else None


def load_images(args, count: int):
    """``count`` seeded images at the run's size: ``(pixel_values, labels, info)``."""
    return image_stream(count, args.image_size, seed=args.seed, fashion_mnist_dir=default_fashion_mnist_dir(args))


def filters_of(adapter):
    """The adapter's filter parameters (theta), in module order."""
    return [p for n, p in adapter.model.named_parameters() if "weight_filter_theta" in n]


def all_finite(tensors) -> bool:
    """No NaN or Inf in any of ``tensors``."""
    return bool(all(torch.isfinite(t.detach()).all() for t in tensors))


def versions() -> dict:
    """Versions of Python and the packages the check uses (None: not installed), and the git commit."""
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
