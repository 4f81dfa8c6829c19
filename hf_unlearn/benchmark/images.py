"""Real images for the GPU check's models that need neither ``datasets`` nor the Hub.

```py
>>> from hf_unlearn.benchmark.images import image_stream
>>> pixels, labels, info = image_stream(256, 224, seed=0)
>>> pixels.shape, info["source"]
(torch.Size([256, 3, 224, 224]), 'fashion_mnist_100')
```
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from ..data import builtin

__all__ = ["image_stream", "read_fashion_mnist"]


@functools.lru_cache(maxsize=2)
def read_fashion_mnist(directory: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's IDX files as ``(uint8 images (N, 28, 28), int64 labels (N,))`` tensors.

    ``hf_unlearn.data.builtin``'s reader (no ``datasets``), cached per process (decompressing the
    training split takes about a second): do not modify the returned tensors in place.
    """
    images, labels = builtin.read_fashion_mnist(split, directory)
    return torch.from_numpy(images), torch.from_numpy(labels)


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
        if prefer in builtin.BUILTIN_DATASETS:
            try:
                pixels, labels, num_classes = _builtin_stream(prefer, num_images, image_size, seed)
                info.update(source=prefer, num_classes=num_classes, reason="built-in dataset found")
                return pixels, labels, info
            except Exception as err:  # a bare GPU machine has no `datasets`: say so and use the IDX files
                info["reason"] = f"built-in {prefer!r} could not be loaded ({type(err).__name__}: {err})"
        else:
            info["reason"] = f"no built-in dataset {prefer!r} in this version of hf_unlearn.data.builtin"
    directory = fashion_mnist_dir or builtin.fashion_mnist_dir()
    images, labels = read_fashion_mnist(directory, "train")
    if num_images > len(labels):
        raise ValueError(f"{num_images} images asked for; Fashion-MNIST's training split has {len(labels)}.")
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:num_images]
    info.update(source=f"fashion_mnist (IDX files in {directory}, resized to {image_size})", num_classes=10)
    return _to_model_pixels(images[index], image_size), labels[index].clone(), info


def _builtin_stream(name: str, num_images: int, image_size: int, seed: int):
    from transformers import ViTImageProcessor  # heavy to import; the IDX path does without it

    # `datasets` is needed from here on; a bare GPU machine lacks it, and image_stream falls back
    from ..data.loaders import subsample
    from ..data.loading import load_image_dataset
    from ..data.transforms import to_tensor_dataset

    data = load_image_dataset(name, split="train")
    data = subsample(data, num_images, seed=seed)
    processor = ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tensors = to_tensor_dataset(data, processor, num_channels=3, progress=False)
    pixels, labels = tensors.tensors
    return pixels, labels, data.num_classes
