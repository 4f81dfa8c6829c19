"""Measuring cost on any device: device-synchronised timers, peak memory, one Accelerator per precision,
the real-size models (ViT-B/16, ConvNeXt-T, ResNet-50) with tiny stand-ins of the same families, and an
image stream for them that needs neither ``datasets`` nor the Hub.

``recipes/gpu_check.py`` is built on these; they work the same on CPU (where a device sync is a no-op
and there is no GPU memory to report), which is how the test suite keeps the GPU check from rotting.

Example:

```py
>>> from hf_unlearn.benchmarking import fresh_accelerator, time_interleaved, real_size_models
>>> accelerator = fresh_accelerator("bf16")
>>> model = real_size_models()["resnet-50"]().to(accelerator.device).eval()
>>> x = torch.randn(8, 3, 224, 224, device=accelerator.device)
>>> with accelerator.autocast(), torch.inference_mode():
...     times = time_interleaved({"base": lambda: model(pixel_values=x)}, accelerator.device, repeats=10, warmup=3)
>>> times["base"]["median_ms"]
```
"""

from __future__ import annotations

import functools
import gzip
import os
import statistics
import struct
import time
from typing import Callable, Optional

import torch

__all__ = [
    "synchronize",
    "StepTimer",
    "time_interleaved",
    "PeakMemory",
    "fresh_accelerator",
    "real_size_models",
    "smoke_models",
    "read_fashion_mnist",
    "image_stream",
    "DictBatches",
    "device_info",
]


# ---------------------------------------------------------------------------------------------- timing


def synchronize(device) -> None:
    """Wait until ``device`` has finished its queued work (a no-op on CPU, whose ops are synchronous)."""
    device = torch.device(device)
    if device.type == "cpu":
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return
    accel = getattr(torch, "accelerator", None)  # torch >= 2.6: any other accelerator type
    if accel is not None and hasattr(accel, "synchronize"):
        accel.synchronize(device)


def _event(device):
    """A recorded CUDA timing event on ``device``'s current stream, or None off CUDA."""
    if torch.device(device).type != "cuda":
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


class StepTimer:
    """Time the steps of a loop by marking the start of each one.

    On CUDA every mark records an event on the stream (no synchronisation, so the loop keeps its
    own overlap of host and device work) and the step times are the intervals between events, read
    after one final synchronisation: the device's time per step in steady state, idle gaps caused
    by the host included. On CPU the marks are wall-clock times.

    Example:

    ```py
    >>> timer = StepTimer(device)
    >>> for batch in loader:
    ...     timer.mark()
    ...     train_step(batch)
    >>> timer.mark(); timer.step_seconds(skip=5)   # the steps after 5 warm-up steps
    ```
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.wall: list[float] = []
        self.events: list = []

    def mark(self) -> None:
        self.events.append(_event(self.device))
        self.wall.append(time.perf_counter())

    def step_seconds(self, skip: int = 0) -> list[float]:
        """Duration of every step after the first ``skip`` ones (one fewer than the marks)."""
        if len(self.wall) < skip + 2:
            raise ValueError(f"{len(self.wall)} marks give no step after skipping {skip} warm-up steps.")
        if self.device.type == "cuda":
            synchronize(self.device)
            ev = self.events[skip:]
            return [a.elapsed_time(b) / 1e3 for a, b in zip(ev, ev[1:])]
        w = self.wall[skip:]
        return [b - a for a, b in zip(w, w[1:])]

    def wall_seconds(self, skip: int = 0) -> float:
        """Host wall time from the mark after ``skip`` steps to the last mark (device synchronised first)."""
        synchronize(self.device)
        return self.wall[-1] - self.wall[skip]


def time_interleaved(variants: dict[str, Callable[[], object]], device, *, repeats: int, warmup: int) -> dict:
    """Latency of each callable: the device is synchronised before and after every call.

    The variants run interleaved (round after round), so drift of the machine hits all of them
    alike. Returns ``{name: {"median_ms", "min_ms", "device_median_ms", "calls"}}``; ``median_ms`` is
    the wall time a caller waits for a finished result, ``device_median_ms`` the CUDA-event time
    (None off CUDA).
    """
    device = torch.device(device)
    wall = {name: [] for name in variants}
    dev = {name: [] for name in variants}
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    synchronize(device)
    for _ in range(repeats):
        for name, fn in variants.items():
            synchronize(device)
            start = time.perf_counter()
            e0 = _event(device)
            fn()
            e1 = _event(device)
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            if e0 is not None:
                dev[name].append(e0.elapsed_time(e1) / 1e3)
    return {
        name: {
            "median_ms": statistics.median(wall[name]) * 1e3,
            "min_ms": min(wall[name]) * 1e3,
            "device_median_ms": statistics.median(dev[name]) * 1e3 if dev[name] else None,
            "calls": repeats,
        }
        for name in variants
    }


# ---------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak device memory allocated by tensors inside a ``with`` block (CUDA; None elsewhere).

    ``peak_mb`` counts everything resident (models already loaded too); ``added_mb`` is the peak
    above what was allocated when the block began.

    Example:

    ```py
    >>> with PeakMemory(device) as mem:
    ...     step()
    >>> mem.peak_mb, mem.added_mb
    ```
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_mb: Optional[float] = None
        self.added_mb: Optional[float] = None
        self._before = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_mb = peak / 2**20
            self.added_mb = (peak - self._before) / 2**20

    def to_dict(self) -> dict:
        return {"peak_mb": self.peak_mb, "added_mb": self.added_mb}


# ---------------------------------------------------------------------------------------------- accelerate


def fresh_accelerator(mixed_precision: Optional[str] = None, *, cpu: bool = False, **kwargs):
    """A new ``Accelerator`` with its own ``mixed_precision``, in a process that may already have one.

    accelerate keeps one state per process and refuses a second precision in it; this resets that
    state first (what accelerate's own test utilities do), so one process can measure fp32, bf16
    and fp16 in turn. Not for a process launched for distributed training (the process group's
    state would be dropped). ``mixed_precision=None`` takes what ``accelerate launch`` set.

    Example:

    ```py
    >>> for precision in ("no", "bf16", "fp16"):
    ...     accelerator = fresh_accelerator(precision)
    ...     model, optimizer = accelerator.prepare(model, optimizer)
    ```
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu, **kwargs)


def device_info(device) -> dict:
    """Name, memory and numeric settings of ``device`` (what a timing means depends on them)."""
    device = torch.device(device)
    info = {"device": str(device), "name": None, "total_memory_gb": None, "capability": None,
            "cuda": torch.version.cuda, "cudnn": None,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, total_memory_gb=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
    else:
        import platform

        info["name"] = platform.processor() or platform.machine()
    return info


# ---------------------------------------------------------------------------------------------- models


def _labelled(config, num_labels: int):
    config.num_labels = num_labels
    config.id2label = {i: f"class_{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    return config


def real_size_models(num_labels: int = 100) -> dict[str, Callable]:
    """Builders of ViT-B/16 (224), ConvNeXt-T and ResNet-50 from transformers configs (random weights).

    The configs are those of google/vit-base-patch16-224, facebook/convnext-tiny-224 and
    microsoft/resnet-50, written out so that nothing is downloaded; the head has ``num_labels``.
    Each builder returns a new model in eval mode. Image size: 224.
    """
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ResNetConfig,
                              ResNetForImageClassification, ViTConfig, ViTForImageClassification)

    return {
        "vit-b16": lambda: ViTForImageClassification(_labelled(ViTConfig(
            image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, num_channels=3), num_labels)).eval(),
        "convnext-t": lambda: ConvNextForImageClassification(_labelled(ConvNextConfig(
            num_channels=3, patch_size=4, hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], num_stages=4),
            num_labels)).eval(),
        "resnet-50": lambda: ResNetForImageClassification(_labelled(ResNetConfig(
            num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
            layer_type="bottleneck"), num_labels)).eval(),
    }


def smoke_models(num_labels: int = 100) -> dict[str, Callable]:
    """Tiny models of the same three families and layer types as :func:`real_size_models` (image size 32).

    Same keys, so a check written for the real sizes runs unchanged at smoke size on a CPU.
    """
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ResNetConfig,
                              ResNetForImageClassification, ViTConfig, ViTForImageClassification)

    return {
        "vit-b16": lambda: ViTForImageClassification(_labelled(ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_channels=3), num_labels)).eval(),
        "convnext-t": lambda: ConvNextForImageClassification(_labelled(ConvNextConfig(
            num_channels=3, patch_size=4, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2), num_labels)).eval(),
        "resnet-50": lambda: ResNetForImageClassification(_labelled(ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck"),
            num_labels)).eval(),
    }


# ---------------------------------------------------------------------------------------------- data


def _read_gz(path: str) -> bytes:
    with gzip.open(path, "rb") as f:
        return f.read()


@functools.lru_cache(maxsize=2)
def read_fashion_mnist(directory: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The official Fashion-MNIST IDX ``.gz`` files as ``(uint8 images (N, 28, 28), int64 labels (N,))``.

    Reads the files directly (no ``datasets``), as ``hf_unlearn.data.builtin`` does for its built-in sets.
    Cached per process (decompressing the training split takes about a second): do not modify the
    returned tensors in place.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"Fashion-MNIST has the splits 'train' and 'test', not {split!r}.")
    images_path = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
    missing = [p for p in (images_path, labels_path) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found: {', '.join(missing)}. Install the Debian package "
            "dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist), or point "
            "HF_UNLEARN_FASHION_MNIST_DIR at a folder holding them."
        )
    raw = _read_gz(images_path)
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{images_path} is not an IDX image file (magic {magic}, expected 2051).")
    images = torch.frombuffer(bytearray(raw[16:16 + count * rows * cols]), dtype=torch.uint8).view(count, rows, cols)
    raw = _read_gz(labels_path)
    magic, n_labels = struct.unpack(">II", raw[:8])
    if magic != 2049 or n_labels != count:
        raise ValueError(f"{labels_path} is not the label file for {images_path} (magic {magic}, {n_labels} labels "
                         f"for {count} images).")
    labels = torch.frombuffer(bytearray(raw[8:8 + count]), dtype=torch.uint8).to(torch.long)
    return images, labels


def _to_model_pixels(images_uint8: torch.Tensor, image_size: int) -> torch.Tensor:
    """Grey ``(N, H, W)`` uint8 -> ``(N, 3, S, S)`` float32 in [-1, 1] (mean 0.5, std 0.5, as ViT's processor)."""
    x = images_uint8[:, None].float().div_(255.0)
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.sub_(0.5).div_(0.5).repeat(1, 3, 1, 1)


def image_stream(num_images: int, image_size: int, *, seed: int = 0, fashion_mnist_dir: Optional[str] = None,
                 prefer: Optional[str] = "fashion_mnist_100") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``num_images`` real images for a classifier at ``image_size``: ``(pixel_values, labels, info)``.

    If ``hf_unlearn.data.builtin`` has the built-in dataset ``prefer`` (the 100-class Fashion-MNIST
    composites) and it loads here, its training split is used through the project's own loader and
    image processing. Otherwise (it is not built in, or ``datasets`` is not installed, as on a bare
    GPU machine) Fashion-MNIST's training images are read straight from the IDX files in
    ``fashion_mnist_dir`` (default: ``HF_UNLEARN_FASHION_MNIST_DIR``, else the Debian package's
    folder) and resized. ``info`` says which source was used, why, and how many classes its labels
    span. The sample is seeded.
    """
    info: dict = {"num_images": num_images, "image_size": image_size}
    if prefer:
        from .data import builtin as hf_data

        if prefer in getattr(hf_data, "BUILTIN_DATASETS", ()):
            try:
                pixels, labels, num_classes = _builtin_stream(prefer, num_images, image_size, seed)
                info.update(source=prefer, num_classes=num_classes, reason="built-in dataset found")
                return pixels, labels, info
            except Exception as err:  # a bare GPU machine has no `datasets`: say so and use the IDX files
                info["reason"] = f"built-in {prefer!r} could not be loaded ({type(err).__name__}: {err})"
        else:
            info["reason"] = f"no built-in dataset {prefer!r} in this version of hf_unlearn.data.builtin"
    directory = fashion_mnist_dir or os.environ.get("HF_UNLEARN_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
    images, labels = read_fashion_mnist(directory, "train")
    if num_images > len(labels):
        raise ValueError(f"{num_images} images asked for; Fashion-MNIST's training split has {len(labels)}.")
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:num_images]
    info.update(source=f"fashion_mnist (IDX files in {directory}, resized to {image_size})", num_classes=10)
    return _to_model_pixels(images[index], image_size), labels[index].clone(), info


def _builtin_stream(name: str, num_images: int, image_size: int, seed: int):
    from transformers import ViTImageProcessor

    from .data.loaders import subsample
    from .data.loading import load_image_dataset
    from .data.transforms import to_tensor_dataset

    data = load_image_dataset(name, split="train")
    data = subsample(data, num_images, seed=seed)
    processor = ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tensors = to_tensor_dataset(data, processor, num_channels=3, progress=False)
    pixels, labels = tensors.tensors
    return pixels, labels, data.num_classes


class DictBatches(torch.utils.data.Dataset):
    """``{"pixel_values", "labels"}`` rows over two tensors (on any device), fetched a batch at a time.

    ``__getitems__`` makes the DataLoader gather a whole batch with one indexing op; use it with
    ``collate_fn=DictBatches.collate``.
    """

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor):
        if len(pixel_values) != len(labels):
            raise ValueError(f"{len(pixel_values)} images but {len(labels)} labels.")
        self.pixel_values, self.labels = pixel_values, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long).to(self.labels.device)
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}

    @staticmethod
    def collate(batch):
        return batch
