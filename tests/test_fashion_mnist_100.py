"""The built-in 100-class dataset: two Fashion-MNIST items side by side, class = 10 x left + right."""

import numpy as np
import pytest

from hf_unlearn.data.builtin import FASHION_MNIST_CLASSES, fashion_mnist_100_arrays, fashion_mnist_files, read_fashion_mnist
from hf_unlearn.data.loading import check_labels_match, load_image_dataset


def _source(split):
    import os

    if not all(os.path.isfile(p) for p in fashion_mnist_files(split)):
        pytest.skip("Fashion-MNIST IDX files not installed (apt-get install -y dataset-fashion-mnist)")
    return read_fashion_mnist(split)


def test_composites_are_real_items_of_their_classes():
    images, labels = _source("test")
    x, y = fashion_mnist_100_arrays(images, labels, per_class=3, seed=0)
    assert x.shape == (300, 28, 56) and np.array_equal(np.bincount(y, minlength=100), np.full(100, 3))
    flat = images.reshape(len(images), -1)
    for image, target in zip(x[:40], y[:40]):
        left, right = divmod(int(target), 10)
        for half, cls in ((image[:, :28], left), (image[:, 28:], right)):
            match = np.flatnonzero((flat == half.reshape(-1)).all(1))
            assert len(match) and (labels[match] == cls).any()  # an item of that class from this split
    again = fashion_mnist_100_arrays(images, labels, per_class=3, seed=0)
    assert np.array_equal(again[0], x) and np.array_equal(again[1], y)  # seeded
    assert not np.array_equal(fashion_mnist_100_arrays(images, labels, per_class=3, seed=1)[0], x)


def test_builtin_split_stratified_named_and_streamable():
    _source("test")
    data = load_image_dataset("fashion_mnist_100", split="test")
    assert data.num_classes == 100 and data.num_rows == 10_000
    assert data.class_names[10 * 4 + 8] == "Coat | Bag" and data.class_names[0] == "T-shirt/top | T-shirt/top"
    labels = np.asarray(data.dataset["label"])
    assert (np.bincount(labels, minlength=100) == 100).all()
    first = data.dataset[0]
    assert first["image"].size == (56, 28)  # PIL: width x height
    # the test composites use test items only: the first image's halves are in the test split
    test_images, _ = _source("test")
    pixels = np.asarray(first["image"])
    flat = test_images.reshape(len(test_images), -1)
    assert (flat == pixels[:, :28].reshape(-1)).all(1).any() and (flat == pixels[:, 28:].reshape(-1)).all(1).any()
    stream = load_image_dataset("fashion_mnist_100", split="test", streaming=True)
    row = next(iter(stream.dataset))
    assert stream.num_rows == 10_000 and row["label"] == first["label"]
    assert np.array_equal(np.asarray(row["image"]), pixels)
    with pytest.raises(ValueError, match="has the splits 'train' and 'test'"):
        load_image_dataset("fashion_mnist_100", split="validation")


def test_a_ten_class_model_is_refused():
    from transformers import ResNetConfig

    _source("test")
    data = load_image_dataset("fashion_mnist_100", split="test")
    config = ResNetConfig(num_labels=10, id2label=dict(enumerate(FASHION_MNIST_CLASSES)))
    with pytest.raises(ValueError, match="has 100 classes but the model has num_labels=10"):
        check_labels_match(data, config)
