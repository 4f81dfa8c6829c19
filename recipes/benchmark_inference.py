"""Inference cost of weight filters: latency ratios against the base model, and filter sizes.

    python recipes/benchmark_inference.py                 # small presets + ViT-B/16, ResNet-50, ConvNeXt-T
    python recipes/benchmark_inference.py --models small  # seconds

For each model (random weights: latency does not depend on them) it times, interleaved in the same
run so that machine drift hits every variant alike, the median latency of one batch through:

- base: the plain transformers model;
- adapter, nothing selected (``forget=None``): the exact base output through the wrapped layers;
- adapter, one row for the whole batch (``forget=3``);
- adapter, a different row per sample (``forget=tensor([...])``);
- exported: ``UnlearnAdapter.export(forget=3)``, a plain model with the row folded into its weights.

and prints each as a ratio to base, plus the filter parameters per class and for all classes as a
share of the base model's parameters.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

try:
    import hf_unlearn  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_unlearn import UnlearnAdapter
from hf_unlearn.benchmark.timing import time_forward
from hf_unlearn.commands.arguments import parse_arguments
from hf_unlearn.files import atomic_write_json


@dataclass
class InferenceBenchmarkArguments:
    """The options of this script (its command line, parsed by ``hf_unlearn.commands.arguments``)."""

    models: Literal["small", "large", "all"] = "all"
    batch_size: Optional[int] = field(default=None, metadata={"help": "default: 64 small, 8 large"})
    repeats: Optional[int] = field(default=None, metadata={"help": "timed rounds (default: 30 small, 7 large)"})
    warmup: int = 2
    threads: Optional[int] = None
    json: Optional[str] = field(default=None, metadata={"help": "also write the results here"})


def model_specs(which: str):
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ResNetConfig,
                              ResNetForImageClassification, ViTConfig, ViTForImageClassification)

    small = [
        ("resnet-tiny (28x28)", lambda n: ResNetForImageClassification(ResNetConfig(
            num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1], layer_type="basic",
            num_labels=n)), 28, 10),
        ("convnext-tiny28 (28x28)", lambda n: ConvNextForImageClassification(ConvNextConfig(
            num_channels=3, patch_size=2, hidden_sizes=[32, 64, 128], depths=[1, 1, 2], num_stages=3,
            num_labels=n)), 28, 10),
        ("vit-tiny28 (28x28)", lambda n: ViTForImageClassification(ViTConfig(
            image_size=28, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=128, num_channels=3, num_labels=n)), 28, 10),
    ]
    large = [
        ("ViT-B/16 (224, CIFAR-100 head)", lambda n: ViTForImageClassification(ViTConfig(num_labels=n)), 224, 100),
        ("ResNet-50 (224, CIFAR-10 head)", lambda n: ResNetForImageClassification(ResNetConfig(num_labels=n)), 224, 10),
        ("ConvNeXt-T (224, CIFAR-10 head)", lambda n: ConvNextForImageClassification(ConvNextConfig(num_labels=n)),
         224, 10),
    ]
    return {"small": small, "large": large, "all": small + large}[which]


def measure(name: str, make, size: int, num_labels: int, args: InferenceBenchmarkArguments) -> dict:
    """The five ways to run one model, timed interleaved; ratios to the base and the filters' size."""
    large = size > 64
    batch = args.batch_size or (8 if large else 64)
    repeats = args.repeats or (7 if large else 30)
    base = make(num_labels).eval()
    base_params = sum(p.numel() for p in base.parameters())
    adapter = UnlearnAdapter.attach(make(num_labels).eval())
    adapter.base_model.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():  # trained-looking filters: a random value per unit and class
        for pname, p in adapter.model.named_parameters():
            if "weight_filter_theta" in pname:
                p.uniform_(-3, 3)
    adapter.eval()
    exported = adapter.export(forget=3)
    pixels = torch.randn(batch, 3, size, size)
    per_sample = torch.arange(batch) % num_labels
    variants = {
        "base": lambda x: base(pixel_values=x),
        "adapter, nothing selected": lambda x: adapter(pixel_values=x),
        "adapter, one row per batch": lambda x: adapter(pixel_values=x, forget=3),
        "adapter, a row per sample": lambda x: adapter(pixel_values=x, forget=per_sample),
        "exported": lambda x: exported(pixel_values=x),
    }
    medians_ms = time_forward(variants, pixels, repeats, args.warmup)
    per_class = sum(m.out_features for m in adapter.filter_layers().values())
    return {
        "model": name, "batch": batch, "repeats": repeats, "base_ms": medians_ms["base"],
        "ratios": {k: v / medians_ms["base"] for k, v in medians_ms.items()},
        "base_params": base_params, "classes": num_labels, "filters_per_class": per_class,
        "filter_share_all_classes": per_class * num_labels / base_params,
    }


def print_table(rows: list) -> None:
    """The Markdown table of every model's ratios and filter sizes."""
    header = ["model", "batch", "base ms", "no row", "one row/batch", "row per sample", "exported",
              "filters/class", "all classes / base params"]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        q = r["ratios"]
        print(f"| {r['model']} | {r['batch']} | {r['base_ms']:.1f} | {q['adapter, nothing selected']:.3f}x | "
              f"{q['adapter, one row per batch']:.3f}x | {q['adapter, a row per sample']:.3f}x | {q['exported']:.3f}x | "
              f"{r['filters_per_class']:,} | {r['filter_share_all_classes'] * 100:.1f}% ({r['classes']} classes) |")


def main(argv=None) -> dict:
    (args,) = parse_arguments((InferenceBenchmarkArguments,), argv, prog="recipes/benchmark_inference.py",
                              description=__doc__.split("\n\n")[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, make, size, num_labels in model_specs(args.models):
        row = measure(name, make, size, num_labels, args)
        rows.append(row)
        print(f"{name}: base {row['base_ms']:.1f} ms/batch of {row['batch']}; " + ", ".join(
            f"{k} {v:.3f}x" for k, v in row["ratios"].items() if k != "base"), flush=True)
    print_table(rows)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\nmachine: {machine}; medians of interleaved rounds; ratios to base measured in the same run")
    result = {"rows": rows, "machine": machine}
    if args.json:
        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
