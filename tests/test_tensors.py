"""The one tensor dataset and collate: whole batches by one indexing op, subsets, per-item stacking."""

import pytest
import torch
from torch.utils.data import DataLoader

from hf_unlearn.data.tensors import TensorDictDataset, collate_batches


def test_loader_batches_match_the_tensors_and_subsets():
    pixels, labels = torch.arange(20.0).view(10, 2), torch.arange(10)
    batches = list(DataLoader(TensorDictDataset(pixels, labels), batch_size=4, collate_fn=collate_batches))
    assert [len(b["labels"]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["pixel_values"] for b in batches]), pixels)
    subset = TensorDictDataset(pixels, labels, indices=[7, 2])
    assert len(subset) == 2 and subset[1]["labels"].item() == 2
    assert torch.equal(subset.__getitems__([0, 1])["labels"], torch.tensor([7, 2]))


def test_collate_stacks_items_and_lengths_are_checked():
    out = collate_batches([{"labels": 1, "pixel_values": torch.zeros(2)}, {"labels": 3, "pixel_values": torch.ones(2)}])
    assert out["labels"].tolist() == [1, 3] and out["pixel_values"].shape == (2, 2)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        TensorDictDataset(torch.zeros(3, 1), torch.zeros(2))
