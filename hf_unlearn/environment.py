"""What a result file records about where it was made: versions, machine, device.

One recorder for every job (base training, the untraining round, the evaluation suite, the
benchmark), so all their files say the same things the same way::

    from hf_unlearn.environment import environment_info

    info = environment_info()              # versions, python, platform, CPUs, torch threads, GPUs
    info = environment_info(accelerator)   # + the device and the number of processes of a run


"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata
from typing import Any, Optional

_PACKAGES = (
    "hf_unlearn", "torch", "transformers", "peft", "accelerate", "datasets", "evaluate",
    "scikit-learn", "numpy",
)

def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(dist.replace("-", "_"))
        return getattr(module, "__version__", None) if module is not None else None


def environment_info(accelerator: Optional[Any] = None) -> dict[str, Any]:
    """Versions and machine, for reproducibility. Reads package metadata; imports nothing heavy.

    GPU details are added only when torch is already imported (it is, in any real evaluation).

    Example:
        >>> sorted(environment_info()["versions"])[:3]
        ['accelerate', 'datasets', 'evaluate']
    """
    info: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(name) for name in _PACKAGES},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            info["torch_threads"] = torch.get_num_threads()
            cuda = torch.cuda.is_available()
            info["cuda"] = torch.version.cuda if cuda else None
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
        except Exception:  # never let an exotic build break report writing
            pass
    if accelerator is not None:
        info["device"] = str(accelerator.device)
        info["num_processes"] = accelerator.num_processes
    return info
