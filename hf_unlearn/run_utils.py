"""Small pieces shared by the recipes' jobs: YAML configs for argparse, and run provenance."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Callable, Optional, Sequence


def load_yaml_options(path: str, parser: argparse.ArgumentParser) -> dict:
    """Options from a YAML file, checked against the parser's option names (unknown keys are an error)."""
    import yaml

    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of option names to values")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"--config {path}: unknown keys {unknown}; valid keys: {sorted(known - {'help', 'config'})}")
    return values


def parse_with_config(
    parser: argparse.ArgumentParser,
    argv: Optional[Sequence[str]] = None,
    *,
    prefill: Optional[Callable[[argparse.Namespace], dict]] = None,
    adjust: Optional[Callable[[dict, list], dict]] = None,
) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) where ``--config file.yaml`` pre-fills the defaults and
    flags given on the command line win.

    ``prefill(pre)`` may supply values read before the config (e.g. a base model's saved recipe; the
    config overrides them); ``adjust(values, argv)`` may edit the merged values before they become
    defaults.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(argv)
    values = dict(prefill(pre)) if prefill else {}
    if pre.config:
        values.update(load_yaml_options(pre.config, parser))
    if adjust:
        values = adjust(values, argv)
    parser.set_defaults(**values)
    return parser.parse_args(argv)


def machine_info(accelerator) -> dict:
    import torch

    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(accelerator.device), "num_processes": accelerator.num_processes,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def package_versions() -> dict:
    import accelerate
    import datasets
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "accelerate": accelerate.__version__}


def write_yaml_config(args, path: str) -> None:
    import yaml

    values = {k: v for k, v in vars(args).items() if k != "config"}
    with open(path, "w") as f:
        yaml.safe_dump(values, f, sort_keys=True)


def end_distributed() -> None:
    """Leave the process group cleanly at the end of a job (a no-op outside ``accelerate launch``).

    A gloo process group that is still alive when the interpreter exits can abort the process in its
    destructor ("terminate called without an active exception", SIGABRT) after all the work was done,
    which fails the launcher. A barrier first, so no rank tears down while another still communicates.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
