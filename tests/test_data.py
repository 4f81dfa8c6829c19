"""hf_unlearn.data: loading, column detection, built-in sets, preprocessing, loaders, subsets and their errors.

Offline and fast: built-in digits and Fashion-MNIST (Debian package dataset-fashion-mnist), plus
small parquet/imagefolder datasets written to tmp_path. HF caches point into tmp_path.
"""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import datasets
from datasets import ClassLabel, Dataset, Features, Image, Value

from hf_unlearn.data import builtin, loaders, loading, transforms
from hf_unlearn.data.tensors import TensorDictDataset
from hf_unlearn.presets import make_image_processor


@pytest.fixture(autouse=True)
def hf_offline(monkeypatch, tmp_path):
    """No network, no writes to the global HF caches (datasets reads its config at import time,
    so the module constants are patched as well as the environment)."""
    import huggingface_hub.constants as hub_constants

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


def grey_processor(size=8, mean=(0.5,), std=(0.5,)):
    return make_image_processor(size, list(mean), list(std))


def rgb_processor(size=8):
    return make_image_processor(size, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def cifar100_like(n=12, seed=0):
    """In-memory dataset with cifar100's columns: img, fine_label, coarse_label."""
    rng = np.random.default_rng(seed)
    images = [PILImage.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]
    features = Features({
        "img": Image(),
        "fine_label": ClassLabel(names=["apple", "bee", "car", "dolphin"]),
        "coarse_label": ClassLabel(names=["natural", "artificial"]),
    })
    return Dataset.from_dict({
        "img": images, "fine_label": [i % 4 for i in range(n)], "coarse_label": [int(i % 4 == 2) for i in range(n)],
    }, features=features)


def write_imagefolder(root, classes=("cat", "dog"), per_class=3, size=8, mode="RGB", splits=("train",)):
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for split in splits:
        for name in classes:
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(per_class):
                array = rng.integers(0, 256, shape, dtype=np.uint8)
                PILImage.fromarray(array).save(root / split / name / f"{i}.png")
    return root


# -- built-in datasets ----------------------------------------------------------------------------


def test_digits_loads_with_features_and_split():
    train = loading.load_image_dataset("digits", split="train")
    test = loading.load_image_dataset("digits", split="test")
    assert isinstance(train.dataset, Dataset)
    assert (train.image_column, train.label_column) == ("image", "label")
    assert isinstance(train.dataset.features["image"], Image)
    assert train.dataset.features["label"].names == [str(i) for i in range(10)]
    assert train.class_names == [str(i) for i in range(10)] and train.num_classes == 10
    assert len(train.dataset) + len(test.dataset) == 1797
    assert 0.78 < len(train.dataset) / 1797 < 0.82
    image = train.dataset[0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
    assert np.asarray(image).max() > 200  # 0..16 scaled to 0..255
    assert set(test.dataset["label"]) == set(range(10))  # stratified
    again = loading.load_image_dataset("digits", split="test")  # deterministic split
    assert list(again.dataset["label"]) == list(test.dataset["label"])


def test_fashion_mnist_from_debian_files():
    train = loading.load_image_dataset("fashion_mnist", split="train")
    test = loading.load_image_dataset("fashion_mnist", split="test")
    assert len(train.dataset) == 60000 and len(test.dataset) == 10000
    assert train.num_rows == 60000
    assert train.class_names == builtin.FASHION_MNIST_CLASSES
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    assert train.dataset.features["label"].names == builtin.FASHION_MNIST_CLASSES
    first = train.dataset[0]
    assert first["label"] == 9  # the first training image of Fashion-MNIST is an ankle boot
    assert first["image"].size == (28, 28) and first["image"].mode == "L"
    assert np.bincount(np.asarray(test.dataset["label"])).tolist() == [1000] * 10


def test_fashion_mnist_missing_files_falls_back_to_hub_and_fails_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv(builtin.FASHION_MNIST_DIR_ENV, str(tmp_path / "no-such-dir"))
    with pytest.raises(RuntimeError) as info:
        loading.load_image_dataset("fashion_mnist", split="test")
    message = str(info.value)
    assert "dataset-fashion-mnist" in message
    assert "zalando-datasets/fashion_mnist" in message
    assert "no-such-dir" in message and builtin.FASHION_MNIST_DIR_ENV in message
    # the Hub copy was really tried: datasets refused it because the Hub is offline
    assert isinstance(info.value.__cause__, ConnectionError) and "OfflineModeIsEnabled" in message


def test_streaming_yields_the_same_examples_as_map_style():
    for source, n in (("digits", 100), ("fashion_mnist", 300)):
        mapped = loading.load_image_dataset(source, split="test")
        streamed = loading.load_image_dataset(source, split="test", streaming=True)
        assert isinstance(streamed.dataset, datasets.IterableDataset)
        assert streamed.class_names == mapped.class_names and streamed.num_rows == len(mapped.dataset)
        rows = list(streamed.dataset.take(20))
        for i, row in enumerate(rows):
            assert row["label"] == mapped.dataset[i]["label"]
            assert np.array_equal(np.asarray(row["image"]), np.asarray(mapped.dataset[i]["image"]))

        processor = grey_processor(28 if source == "fashion_mnist" else 8)
        kwargs = dict(num_channels=1, batch_size=50, shuffle=False, seed=0, progress=False)
        map_batches = iter(loaders.build_dataloader(mapped, processor, **kwargs))
        stream_batches = iter(loaders.build_dataloader(streamed, processor, **kwargs))
        for _ in range(n // 50):
            a, b = next(map_batches), next(stream_batches)
            assert set(a) == set(b) == {"pixel_values", "labels"}
            assert a["pixel_values"].dtype == b["pixel_values"].dtype == torch.float32
            assert a["labels"].dtype == b["labels"].dtype == torch.long
            assert torch.equal(a["labels"], b["labels"])
            assert torch.allclose(a["pixel_values"], b["pixel_values"])


def test_streaming_loader_covers_every_example_once():
    streamed = loading.load_image_dataset("digits", split="test", streaming=True)
    loader = loaders.build_dataloader(streamed, grey_processor(), num_channels=1, batch_size=64, shuffle=True, seed=3,
                                shuffle_buffer_size=100)
    labels = torch.cat([batch["labels"] for batch in loader])
    mapped = loading.load_image_dataset("digits", split="test")
    assert sorted(labels.tolist()) == sorted(mapped.dataset["label"])


# -- column detection --------------------------------------------------------------------------------


def test_column_detection_cifar100_layout_in_memory():
    data = loading.wrap_dataset(cifar100_like())
    assert (data.image_column, data.label_column) == ("img", "fine_label")
    assert data.class_names == ["apple", "bee", "car", "dolphin"] and data.num_classes == 4
    coarse = loading.wrap_dataset(cifar100_like(), label_column="coarse_label")
    assert coarse.label_column == "coarse_label" and coarse.class_names == ["natural", "artificial"]


def test_ambiguous_label_columns_ask_for_label_column():
    ds = cifar100_like().rename_column("fine_label", "fine")
    with pytest.raises(ValueError, match="label_column=") as info:
        loading.wrap_dataset(ds)
    assert "fine" in str(info.value) and "coarse_label" in str(info.value)


def test_local_parquet_file_and_directory(tmp_path):
    path = tmp_path / "cifar_like.parquet"
    cifar100_like().to_parquet(str(path))
    data = loading.load_image_dataset(str(path), split="train")
    assert (data.image_column, data.label_column) == ("img", "fine_label")
    assert len(data.dataset) == 12 and data.num_classes == 4

    folder = tmp_path / "parquet_dir"
    folder.mkdir()
    cifar100_like(8).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    cifar100_like(4, seed=1).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    test = loading.load_image_dataset(str(folder), split="test")
    assert len(test.dataset) == 4 and test.label_column == "fine_label"
    streamed = loading.load_image_dataset(str(folder), split="test", streaming=True)
    assert [row["fine_label"] for row in streamed.dataset] == list(test.dataset["fine_label"])


def test_local_imagefolder(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", splits=("train", "test"))
    data = loading.load_image_dataset(str(root), split="test")
    assert (data.image_column, data.label_column) == ("image", "label")
    assert data.class_names == ["cat", "dog"] and len(data.dataset) == 6


def test_overrides_and_plain_integer_labels_with_class_names():
    ds = Dataset.from_dict({"picture": [PILImage.new("L", (8, 8), i) for i in range(4)], "y": [0, 1, 2, 1]},
                           features=Features({"picture": Image(), "y": Value("int64")}))
    data = loading.wrap_dataset(ds, label_column="y", class_names=["a", "b", "c"])
    assert (data.image_column, data.label_column, data.class_names) == ("picture", "y", ["a", "b", "c"])
    assert isinstance(data.dataset.features["y"], ClassLabel)


# -- preprocessing ----------------------------------------------------------------------------------


def test_transform_outputs_tensors_and_grey_to_rgb():
    data = loading.load_image_dataset("digits", split="test")
    batch = data.dataset[:5]
    grey = transforms.make_transform(grey_processor(), data, num_channels=1)(batch)
    rgb = transforms.make_transform(rgb_processor(), data, num_channels=3)(batch)
    assert grey["pixel_values"].shape == (5, 1, 8, 8) and grey["pixel_values"].dtype == torch.float32
    assert grey["labels"].dtype == torch.long and grey["labels"].tolist() == batch["label"]
    assert rgb["pixel_values"].shape == (5, 3, 8, 8)
    # a grey image becomes RGB with three equal channels, each equal to the grey channel
    assert torch.allclose(rgb["pixel_values"][:, 0], rgb["pixel_values"][:, 2])
    assert torch.allclose(rgb["pixel_values"][:, 1:2], grey["pixel_values"])


def test_rgb_to_grey(tmp_path):
    root = write_imagefolder(tmp_path / "rgb", mode="RGB")
    data = loading.load_image_dataset(str(root), split="train")
    assert data.dataset[0]["image"].mode == "RGB"
    processor = grey_processor()
    out = transforms.make_transform(processor, data, num_channels=1)(data.dataset[:3])
    assert out["pixel_values"].shape == (3, 1, 8, 8)
    expected = processor([data.dataset[i]["image"].convert("L") for i in range(3)], return_tensors="pt")
    assert torch.allclose(out["pixel_values"], expected["pixel_values"])


def test_to_tensor_dataset_and_loader_modes_agree():
    data = loaders.subsample(loading.load_image_dataset("fashion_mnist", split="test"), 500, seed=0)
    processor = make_image_processor(28)
    tensors = transforms.to_tensor_dataset(data, processor, num_channels=1, batch_size=128, progress=False)
    assert isinstance(tensors, torch.utils.data.TensorDataset)
    pixel_values, labels = tensors.tensors
    assert pixel_values.shape == (500, 1, 28, 28) and labels.tolist() == list(data.dataset["label"])
    assert abs(float(pixel_values.mean())) < 0.2 and 0.8 < float(pixel_values.std()) < 1.2  # normalised

    kwargs = dict(num_channels=1, batch_size=64, shuffle=True, seed=7, progress=False)
    ahead = list(loaders.build_dataloader(data, processor, preprocess="ahead", **kwargs))
    again = list(loaders.build_dataloader(data, processor, preprocess="ahead", **kwargs))
    lazy = list(loaders.build_dataloader(data, processor, preprocess="on_the_fly", **kwargs))
    assert [len(b["labels"]) for b in ahead] == [64] * 7 + [52]
    for a, b, c in zip(ahead, again, lazy):  # same seed, same order, in both modes
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["labels"], c["labels"])
        assert torch.allclose(a["pixel_values"], c["pixel_values"])
    # "auto" falls back to on-the-fly processing where caching would not fit
    small_budget = loaders.build_dataloader(data, processor, max_cached_bytes=1000, **kwargs)
    assert not isinstance(small_budget.dataset, TensorDictDataset)
    assert isinstance(loaders.build_dataloader(data, processor, preprocess="ahead", **kwargs).dataset, TensorDictDataset)


# -- errors -------------------------------------------------------------------------------------------


def test_missing_label_column_names_columns_and_fix():
    with pytest.raises(ValueError) as info:
        loading.wrap_dataset(cifar100_like(), label_column="label")
    message = str(info.value)
    assert "'label'" in message and "img" in message and "fine_label" in message and "label_column=" in message

    no_labels = Dataset.from_dict({"image": [PILImage.new("L", (4, 4))]}, features=Features({"image": Image()}))
    with pytest.raises(ValueError, match="no label column"):
        loading.wrap_dataset(no_labels)


def test_label_column_without_classlabel_or_names():
    ds = Dataset.from_dict({"image": [PILImage.new("L", (4, 4))] * 2, "label": [0, 1]},
                           features=Features({"image": Image(), "label": Value("int64")}))
    with pytest.raises(ValueError, match="class_names="):
        loading.wrap_dataset(ds)


def test_num_labels_mismatch_and_name_warning():
    from transformers import ResNetConfig

    data = loading.load_image_dataset("digits", split="test")
    with pytest.raises(ValueError) as info:
        loading.check_labels_match(data, ResNetConfig(num_labels=4))
    assert "10 classes" in str(info.value) and "num_labels=4" in str(info.value)
    with pytest.warns(UserWarning, match="id2label"):
        loading.check_labels_match(data, ResNetConfig(num_labels=10))
    config = ResNetConfig(id2label={i: str(i) for i in range(10)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loading.check_labels_match(data, config)


def test_undecodable_image_names_the_row(tmp_path):
    root = write_imagefolder(tmp_path / "broken", classes=("a", "b"), per_class=2)
    (root / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    data = loading.load_image_dataset(str(root), split="train")
    paths = [row["path"] for row in data.dataset.cast_column("image", Image(decode=False))["image"]]
    bad_row = next(i for i, p in enumerate(paths) if p.endswith(os.path.join("b", "1.png")))
    with pytest.raises(transforms.ImageDecodeError, match=f"row {bad_row} ") as info:
        transforms.to_tensor_dataset(data, grey_processor(), num_channels=1, progress=False)
    assert "1.png" in str(info.value)
    streamed = loading.load_image_dataset(str(root), split="train", streaming=True)
    with pytest.raises(transforms.ImageDecodeError, match="row"):
        list(loaders.build_dataloader(streamed, grey_processor(), num_channels=1, batch_size=2, shuffle=False, seed=0))


def test_processor_that_does_not_fit_the_model():
    data = loading.load_image_dataset("digits", split="test")
    with pytest.raises(ValueError) as info:
        transforms.make_transform(rgb_processor(), data, num_channels=1)
    message = str(info.value)
    assert "num_channels=1" in message and "3 values" in message and "ViTImageProcessor" in message
    with pytest.raises(ValueError, match="num_channels=1"):
        loaders.build_dataloader(data, rgb_processor(), num_channels=1, batch_size=8, shuffle=False, seed=0)


# -- subsets ------------------------------------------------------------------------------------------


def test_class_subset_forget_and_retain():
    data = loading.load_image_dataset("fashion_mnist", split="test")
    forget = loaders.class_subset(data, ["Coat"])
    retain = loaders.class_subset(data, ["Coat"], keep=False)
    assert len(forget.dataset) == 1000 and len(retain.dataset) == 9000
    assert set(forget.dataset["label"]) == {4} and 4 not in set(retain.dataset["label"])
    assert forget.class_names == data.class_names and forget.num_classes == 10  # model outputs unchanged
    nested = loaders.class_subset(loaders.class_subset(data, [0, 1, 2]), [1], keep=False)  # works on a selection too
    assert sorted(set(nested.dataset["label"])) == [0, 2] and len(nested.dataset) == 2000

    streamed = loaders.class_subset(loading.load_image_dataset("digits", split="test", streaming=True), [3, "7"])
    assert {row["label"] for row in streamed.dataset} == {3, 7}
    with pytest.raises(ValueError, match="Unknown class name 'Hat'"):
        loaders.class_subset(data, ["Hat"])


def test_class_names_resolve_case_insensitively_like_the_adapter():
    """One resolver (selection.resolve_class): "coat" selects what "Coat" does, as adapter(forget="coat")."""
    data = loading.load_image_dataset("fashion_mnist", split="test")
    exact, lower = loaders.class_subset(data, ["Coat"]), loaders.class_subset(data, "coat")
    assert len(lower.dataset) == 1000 and list(lower.dataset["label"]) == list(exact.dataset["label"])
    assert loaders.class_subset(data, ["ANKLE BOOT", 4], keep=False).num_rows == 8000
    with pytest.raises(ValueError, match="out of range"):
        loaders.class_subset(data, [10])
    with pytest.raises(TypeError, match="int id or a str name"):
        loaders.class_subset(data, [4.0])


def test_label_array_reads_selections_through_their_indices():
    data = loading.load_image_dataset("digits", split="test")
    picked = data.dataset.select([5, 0, 3])
    assert loaders.label_array(data.dataset, "label").tolist() == list(data.dataset["label"])
    assert loaders.label_array(picked, "label").tolist() == list(picked["label"])


def test_subsample_is_seeded_and_keeps_classes():
    data = loading.load_image_dataset("digits", split="train")
    a, b = loaders.subsample(data, 200, seed=1), loaders.subsample(data, 200, seed=1)
    assert len(a.dataset) == 200 and a.num_rows == 200
    assert list(a.dataset["label"]) == list(b.dataset["label"])
    assert len(set(a.dataset["label"])) == 10


# DDP (accelerate shards these loaders; every example seen exactly once, map-style and streaming) is
# checked in test_train_base.py, in the same two-process launch as the DDP training run.


# -- IDX files ----------------------------------------------------------------------------------------


def _write_idx(path, array, *, header=None, compress=True):
    import gzip
    import struct

    header = header if header is not None else bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trips_and_names_bad_files(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x.gz", images)
    _write_idx(tmp_path / "x.idx", images, compress=False)
    for name in ("x.gz", "x.idx"):
        out = builtin.read_idx(str(tmp_path / name))
        assert out.dtype == np.uint8 and np.array_equal(out, images)
        out[0, 0, 0] = 7  # writable, so torch.from_numpy can share it without a warning
    _write_idx(tmp_path / "float.gz", images, header=bytes([0, 0, 0x0D, 3]) + bytes(12))
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        builtin.read_idx(str(tmp_path / "float.gz"))
    _write_idx(tmp_path / "short.gz", images[:1], header=bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]))
    with pytest.raises(ValueError, match="truncated"):
        builtin.read_idx(str(tmp_path / "short.gz"))


def test_read_fashion_mnist_checks_files_and_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        builtin.read_fashion_mnist("test", str(tmp_path))
    with pytest.raises(ValueError, match="has the splits 'train' and 'test'"):
        builtin.fashion_mnist_files("validation")
    images_path, labels_path = builtin.fashion_mnist_files("test", str(tmp_path))
    _write_idx(images_path, np.zeros((3, 28, 28), np.uint8))
    _write_idx(labels_path, np.array([9, 0, 4], np.uint8))
    images, labels = builtin.read_fashion_mnist("test", str(tmp_path))
    assert images.shape == (3, 28, 28) and labels.dtype == np.int64 and labels.tolist() == [9, 0, 4]
    _write_idx(labels_path, np.array([9, 0], np.uint8))
    with pytest.raises(ValueError, match="is not the label file"):
        builtin.read_fashion_mnist("test", str(tmp_path))
