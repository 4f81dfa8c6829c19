"""Measuring cost on any device: device-synchronised timers, peak memory, one Accelerator per precision.

They work the same on CPU (where a device sync is a no-op and there is no GPU memory to report),
which is how the test suite keeps the GPU check (``hf_unlearn.benchmark.gpu_check``) from rotting.

```py
>>> from hf_unlearn.benchmark.timing import fresh_accelerator, time_interleaved
>>> from hf_unlearn.benchmark.models import model_builders
>>> accelerator = fresh_accelerator("bf16")
>>> model = model_builders("full")["resnet-50"]().to(accelerator.device).eval()
>>> x = torch.randn(8, 3, 224, 224, device=accelerator.device)
>>> with accelerator.autocast(), torch.inference_mode():
...     times = time_interleaved({"base": lambda: model(pixel_values=x)}, accelerator.device, repeats=10, warmup=3)
>>> times["base"]["median_ms"]
```
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Optional

import torch

__all__ = ["synchronize", "StepTimer", "time_interleaved", "time_forward", "PeakMemory", "fresh_accelerator",
           "device_info"]


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


def time_forward(variants: dict, pixels, repeats: int, warmup: int = 2) -> dict:
    """Median wall time (ms) of ``fn(pixels)`` for each callable, interleaved round after round (machine
    drift hits every variant alike), under ``torch.inference_mode``. No device synchronisation: for
    CPU runs (the benchmark); :func:`time_interleaved` is the one for GPUs.

    ```py
    >>> time_forward({"base": lambda x: model(pixel_values=x)}, torch.randn(64, 3, 28, 28), repeats=20)
    {'base': 4.1}
    ```
    """
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in variants.values():
                fn(pixels)
        for _ in range(repeats):
            for k, fn in variants.items():  # interleaved: machine drift hits every variant alike
                start = time.perf_counter()
                fn(pixels)
                times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


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
    # accelerate is imported here only: the timers above serve code that never builds an Accelerator
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
        info["name"] = platform.processor() or platform.machine()
    return info
