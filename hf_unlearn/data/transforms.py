"""Rows to tensors: decode images, apply the model's image processor, preprocess a split once.

Batches are produced with the model's own transformers image processor, so a model fine-tuned from
the Hub sees exactly the preprocessing it was trained with. Images are converted to the model's
mode first (grey "L" for one channel, "RGB" for three); an image that cannot be decoded raises
:class:`ImageDecodeError` naming its row.

Example:

```py
>>> from hf_unlearn.data.loading import load_image_dataset
>>> from hf_unlearn.data.transforms import make_transform, to_tensor_dataset
>>> data = load_image_dataset("digits", split="test")
>>> transform = make_transform(processor, data, num_channels=1)
>>> transform(data.dataset[:8])["pixel_values"].shape
torch.Size([8, 1, 8, 8])
>>> pixel_values, labels = to_tensor_dataset(data, processor, num_channels=1).tensors
```
"""

from __future__ import annotations

import io
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image as PILImage
from tqdm.auto import tqdm

from .loading import ImageClassificationData

__all__ = [
    "ImageDecodeError",
    "check_processor_fits",
    "make_transform",
    "raw_image_columns",
    "to_tensor_dataset",
]


class ImageDecodeError(ValueError):
    """An image in the dataset could not be decoded; the message names the row."""


def check_processor_fits(image_processor, num_channels: int) -> None:
    """Raise a clear error if ``image_processor`` cannot produce inputs with ``num_channels``.

    The images themselves are converted to the model's mode (grey "L" for 1 channel, "RGB" for
    3); what cannot be fixed here is a processor whose normalisation has the wrong number of
    channels, e.g. an RGB checkpoint's processor used for a 1-channel model.

    Example:

    ```py
    >>> check_processor_fits(make_image_processor(28), num_channels=1)   # one grey mean/std: fits
    >>> check_processor_fits(make_image_processor(28, [0.5] * 3, [0.5] * 3), num_channels=1)
    Traceback (most recent call last):
    ValueError: the image processor (...) has image_mean with 3 values [0.5, 0.5, 0.5] but the model expects ...
    ```
    """
    name = type(image_processor).__name__
    if num_channels not in (1, 3):
        raise ValueError(f"models with num_channels={num_channels} are not supported: images are fed as "
                         "grey (1 channel) or RGB (3 channels)")
    if getattr(image_processor, "do_normalize", True) is False:
        return
    for attribute in ("image_mean", "image_std"):
        value = getattr(image_processor, attribute, None)
        if isinstance(value, (list, tuple)) and len(value) != num_channels:
            raise ValueError(
                f"the image processor ({name}) has {attribute} with {len(value)} values {list(value)} but the "
                f"model expects num_channels={num_channels}: the processor does not fit the model. Use the "
                f"processor saved with this model, or one with {num_channels} mean/std values."
            )


def _decode_image(value, row, mode: str, where: str) -> PILImage.Image:
    path = None
    try:
        if isinstance(value, PILImage.Image):
            image = value
        elif isinstance(value, dict):
            path = value.get("path")
            if value.get("bytes") is not None:
                image = PILImage.open(io.BytesIO(value["bytes"]))
            elif path:
                image = PILImage.open(path)
            else:
                raise ValueError("neither bytes nor a path")
        elif isinstance(value, (bytes, bytearray)):
            image = PILImage.open(io.BytesIO(value))
        elif isinstance(value, str):
            path = value
            image = PILImage.open(value)
        elif value is None:
            raise ValueError("the image is missing (None)")
        else:
            image = PILImage.fromarray(np.asarray(value))
        image.load()  # PIL decodes lazily: force it here so the error names the row
        if image.mode != mode:
            image = image.convert(mode)
        return image
    except Exception as err:
        raise ImageDecodeError(
            f"could not decode the image in row {row} of {where}" + (f" (file {path})" if path else "")
            + f": {type(err).__name__}: {err}"
        ) from err


def make_transform(image_processor, data: ImageClassificationData, *, num_channels: int) -> Callable:
    """A batched function mapping a batch of rows to ``{"pixel_values", "labels"}`` tensors.

    ``transform(batch, indices=None)`` takes a dict of lists (a datasets batch) and returns
    ``{"pixel_values": FloatTensor[B, C, H, W], "labels": LongTensor[B]}``. Images are converted to
    the model's mode first (grey for ``num_channels=1``, RGB for 3), then resized/rescaled/normalised
    by ``image_processor``. ``indices`` (row numbers) only make error messages precise; it
    matches ``Dataset.map(..., with_indices=True)``.

    Example:

    ```py
    >>> transform = make_transform(processor, data, num_channels=1)
    >>> out = transform(data.dataset[:8])
    >>> out["pixel_values"].shape
    torch.Size([8, 1, 28, 28])
    ```
    """
    check_processor_fits(image_processor, num_channels)
    mode = "L" if num_channels == 1 else "RGB"
    image_column, label_column, num_classes = data.image_column, data.label_column, data.num_classes
    where = f"{data.source!r} (split {data.split!r}, column {image_column!r})"
    processor_name = type(image_processor).__name__

    def transform(batch, indices=None):
        values = batch[image_column]
        rows = list(indices) if indices is not None else list(range(len(values)))
        images = [_decode_image(value, row, mode, where) for value, row in zip(values, rows)]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
            raise ValueError(
                f"the image processor ({processor_name}) produced pixel_values of shape "
                f"{tuple(pixel_values.shape)}, but the model expects num_channels={num_channels}: "
                "the processor does not fit the model"
            )
        raw_labels = batch[label_column]
        for label, row in zip(raw_labels, rows):
            if label is None or not 0 <= int(label) < num_classes:
                raise ValueError(
                    f"row {row} of {data.source!r} (split {data.split!r}) has label {label!r} in column "
                    f"{label_column!r}, outside 0..{num_classes - 1} (unlabelled split?)"
                )
        labels = torch.as_tensor([int(label) for label in raw_labels], dtype=torch.long)
        return {"pixel_values": pixel_values.to(torch.float32), "labels": labels}

    return transform


def raw_image_columns(dataset, image_column: str, label_column: str):
    """The two columns :func:`make_transform` reads, with images left undecoded.

    ``make_transform`` then decodes them itself, so a broken file raises an error naming its row
    (not a bare PIL error), and no other column is read.

    Example:

    ```py
    >>> rows = raw_image_columns(data.dataset, data.image_column, data.label_column)
    >>> out = make_transform(processor, data, num_channels=1)(rows[:4], range(4))
    ```
    """
    from datasets import Image  # heavy (pyarrow): see hf_unlearn.data.loading

    dataset = dataset.select_columns([image_column, label_column])
    return dataset.cast_column(image_column, Image(decode=False))


def to_tensor_dataset(
    data: ImageClassificationData,
    image_processor,
    *,
    num_channels: int,
    batch_size: int = 1000,
    desc: Optional[str] = None,
    progress: bool = True,
) -> torch.utils.data.TensorDataset:
    """Preprocess a map-style split once into ``TensorDataset(pixel_values, labels)``.

    Decoding and the image processor then run once, not every epoch: Fashion-MNIST train
    (60,000 x 1x28x28 float32, ~190 MB) takes a few seconds on 2 CPU cores.

    Example:

    ```py
    >>> tensors = to_tensor_dataset(data, processor, num_channels=1)
    >>> pixel_values, labels = tensors.tensors
    ```
    """
    if data.streaming:
        raise TypeError("to_tensor_dataset needs a map-style dataset; for streaming data use build_dataloader")
    transform = make_transform(image_processor, data, num_channels=num_channels)
    dataset = raw_image_columns(data.dataset, data.image_column, data.label_column)
    total = len(dataset)
    if total == 0:
        raise ValueError(f"{data.source!r} split {data.split!r} is empty")
    pixel_values = None
    labels = torch.empty(total, dtype=torch.long)
    desc = desc or f"Preprocessing {data.source} [{data.split}]"
    for start in tqdm(range(0, total, batch_size), desc=desc, unit="batch", disable=not progress):
        stop = min(total, start + batch_size)
        out = transform(dataset[start:stop], range(start, stop))
        if pixel_values is None:  # shape known after the first batch: allocate once, no concat copy
            pixel_values = torch.empty((total, *out["pixel_values"].shape[1:]), dtype=torch.float32)
        if out["pixel_values"].shape[1:] != pixel_values.shape[1:]:
            raise ValueError(
                f"rows {start}..{stop - 1} were processed to shape {tuple(out['pixel_values'].shape[1:])} "
                f"but earlier rows to {tuple(pixel_values.shape[1:])}: set a fixed size in the image processor"
            )
        pixel_values[start:stop] = out["pixel_values"]
        labels[start:stop] = out["labels"]
    return torch.utils.data.TensorDataset(pixel_values, labels)
