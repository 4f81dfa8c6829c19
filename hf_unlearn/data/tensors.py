"""The one tensor dataset and the one collate function of the package.

``TensorDictDataset`` serves ``{"pixel_values", "labels"}`` rows of two tensors (optionally a subset of
their rows); its ``__getitems__`` lets a DataLoader fetch a whole batch with one indexing op instead
of one ``__getitem__`` per example (torch uses it when present; accelerate keeps the dataset), and
``collate_batches`` passes such a batch through (or stacks per-item dicts)::

    from torch.utils.data import DataLoader
    from hf_unlearn.data.tensors import TensorDictDataset, collate_batches

    loader = DataLoader(TensorDictDataset(pixels, labels), batch_size=64, collate_fn=collate_batches)
"""

from __future__ import annotations

from typing import Optional

import torch


class TensorDictDataset(torch.utils.data.Dataset):
    """Rows ``indices`` (default: all) of ``(pixel_values, labels)`` as ``{"pixel_values", "labels"}``
    dicts. The tensors are shared, not copied, and may live on any device."""

    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor, indices: Optional[torch.Tensor] = None):
        if len(pixel_values) != len(labels):
            raise ValueError(f"{len(pixel_values)} images but {len(labels)} labels.")
        self.pixel_values, self.labels = pixel_values, labels
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels) if self.indices is None else len(self.indices)

    def _rows(self, index) -> torch.Tensor:
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index if self.indices is None else self.indices[index]
        return rows.to(self.labels.device)

    def __getitem__(self, index):
        rows = self._rows(index)
        return {"pixel_values": self.pixel_values[rows], "labels": self.labels[rows]}

    def __getitems__(self, indices):
        return self.__getitem__(list(indices))


def collate_batches(items):
    """A batch dict from ``__getitems__`` as it is; a list of per-item dicts stacked key by key."""
    if isinstance(items, dict):
        return items
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}
