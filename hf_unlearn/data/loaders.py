"""Loaders and subsets: ``build_dataloader`` and the class / size selections made before it.

``build_dataloader`` turns an :class:`~hf_unlearn.data.loading.ImageClassificationData` into a
DataLoader of ``{"pixel_values", "labels"}`` batches (preprocessed once into a
:class:`~hf_unlearn.data.tensors.TensorDictDataset` when it fits in memory, else batch by batch);
``class_subset`` makes forget/retain splits and ``subsample`` quick ones.

Example:

```py
>>> from hf_unlearn.data.loading import load_image_dataset
>>> from hf_unlearn.data.loaders import build_dataloader, class_subset
>>> test = load_image_dataset("fashion_mnist", split="test")
>>> forget = build_dataloader(class_subset(test, ["coat"]), processor, num_channels=1, batch_size=256,
...                           shuffle=False, seed=0)
```

Distributed training (DDP) with accelerate
------------------------------------------
Build the loader exactly as for one process and hand it to ``accelerator.prepare``; accelerate
shards it:

* map-style data: every rank holds the whole (preprocessed) dataset and accelerate wraps the
  sampler so that each rank gets its own batches.
* streaming data: accelerate also shards a DataLoader over an IterableDataset (by default rank 0
  reads the batches and dispatches a slice to every rank; with ``dispatch_batches=False`` each rank
  reads its own shards). Do **not** also call ``datasets.distributed.split_dataset_by_node``:
  the data would be sharded twice and, with two ranks, half of the examples silently vanish.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable, Optional, Union

import numpy as np
import torch

from ..tuners.weight_filter.selection import resolve_class
from .loading import ImageClassificationData
from .tensors import TensorDictDataset, collate_batches
from .transforms import make_transform, raw_image_columns, to_tensor_dataset

__all__ = [
    "DEFAULT_MAX_CACHED_BYTES",
    "build_dataloader",
    "class_subset",
    "label_array",
    "num_batches",
    "subsample",
]

# A batch of decoded/processed images can be this large before build_dataloader(preprocess="auto")
# stops caching the whole split as one tensor and processes batches on the fly instead
# (Fashion-MNIST at 1x28x28 is ~190 MB; at 3x224x224 for a ViT-B/16 it would be ~36 GB).
DEFAULT_MAX_CACHED_BYTES = 2 * 1024**3


class _TransformedRows(torch.utils.data.Dataset):
    """Map-style dataset processed batch by batch as it is read (for splits too big to cache)."""

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        out = self.__getitems__([index])
        return {key: value[0] for key, value in out.items()}

    def __getitems__(self, indices):
        indices = [int(i) for i in indices]
        return self.transform(self.dataset[indices], indices)



def build_dataloader(
    data: ImageClassificationData,
    image_processor,
    *,
    num_channels: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    preprocess: str = "auto",
    max_cached_bytes: int = DEFAULT_MAX_CACHED_BYTES,
    shuffle_buffer_size: int = 10_000,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``{"pixel_values": FloatTensor[B,C,H,W], "labels": LongTensor[B]}``.

    Map-style data is preprocessed once with :func:`to_tensor_dataset` (``preprocess="ahead"``) or,
    when the processed split would exceed ``max_cached_bytes`` (e.g. 224x224 RGB for a Hub ViT),
    batch by batch as it is read (``preprocess="on_the_fly"``); ``"auto"`` picks. Shuffling uses a
    generator seeded with ``seed``. Streaming data is shuffled with a buffer (seeded) and processed
    in batches by ``IterableDataset.map``. Pass the loader to ``accelerator.prepare`` for DDP (see
    the module docstring: never also ``split_dataset_by_node``).

    Example:

    ```py
    >>> loader = build_dataloader(data, processor, num_channels=1, batch_size=64, shuffle=True, seed=0)
    >>> for batch in loader:
    ...     logits = model(pixel_values=batch["pixel_values"]).logits
    ```
    """
    generator = torch.Generator().manual_seed(seed)
    if data.streaming:
        transform = make_transform(image_processor, data, num_channels=num_channels)
        stream = raw_image_columns(data.dataset, data.image_column, data.label_column)
        if shuffle:
            stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        stream = stream.map(
            transform, batched=True, batch_size=max(batch_size, 256), with_indices=True,
            remove_columns=[data.image_column, data.label_column],
        )
        return torch.utils.data.DataLoader(
            stream, batch_size=batch_size, collate_fn=collate_batches, drop_last=drop_last, num_workers=num_workers,
        )

    if preprocess not in ("auto", "ahead", "on_the_fly"):
        raise ValueError(f"preprocess must be 'auto', 'ahead' or 'on_the_fly', not {preprocess!r}")
    if preprocess == "auto":
        transform = make_transform(image_processor, data, num_channels=num_channels)
        first = raw_image_columns(data.dataset.select(range(min(1, len(data.dataset)))), data.image_column,
                            data.label_column)
        example_bytes = transform(first[:1], [0])["pixel_values"][0].numel() * 4
        preprocess = "ahead" if example_bytes * len(data.dataset) <= max_cached_bytes else "on_the_fly"
    if preprocess == "ahead":
        tensors = to_tensor_dataset(data, image_processor, num_channels=num_channels, progress=progress)
        dataset = TensorDictDataset(*tensors.tensors)
    else:
        transform = make_transform(image_processor, data, num_channels=num_channels)
        dataset = _TransformedRows(raw_image_columns(data.dataset, data.image_column, data.label_column), transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
        collate_fn=collate_batches, num_workers=num_workers,
    )


def _class_ids(data: ImageClassificationData, classes: Union[int, str, Iterable]) -> list:
    """Sorted unique ids of class ids/names, resolved like ``adapter(forget=...)`` (names case-insensitive)."""
    if isinstance(classes, (int, str, np.integer)):
        classes = [classes]
    try:
        return sorted({resolve_class(item, data.num_classes, data.label2id) for item in classes})
    except ValueError as err:
        raise ValueError(f"{err} (dataset {data.source!r}, split {data.split!r})") from None


def class_subset(data: ImageClassificationData, classes, keep: bool = True) -> ImageClassificationData:
    """Keep only (``keep=True``) or drop (``keep=False``) the rows of the given classes.

    ``classes`` are class ids or names (case-insensitive, as ``adapter(forget=...)``). Labels keep their ids and the class list is unchanged (the
    model still has all its outputs), so this is how forget/retain splits are made.

    Example:

    ```py
    >>> forget = class_subset(test, ["Coat"])            # only coats
    >>> retain = class_subset(test, ["Coat"], keep=False)  # everything else
    ```
    """
    ids = _class_ids(data, classes)
    if data.streaming:
        wanted = set(ids)
        column = data.label_column
        dataset = data.dataset.filter(lambda row: (row[column] in wanted) == keep)
        return replace(data, dataset=dataset, num_rows=None)
    # Index selection on the label column (read straight from Arrow) is much faster than
    # Dataset.filter, which would call Python once per row.
    labels = label_array(data.dataset, data.label_column)
    mask = np.isin(labels, ids)
    indices = np.flatnonzero(mask if keep else ~mask)
    dataset = data.dataset.select(indices)
    return replace(data, dataset=dataset, num_rows=len(indices))


def label_array(dataset, label_column: str) -> np.ndarray:
    """The label column of a map-style `datasets.Dataset` as a numpy array, read straight from Arrow.

    Much faster than ``dataset[label_column]`` (no Python list). A dataset made by ``select`` has an
    indices mapping (``_indices``, which datasets exposes no public test for): only then is the
    column gathered through it.

    Example:

    ```py
    >>> counts = np.bincount(label_array(data.dataset, data.label_column), minlength=data.num_classes)
    ```
    """
    if getattr(dataset, "_indices", None) is None:
        return dataset.data.column(label_column).to_numpy()
    return np.asarray(dataset.select_columns([label_column]).with_format("numpy")[label_column])


def subsample(data: ImageClassificationData, max_examples: Optional[int], seed: int = 0) -> ImageClassificationData:
    """At most ``max_examples`` rows: a seeded random subset (map-style, original order kept) or
    the first rows of a stream. ``None`` returns ``data`` unchanged. Used for quick runs/tests.

    Example:

    ```py
    >>> quick = subsample(load_image_dataset("fashion_mnist", split="train"), 2000, seed=0)
    >>> len(quick)
    2000
    ```
    """
    if max_examples is None:
        return data
    if data.streaming:
        count = max_examples if data.num_rows is None else min(max_examples, data.num_rows)
        return replace(data, dataset=data.dataset.take(max_examples), num_rows=count)
    total = len(data.dataset)
    if max_examples >= total:
        return data
    # A random subset, not the first rows: imagefolder splits are sorted by class.
    indices = np.sort(np.random.default_rng(seed).choice(total, size=max_examples, replace=False))
    return replace(data, dataset=data.dataset.select(indices), num_rows=max_examples)


def num_batches(num_rows: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches per epoch for ``num_rows`` examples (helper for schedules).

    Example:

    ```py
    >>> num_batches(1000, 64), num_batches(1000, 64, drop_last=True)
    (16, 15)
    ```
    """
    return num_rows // batch_size if drop_last else math.ceil(num_rows / batch_size)
