"""The GPU check's models: ViT-B/16, ConvNeXt-T and ResNet-50 at their real size, and tiny stand-ins of the
same families and layer types, from one table of transformers configs (random weights, nothing downloaded).

```py
>>> from hf_unlearn.benchmark.models import model_builders
>>> model = model_builders("smoke", num_labels=100)["resnet-50"]()   # a tiny bottleneck ResNet, eval mode
>>> sorted(model_builders("full"))
['convnext-t', 'resnet-50', 'vit-b16']
```
"""

from __future__ import annotations

import copy
from typing import Callable

__all__ = ["MODEL_CONFIGS", "IMAGE_SIZES", "model_builders"]

# model -> (transformers family, {size: config kwargs}). "full": the configs of google/vit-base-patch16-224,
# facebook/convnext-tiny-224 and microsoft/resnet-50 written out; "smoke": the same layer types, tiny.
MODEL_CONFIGS = {
    "vit-b16": ("vit", {
        "full": dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, num_channels=3),
        "smoke": dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, num_channels=3),
    }),
    "convnext-t": ("convnext", {
        "full": dict(num_channels=3, patch_size=4, hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3],
                     num_stages=4),
        "smoke": dict(num_channels=3, patch_size=4, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
    }),
    "resnet-50": ("resnet", {
        "full": dict(num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                     layer_type="bottleneck"),
        "smoke": dict(num_channels=3, embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1],
                      layer_type="bottleneck"),
    }),
}
IMAGE_SIZES = {"full": 224, "smoke": 32}


def _families() -> dict:
    # transformers is heavy to import: the table above stays readable without it
    from transformers import (ConvNextConfig, ConvNextForImageClassification, ResNetConfig,
                              ResNetForImageClassification, ViTConfig, ViTForImageClassification)

    return {"vit": (ViTConfig, ViTForImageClassification), "convnext": (ConvNextConfig, ConvNextForImageClassification),
            "resnet": (ResNetConfig, ResNetForImageClassification)}


def _labelled(config, num_labels: int):
    config.num_labels = num_labels
    config.id2label = {i: f"class_{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    return config


def model_builders(size: str = "full", num_labels: int = 100) -> dict[str, Callable]:
    """``{name: builder}`` for every model of :data:`MODEL_CONFIGS` at ``size`` ("full" or "smoke"); each
    builder returns a new model in eval mode with a ``num_labels`` head (image size: :data:`IMAGE_SIZES`)."""
    if size not in IMAGE_SIZES:
        raise ValueError(f"size must be one of {sorted(IMAGE_SIZES)}, not {size!r}.")
    families = _families()

    def builder(family: str, kwargs: dict) -> Callable:
        config_class, model_class = families[family]
        return lambda: model_class(_labelled(config_class(**copy.deepcopy(kwargs)), num_labels)).eval()

    return {name: builder(family, sizes[size]) for name, (family, sizes) in MODEL_CONFIGS.items()}
