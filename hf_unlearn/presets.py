"""Small base classifiers for small grey images, built from transformers configs (no downloads).

No pretrained ResNet/ViT/ConvNeXt weights can be downloaded on an offline machine, so base
models for Fashion-MNIST (28x28 grey) and scikit-learn digits (8x8 grey) are trained from these
configs. They are ordinary transformers models (``ResNetForImageClassification`` etc.): they save
with ``save_pretrained``, reload with ``AutoModelForImageClassification``, and keep the standard
module names that adapters target, e.g. ``resnet.encoder.stages.{s}.layers.{l}.layer.{k}.convolution``.

Presets:

=================== ======================================================== ==========
name                model                                                    parameters
=================== ======================================================== ==========
``resnet-tiny``     ResNet, basic blocks, widths 32/64/128, depths 1/1/1        ~309k
``convnext-tiny28`` ConvNeXt, patch 2, widths 32/64/128, depths 1/1/2           ~367k
``vit-tiny28``      ViT, patch 4, hidden 64, 4 layers, 4 heads, MLP 128         ~139k
``resnet-micro``    ResNet, widths 8/16 (for fast tests on 8x8 digits)           ~5k
``convnext-micro``  ConvNeXt, widths 8/16, patch 1                              ~5k
``vit-micro``       ViT, patch 2, hidden 32, 2 layers, 2 heads, MLP 64          ~18k
=================== ======================================================== ==========

Example:

```py
>>> from hf_unlearn.presets import build_preset
>>> names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
...          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
>>> model, processor = build_preset("resnet-tiny", num_labels=10, id2label=dict(enumerate(names)))
>>> model.config.num_channels, processor.size
(3, {'height': 28, 'width': 28})
```
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

# transformers is already imported by `import hf_unlearn` (through peft): these cost nothing more.
from transformers import AutoModelForImageClassification, ConvNextConfig, ResNetConfig, ViTConfig
from transformers.utils import is_torchvision_available

# Without torchvision, transformers 5 falls back from ViTImageProcessor to its PIL backend with a
# warning (even on `from transformers import ViTImageProcessor`): the PIL class is used directly then.
if is_torchvision_available():
    from transformers import ViTImageProcessor as _VIT_PROCESSOR_CLASS
else:
    try:
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil as _VIT_PROCESSOR_CLASS
    except ImportError:  # older transformers layouts have no separate PIL class
        from transformers import ViTImageProcessor as _VIT_PROCESSOR_CLASS

__all__ = ["PRESETS", "MICRO_PRESETS", "DATASET_STATS", "build_preset", "preset_config", "make_image_processor",
           "tiny_preset"]

# Per-channel mean/std of the pixel values after rescaling to 0..1, for normalisation.
DATASET_STATS = {
    "fashion_mnist": ([0.2860], [0.3530]),
    "digits": ([0.3053], [0.3759]),  # 0..16 scaled to 0..255, measured on all 1,797 images
}
_DEFAULT_STATS = DATASET_STATS["fashion_mnist"]


def make_image_processor(image_size: int = 28, image_mean: Optional[Sequence[float]] = None,
                         image_std: Optional[Sequence[float]] = None):
    """A ViT-style image processor: resize to ``image_size`` squared, rescale to 0..1, normalise.

    Without torchvision, transformers 5 falls back from ``ViTImageProcessor`` to its PIL backend
    with a warning; the PIL class is used directly then (same config, same saved
    ``image_processor_type``), so ``AutoImageProcessor`` reloads it either way.

    Example:

    ```py
    >>> processor = make_image_processor(8, image_mean=[0.3053], image_std=[0.3759])
    >>> processor.size["height"], processor.size["width"]
    (8, 8)
    ```
    """
    mean = list(image_mean) if image_mean is not None else list(_DEFAULT_STATS[0])
    std = list(image_std) if image_std is not None else list(_DEFAULT_STATS[1])
    return _VIT_PROCESSOR_CLASS(
        do_resize=True, size={"height": image_size, "width": image_size}, do_rescale=True,
        do_normalize=True, image_mean=mean, image_std=std,
    )


def _resnet(widths, depths, embedding_size):
    def config(num_channels, image_size):
        return ResNetConfig(num_channels=num_channels, embedding_size=embedding_size, hidden_sizes=list(widths),
                            depths=list(depths), layer_type="basic", hidden_act="relu")
    return config


def _convnext(widths, depths, patch_size):
    def config(num_channels, image_size):
        return ConvNextConfig(num_channels=num_channels, patch_size=patch_size, hidden_sizes=list(widths),
                              depths=list(depths), num_stages=len(widths), image_size=image_size)
    return config


def _vit(hidden_size, layers, heads, intermediate_size, patch_size):
    def config(num_channels, image_size):
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch_size}")
        return ViTConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                         num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate_size,
                         num_channels=num_channels)
    return config


# name -> (config builder(num_channels, image_size), default image size)
_SPECS: dict = {
    "resnet-tiny": (_resnet((32, 64, 128), (1, 1, 1), 32), 28),
    "convnext-tiny28": (_convnext((32, 64, 128), (1, 1, 2), 2), 28),
    "vit-tiny28": (_vit(64, 4, 4, 128, 4), 28),
    # micro presets: a few thousand parameters, train in about a second on 8x8 digits
    "resnet-micro": (_resnet((8, 16), (1, 1), 8), 8),
    "convnext-micro": (_convnext((8, 16), (1, 1), 1), 8),
    "vit-micro": (_vit(32, 2, 2, 64, 2), 8),
}
MICRO_PRESETS = ("resnet-micro", "convnext-micro", "vit-micro")


def _preset_fn(name: str) -> Callable:
    make_config, default_size = _SPECS[name]

    def build(num_labels: int = 10, id2label: Optional[dict] = None, *, image_size: Optional[int] = None,
              image_mean: Optional[Sequence[float]] = None, image_std: Optional[Sequence[float]] = None,
              num_channels: int = 3):
        """Returns ``(config, image_processor)`` for this preset."""
        size = image_size or default_size
        config = make_config(num_channels, size)
        _set_labels(config, num_labels, id2label)
        mean = list(image_mean if image_mean is not None else _DEFAULT_STATS[0])
        std = list(image_std if image_std is not None else _DEFAULT_STATS[1])
        # one grey value repeated per channel for an RGB variant; other mismatches are left to
        # data.check_processor_fits, which names both numbers
        mean = mean * num_channels if len(mean) == 1 else mean
        std = std * num_channels if len(std) == 1 else std
        return config, make_image_processor(size, mean, std)

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"Preset {name!r}: returns (config, image_processor); default image size {default_size}."
    return build


PRESETS: dict = {name: _preset_fn(name) for name in _SPECS}


def _set_labels(config, num_labels: int, id2label: Optional[dict]) -> None:
    if id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if sorted(id2label) != list(range(num_labels)):
        raise ValueError(f"id2label must have the keys 0..{num_labels - 1}, got {sorted(id2label)}")
    config.num_labels = num_labels
    config.id2label = id2label
    config.label2id = {v: k for k, v in id2label.items()}


def preset_config(name: str, num_labels: int = 10, id2label: Optional[dict] = None, **kwargs):
    """``(config, image_processor)`` for preset ``name``; kwargs: image_size, image_mean, image_std, num_channels.

    Example:

    ```py
    >>> config, processor = preset_config("resnet-micro", num_labels=4, num_channels=1)
    >>> config.hidden_sizes, config.num_labels
    ([8, 16], 4)
    ```
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name](num_labels, id2label, **kwargs)


def build_preset(name: str, num_labels: int = 10, id2label: Optional[dict] = None, **kwargs):
    """Build a randomly initialised model from preset ``name``: returns ``(model, image_processor)``.

    Seed first (``transformers.set_seed``) for reproducible weights. kwargs: ``image_size``
    (e.g. 28 to upsample 8x8 digits for a 28x28 preset), ``image_mean``/``image_std`` (see
    ``DATASET_STATS``), ``num_channels`` (default 3: transformers' ``pipeline`` always feeds RGB, so
    grey datasets are converted to RGB rather than the model made single-channel).

    Example:

    ```py
    >>> model, processor = build_preset("vit-micro", num_labels=10, id2label={i: str(i) for i in range(10)},
    ...                                 image_mean=[0.3053], image_std=[0.3759])
    ```
    """
    config, processor = preset_config(name, num_labels, id2label, **kwargs)
    model = AutoModelForImageClassification.from_config(config)
    return model, processor


def tiny_preset(kind: str) -> str:
    """The micro preset name for a model family: ``tiny_preset("resnet") == "resnet-micro"``."""
    name = f"{kind}-micro"
    if name not in PRESETS:
        raise ValueError(f"no micro preset for {kind!r}; families: resnet, convnext, vit")
    return name
