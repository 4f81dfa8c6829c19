"""Datasets in, tensors out: load image-classification data and turn it into model batches.

Every loader returns an :class:`ImageClassificationData`: a `datasets.Dataset` (or, with
``streaming=True``, a `datasets.IterableDataset`) plus the names of its image and label columns
and its class names. Batches are produced with the model's own transformers image processor, so a
model fine-tuned from the Hub sees exactly the preprocessing it was trained with.

Sources understood by :func:`load_image_dataset`:

* ``"fashion_mnist"``: built in. Read from the official IDX files that the Debian package
  ``dataset-fashion-mnist`` installs in ``/usr/share/datasets/fashion-mnist/`` (override the
  directory with the environment variable ``HF_UNLEARN_FASHION_MNIST_DIR``). Where those files
  are absent, the Hub copy ``zalando-datasets/fashion_mnist`` is loaded instead.
* ``"fashion_mnist_100"``: built in, 100 classes made from the same IDX files: each image is two
  Fashion-MNIST items side by side (28x56 grey), class ``10 * left + right``, named ``"Coat | Bag"``.
  Seeded and stratified: 600 composites per class in ``train`` (from the train split's items only),
  100 per class in ``test`` (from the test split's items only). Forgetting "Coat | Bag" must keep
  "Coat | Sneaker" and "Shirt | Bag": a CIFAR-100-sized test with shared structure. The square
  presets' image processors resize it to 28x28 (each item then 14 pixels wide); pass a processor
  with ``{"height": 28, "width": 56}`` to keep every pixel.
* ``"digits"``: built in, scikit-learn's 8x8 digits (1,797 images, ships inside the wheel), split
  80/20 with a fixed seed. Good for fast tests.
* a local directory (an ``imagefolder`` layout such as ``root/train/<class>/x.png``, a directory
  of parquet files, or a directory written by ``Dataset.save_to_disk``), a local ``.parquet``
  file, or any Hub dataset id (``"uoft-cs/cifar10"``, ``"ylecun/mnist"``, ...).

Example:

```py
>>> from transformers import ViTImageProcessor
>>> from hf_unlearn.data.loading import load_image_dataset, build_dataloader
>>> data = load_image_dataset("fashion_mnist", split="train")
>>> data.num_classes, data.class_names[:2]
(10, ['T-shirt/top', 'Trouser'])
>>> processor = ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.286], image_std=[0.353])
>>> loader = build_dataloader(data, processor, num_channels=1, batch_size=128, shuffle=True, seed=0)
>>> batch = next(iter(loader))
>>> batch["pixel_values"].shape, batch["labels"].shape
(torch.Size([128, 1, 28, 28]), torch.Size([128]))
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

import functools
import gzip
import io
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image as PILImage

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEBIAN_DIR",
    "FASHION_MNIST_DIR_ENV",
    "FASHION_MNIST_HUB_ID",
    "BUILTIN_DATASETS",
    "ImageClassificationData",
    "ImageDecodeError",
    "load_image_dataset",
    "wrap_dataset",
    "make_transform",
    "check_processor_fits",
    "to_tensor_dataset",
    "build_dataloader",
    "check_labels_match",
    "class_subset",
    "subsample",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_DIR_ENV = "HF_UNLEARN_FASHION_MNIST_DIR"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
BUILTIN_DATASETS = ("fashion_mnist", "fashion_mnist_100", "digits")
# Composites per class of the built-in fashion_mnist_100 (600 x 100 = 60,000 like Fashion-MNIST's train
# split, 100 x 100 = 10,000 like its test split) and the fixed seed that draws them.
FASHION_MNIST_100_PER_CLASS = {"train": 600, "test": 100}
FASHION_MNIST_100_SEED = 0

# A batch of decoded/processed images can be this large before build_dataloader(preprocess="auto")
# stops caching the whole split as one tensor and processes batches on the fly instead
# (Fashion-MNIST at 1x28x28 is ~190 MB; at 3x224x224 for a ViT-B/16 it would be ~36 GB).
DEFAULT_MAX_CACHED_BYTES = 2 * 1024**3


class ImageDecodeError(ValueError):
    """An image in the dataset could not be decoded; the message names the row."""


@dataclass
class ImageClassificationData:
    """A dataset plus what is needed to turn its rows into model inputs.

    Attributes:
        dataset: a `datasets.Dataset` (map-style) or `datasets.IterableDataset` (streaming).
        image_column: name of the column holding the images (a `datasets.Image` feature).
        label_column: name of the column holding integer class ids (a `datasets.ClassLabel`).
        class_names: class names in id order (`class_names[i]` is the name of label ``i``).
        num_classes: ``len(class_names)``.
        source: what was passed to :func:`load_image_dataset`.
        split: the split that was loaded.
        streaming: whether ``dataset`` is an `IterableDataset`.
        num_rows: number of examples, where known (None for most streamed Hub datasets).
    """

    dataset: Any
    image_column: str
    label_column: str
    class_names: list
    num_classes: int
    source: str
    split: str
    streaming: bool = False
    num_rows: Optional[int] = None

    @property
    def id2label(self) -> dict:
        return dict(enumerate(self.class_names))

    @property
    def label2id(self) -> dict:
        return {name: i for i, name in enumerate(self.class_names)}

    def __bool__(self) -> bool:  # never falsy (nor an error) just because a stream has no length
        return True

    def __len__(self) -> int:
        if self.num_rows is None:
            raise TypeError(f"the streamed dataset {self.source!r} (split {self.split!r}) has no known length")
        return self.num_rows


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_image_dataset(
    source: str,
    split: str = "train",
    *,
    streaming: bool = False,
    image_column: Optional[str] = None,
    label_column: Optional[str] = None,
    revision: Optional[str] = None,
    data_files: Any = None,
    class_names: Optional[Sequence[str]] = None,
) -> ImageClassificationData:
    """Load an image-classification split and find its image and label columns.

    Args:
        source: ``"fashion_mnist"`` or ``"digits"`` (built in), a local directory or parquet file,
            or a Hub dataset id.
        split: split name (``"train"``, ``"test"``, or any split of the source, including slices
            such as ``"train[:10%]"`` for non-built-in sources).
        streaming: return a `datasets.IterableDataset` instead of a map-style `Dataset`.
        image_column, label_column: override the automatic column detection.
        revision: Hub revision (branch, tag or commit) of a Hub dataset.
        data_files: passed to `datasets.load_dataset` for local/Hub sources.
        class_names: class names for a label column that is not a `ClassLabel` (plain integers,
            or strings that are cast to ids in this order).

    Example:

    ```py
    >>> data = load_image_dataset("digits", split="test")
    >>> data.image_column, data.label_column, data.num_classes
    ('image', 'label', 10)
    >>> cifar = load_image_dataset("uoft-cs/cifar100", split="test", label_column="coarse_label")
    ```
    """
    if source in BUILTIN_DATASETS:
        if data_files is not None:
            raise ValueError(f"data_files= does not apply to the built-in dataset {source!r}")
        if source == "fashion_mnist":
            dataset, from_hub = _load_fashion_mnist(split, streaming=streaming, revision=revision)
            if from_hub:  # the Hub fallback was used: streamed already where asked for
                return _wrap(dataset, source, split, streaming, image_column, label_column, class_names)
        elif source == "fashion_mnist_100":
            dataset = _builtin_fashion_mnist_100(split)
        else:
            dataset = _builtin_digits(split)
        num_rows = len(dataset)
        if streaming:
            # Several contiguous shards: order is unchanged when read by one process, and
            # DataLoader workers (or accelerate with dispatch_batches=False) can split them.
            dataset = dataset.to_iterable_dataset(num_shards=min(8, num_rows))
        data = _wrap(dataset, source, split, streaming, image_column, label_column, class_names)
        return replace(data, num_rows=num_rows)

    import datasets

    if os.path.isfile(source):
        ext = os.path.splitext(source)[1].lower()
        if ext != ".parquet":
            raise ValueError(
                f"don't know how to read the file {source!r}: pass a .parquet file, a directory "
                "(imagefolder or parquet files), or a Hub dataset id"
            )
        dataset = datasets.load_dataset(
            "parquet", data_files={split.split("[")[0]: source}, split=split, streaming=streaming
        )
    elif os.path.isdir(source) and _is_saved_to_disk(source):
        try:
            loaded = datasets.load_from_disk(source)
        except IndexError as err:  # datasets cannot concatenate zero arrow tables
            raise ValueError(f"the dataset saved in {source!r} holds no rows: nothing to train or evaluate on") from err
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not found in {source!r}; splits present: {sorted(loaded)}")
            loaded = loaded[split]
        dataset = loaded.to_iterable_dataset() if streaming else loaded
    else:
        # A local directory goes through load_dataset's own format inference (imagefolder,
        # parquet, a cloned Hub repo with its README configs, ...); anything else is a Hub id.
        kwargs = {"split": split, "streaming": streaming}
        if data_files is not None:
            kwargs["data_files"] = data_files
        if revision is not None and not os.path.isdir(source):
            kwargs["revision"] = revision
        dataset = datasets.load_dataset(source, **kwargs)
    return _wrap(dataset, source, split, streaming, image_column, label_column, class_names)


def wrap_dataset(
    dataset,
    *,
    image_column: Optional[str] = None,
    label_column: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    source: str = "<in-memory dataset>",
    split: str = "train",
) -> ImageClassificationData:
    """Wrap a `datasets.Dataset`/`IterableDataset` you already have (same column detection).

    Example:

    ```py
    >>> ds = datasets.load_dataset("uoft-cs/cifar100", split="train").select(range(1000))
    >>> data = wrap_dataset(ds)      # image column "img", label column "fine_label"
    ```
    """
    import datasets

    streaming = isinstance(dataset, datasets.IterableDataset)
    return _wrap(dataset, source, split, streaming, image_column, label_column, class_names)


def _is_saved_to_disk(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))
    )


def _wrap(dataset, source, split, streaming, image_column, label_column, class_names) -> ImageClassificationData:
    dataset = _resolved(dataset)
    features = dataset.features
    image_column = _find_image_column(features, image_column, source)
    dataset, label_column, names = _find_label_column(dataset, features, label_column, class_names, source)
    num_rows = None
    if not streaming:
        num_rows = len(dataset)
    else:
        info_splits = getattr(getattr(dataset, "info", None), "splits", None)
        base_split = split.split("[")[0]
        if info_splits and base_split in info_splits and "[" not in split:
            num_rows = info_splits[base_split].num_examples or None
    return ImageClassificationData(
        dataset=dataset, image_column=image_column, label_column=label_column, class_names=list(names),
        num_classes=len(names), source=str(source), split=split, streaming=streaming, num_rows=num_rows,
    )


def _resolved(dataset):
    # Some streamed datasets only know their features after reading a first example.
    if getattr(dataset, "features", None) is None and hasattr(dataset, "_resolve_features"):
        dataset = dataset._resolve_features()
    if getattr(dataset, "features", None) is None:
        raise ValueError("could not determine the columns (features) of the dataset")
    return dataset


def _find_image_column(features, image_column, source) -> str:
    from datasets import Image

    columns = list(features)
    if image_column is not None:
        if image_column not in features:
            raise ValueError(
                f"image column {image_column!r} not found in {source!r}; columns present: {columns}. "
                "Pass image_column= with one of them."
            )
        if not isinstance(features[image_column], Image):
            raise ValueError(
                f"column {image_column!r} of {source!r} is {features[image_column]!r}, not an image "
                "(datasets.Image) column; cast it with dataset.cast_column(name, datasets.Image())"
            )
        return image_column
    candidates = [name for name, feature in features.items() if isinstance(feature, Image)]
    for preferred in ("image", "img"):
        if preferred in candidates:
            return preferred
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(
            f"no image column (datasets.Image feature) found in {source!r}; columns present: {columns}. "
            "Pass image_column= naming the column with the images."
        )
    raise ValueError(
        f"several image columns in {source!r}: {candidates}; pass image_column= to choose one"
    )


def _find_label_column(dataset, features, label_column, class_names, source):
    from datasets import ClassLabel, Value

    columns = list(features)
    if label_column is None:
        candidates = [name for name, feature in features.items() if isinstance(feature, ClassLabel)]
        # cifar100 has fine_label and coarse_label: the conventional "label" first, then the
        # fine labels (what "cifar100" means in papers), else the only ClassLabel there is.
        for preferred in ("label", "labels", "fine_label"):
            if preferred in candidates:
                label_column = preferred
                break
        else:
            if len(candidates) == 1:
                label_column = candidates[0]
            elif len(candidates) > 1:
                raise ValueError(
                    f"several label (ClassLabel) columns in {source!r}: {candidates}; "
                    "pass label_column= to choose one"
                )
            else:
                plain = [c for c in ("label", "labels") if c in features]
                if not plain:
                    raise ValueError(
                        f"no label column found in {source!r}: no datasets.ClassLabel column and no column "
                        f"named 'label'; columns present: {columns}. Pass label_column= naming the column "
                        "with the class ids (and class_names= if it is not a ClassLabel)."
                    )
                label_column = plain[0]
    elif label_column not in features:
        raise ValueError(
            f"label column {label_column!r} not found in {source!r}; columns present: {columns}. "
            "Pass label_column= with one of them."
        )

    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        if class_names is not None:
            if len(class_names) != len(names):
                raise ValueError(
                    f"class_names has {len(class_names)} names but column {label_column!r} of {source!r} "
                    f"has {len(names)} classes"
                )
            names = list(class_names)
            dataset = dataset.cast_column(label_column, ClassLabel(names=names))
        return dataset, label_column, names
    if class_names is None:
        raise ValueError(
            f"column {label_column!r} of {source!r} is {feature!r}, not a datasets.ClassLabel, so the class "
            "names are unknown. In Python pass class_names=[...] (in id order) to load_image_dataset; the "
            "command line has no such option: cast the column with dataset.cast_column(name, "
            "datasets.ClassLabel(names=[...])), save it (save_to_disk or to_parquet) and pass that as --dataset."
        )
    if not isinstance(feature, Value) or not (feature.dtype.startswith("int") or feature.dtype == "string"):
        raise ValueError(f"column {label_column!r} of {source!r} is {feature!r}: expected integers or strings")
    # ints are reinterpreted as ids, strings are looked up by name (datasets does both on cast).
    dataset = dataset.cast_column(label_column, ClassLabel(names=list(class_names)))
    return dataset, label_column, list(class_names)


# -- built-in datasets -------------------------------------------------------------------------


def _fashion_mnist_dir() -> str:
    return os.environ.get(FASHION_MNIST_DIR_ENV) or FASHION_MNIST_DEBIAN_DIR


def _load_fashion_mnist(split, *, streaming, revision):
    """Returns (dataset, from_hub): the Debian files' Dataset, or else the Hub copy."""
    if split not in ("train", "test"):
        raise ValueError(f"fashion_mnist has the splits 'train' and 'test', not {split!r}")
    directory = _fashion_mnist_dir()
    prefix = "train" if split == "train" else "t10k"
    images = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
    if os.path.isfile(images) and os.path.isfile(labels):
        return _builtin_fashion_mnist(images, labels, split), False

    import datasets

    try:
        kwargs = {"split": split, "streaming": streaming}
        if revision is not None:
            kwargs["revision"] = revision
        dataset = datasets.load_dataset(FASHION_MNIST_HUB_ID, **kwargs)
    except Exception as err:
        raise RuntimeError(
            f"Fashion-MNIST is not available: the IDX files {os.path.basename(images)} and "
            f"{os.path.basename(labels)} are not in {directory!r} (install the Debian package "
            f"'{FASHION_MNIST_DEBIAN_PACKAGE}': apt-get install -y {FASHION_MNIST_DEBIAN_PACKAGE}, or point "
            f"{FASHION_MNIST_DIR_ENV} at a directory holding them), and loading the Hub copy "
            f"'{FASHION_MNIST_HUB_ID}' failed: {type(err).__name__}: {err}"
        ) from err
    # Same class names whichever copy was read, so models trained on either agree on id2label.
    dataset = dataset.cast_column("label", datasets.ClassLabel(names=FASHION_MNIST_CLASSES))
    return dataset, True


@functools.lru_cache(maxsize=4)
def _builtin_fashion_mnist(images_path: str, labels_path: str, split: str):
    # Cached per process: building the 60k-row train split costs ~2 s, datasets are immutable.
    images, labels = _read_idx(images_path, labels_path)
    return _dataset_from_arrays(images, labels, FASHION_MNIST_CLASSES, split)


def fashion_mnist_100_class_names() -> list:
    """The 100 class names of ``fashion_mnist_100``: ``"<left item> | <right item>"``, id ``10 * left + right``."""
    return [f"{left} | {right}" for left in FASHION_MNIST_CLASSES for right in FASHION_MNIST_CLASSES]


def fashion_mnist_100_arrays(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int):
    """Composite images ``(100 * per_class, 28, 56)`` and labels from one Fashion-MNIST split's arrays.

    For class ``10 * l + r``: ``per_class`` left items drawn from class ``l`` and ``per_class`` right items
    from class ``r`` (without replacement within a class and side, where the split has enough), seeded.

    Example:

    ```py
    >>> x, y = fashion_mnist_100_arrays(images, labels, per_class=100, seed=0)
    >>> x.shape, int(y[0]), int(y[-1])
    ((10000, 28, 56), 0, 99)
    ```
    """
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    missing = [FASHION_MNIST_CLASSES[c] for c in range(10) if len(by_class[c]) == 0]
    if missing:
        raise ValueError(f"fashion_mnist_100 needs every Fashion-MNIST class in the source split; missing {missing}")
    out_images = np.empty((100 * per_class, images.shape[1], 2 * images.shape[2]), dtype=np.uint8)
    out_labels = np.repeat(np.arange(100, dtype=np.int64), per_class)
    for target in range(100):
        left, right = divmod(target, 10)
        pick = [rng.choice(by_class[c], size=per_class, replace=len(by_class[c]) < per_class) for c in (left, right)]
        rows = slice(target * per_class, (target + 1) * per_class)
        out_images[rows] = np.concatenate([images[pick[0]], images[pick[1]]], axis=2)
    order = rng.permutation(len(out_labels))  # classes interleaved, like a real split
    return out_images[order], out_labels[order]


@functools.lru_cache(maxsize=2)
def _builtin_fashion_mnist_100(split: str):
    if split not in FASHION_MNIST_100_PER_CLASS:
        raise ValueError(f"fashion_mnist_100 has the splits 'train' and 'test', not {split!r}")
    directory = _fashion_mnist_dir()
    prefix = "train" if split == "train" else "t10k"
    images_path = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
    if not (os.path.isfile(images_path) and os.path.isfile(labels_path)):
        raise RuntimeError(
            f"fashion_mnist_100 is built from the Fashion-MNIST IDX files, which are not in {directory!r}: install the "
            f"Debian package '{FASHION_MNIST_DEBIAN_PACKAGE}' (apt-get install -y {FASHION_MNIST_DEBIAN_PACKAGE}) or "
            f"point {FASHION_MNIST_DIR_ENV} at a directory holding them."
        )
    images, labels = _read_idx(images_path, labels_path)
    # Test composites are made from the test split's items only: no test image ever saw training.
    composite, target = fashion_mnist_100_arrays(images, labels, FASHION_MNIST_100_PER_CLASS[split],
                                                 FASHION_MNIST_100_SEED + (0 if split == "train" else 1))
    return _dataset_from_arrays(composite, target, fashion_mnist_100_class_names(), split)


def _read_idx(images_path: str, labels_path: str):
    """``(images uint8 (N, H, W), labels int64 (N,))`` from a pair of gzipped IDX files."""
    with gzip.open(images_path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{images_path} is not an IDX image file (magic {magic})")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    with gzip.open(labels_path, "rb") as f:
        raw = f.read()
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    if len(labels) != count:
        raise ValueError(f"{labels_path} has {len(labels)} labels for {count} images")
    return images, labels


@functools.lru_cache(maxsize=4)
def _builtin_digits(split: str):
    if split not in ("train", "test"):
        raise ValueError(f"digits has the splits 'train' and 'test', not {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    return _dataset_from_arrays(images[chosen], digits.target[chosen].astype(np.int64),
                                [str(i) for i in range(10)], split)


def _png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 HxW (grey) or HxWx3 (RGB) array as PNG.

    Written by hand because PIL's encoder costs ~50 us per tiny image (3 s for Fashion-MNIST
    train). zlib level 0 ("stored") skips compression: a 28x28 image takes ~840 bytes instead of
    ~525, and building the 60k split takes well under a second. The output is an ordinary PNG
    that PIL decodes back bit-exactly.
    """
    height, width = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2
    rows = image.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")


def _dataset_from_arrays(images: np.ndarray, labels: np.ndarray, names: Sequence[str], split: str):
    """A real `datasets.Dataset` with {"image": Image(), "label": ClassLabel} from numpy arrays.

    The Arrow table is built directly (PNG bytes in the Image feature's {bytes, path} struct):
    going through Dataset.from_dict would encode every example in Python once more.
    """
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    encoded = [_png_bytes(image) for image in images]
    image_array = pa.StructArray.from_arrays(
        [pa.array(encoded, type=pa.binary()), pa.nulls(len(encoded), type=pa.string())], names=["bytes", "path"]
    )
    table = pa.table({"image": image_array, "label": pa.array(labels, type=pa.int64())})
    table = table.cast(features.arrow_schema)
    return datasets.Dataset(
        InMemoryTable(table), info=datasets.DatasetInfo(features=features), split=datasets.NamedSplit(split)
    )


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def check_processor_fits(image_processor, num_channels: int) -> None:
    """Raise a clear error if ``image_processor`` cannot produce inputs with ``num_channels``.

    The images themselves are converted to the model's mode (grey "L" for 1 channel, "RGB" for
    3); what cannot be fixed here is a processor whose normalisation has the wrong number of
    channels, e.g. an RGB checkpoint's processor used for a 1-channel model.
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


def _raw_images(dataset, image_column: str, label_column: str):
    """The two needed columns, with images left undecoded so that make_transform decodes them
    itself (a broken file then raises an error naming its row, not a bare PIL error)."""
    from datasets import Image

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
    from tqdm.auto import tqdm

    if data.streaming:
        raise TypeError("to_tensor_dataset needs a map-style dataset; for streaming data use build_dataloader")
    transform = make_transform(image_processor, data, num_channels=num_channels)
    dataset = _raw_images(data.dataset, data.image_column, data.label_column)
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


class _TensorBatches(torch.utils.data.Dataset):
    """TensorDataset view that yields ``{"pixel_values", "labels"}`` dicts.

    ``__getitems__`` lets the DataLoader fetch a whole batch with one fancy-indexing op instead of
    one ``__getitem__`` per example (torch uses it when present; accelerate keeps the dataset).
    """

    def __init__(self, tensors: torch.utils.data.TensorDataset):
        self.tensors = tensors
        self.pixel_values, self.labels = tensors.tensors

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


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


def _collate(items):
    """Batches arrive as one dict (from ``__getitems__``) or as a list of per-example dicts."""
    if isinstance(items, dict):
        return items
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


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
        stream = _raw_images(data.dataset, data.image_column, data.label_column)
        if shuffle:
            stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        stream = stream.map(
            transform, batched=True, batch_size=max(batch_size, 256), with_indices=True,
            remove_columns=[data.image_column, data.label_column],
        )
        return torch.utils.data.DataLoader(
            stream, batch_size=batch_size, collate_fn=_collate, drop_last=drop_last, num_workers=num_workers,
        )

    if preprocess not in ("auto", "ahead", "on_the_fly"):
        raise ValueError(f"preprocess must be 'auto', 'ahead' or 'on_the_fly', not {preprocess!r}")
    if preprocess == "auto":
        transform = make_transform(image_processor, data, num_channels=num_channels)
        first = _raw_images(data.dataset.select(range(min(1, len(data.dataset)))), data.image_column,
                            data.label_column)
        example_bytes = transform(first[:1], [0])["pixel_values"][0].numel() * 4
        preprocess = "ahead" if example_bytes * len(data.dataset) <= max_cached_bytes else "on_the_fly"
    if preprocess == "ahead":
        dataset = _TensorBatches(to_tensor_dataset(data, image_processor, num_channels=num_channels,
                                                   progress=progress))
    else:
        transform = make_transform(image_processor, data, num_channels=num_channels)
        dataset = _TransformedRows(_raw_images(data.dataset, data.image_column, data.label_column), transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
        collate_fn=_collate, num_workers=num_workers,
    )


# --------------------------------------------------------------------------------------------
# Checks and subsets
# --------------------------------------------------------------------------------------------


def check_labels_match(data: ImageClassificationData, model_config) -> None:
    """Raise if the dataset's class count differs from the model's; warn if the names differ.

    Example:

    ```py
    >>> check_labels_match(load_image_dataset("fashion_mnist", split="test"), model.config)
    ```
    """
    num_labels = model_config.num_labels
    if data.num_classes != num_labels:
        raise ValueError(
            f"the dataset {data.source!r} has {data.num_classes} classes but the model has num_labels={num_labels}. "
            f"Load the model with num_labels={data.num_classes} (and id2label from the dataset, plus "
            "ignore_mismatched_sizes=True for a pretrained head), or use the dataset it was trained on."
        )
    id2label = {int(k): v for k, v in (getattr(model_config, "id2label", None) or {}).items()}
    model_names = [id2label.get(i) for i in range(num_labels)]
    if model_names != list(data.class_names):
        differing = [(i, model_names[i], data.class_names[i]) for i in range(num_labels)
                     if model_names[i] != data.class_names[i]]
        warnings.warn(
            f"the model's id2label differs from the class names of {data.source!r} at {len(differing)} ids "
            f"(id, model, dataset): {differing[:5]}{' ...' if len(differing) > 5 else ''}",
            stacklevel=2,
        )


def _class_ids(data: ImageClassificationData, classes: Union[int, str, Iterable]) -> list:
    if isinstance(classes, (int, str, np.integer)):
        classes = [classes]
    ids = []
    for item in classes:
        if isinstance(item, str):
            if item not in data.class_names:
                raise ValueError(f"unknown class {item!r}; classes of {data.source!r}: {data.class_names}")
            ids.append(data.class_names.index(item))
        else:
            if not 0 <= int(item) < data.num_classes:
                raise ValueError(f"class id {item} out of range 0..{data.num_classes - 1}")
            ids.append(int(item))
    return sorted(set(ids))


def class_subset(data: ImageClassificationData, classes, keep: bool = True) -> ImageClassificationData:
    """Keep only (``keep=True``) or drop (``keep=False``) the rows of the given classes.

    ``classes`` are class ids or names. Labels keep their ids and the class list is unchanged (the
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
    labels = _label_array(data.dataset, data.label_column)
    mask = np.isin(labels, ids)
    indices = np.flatnonzero(mask if keep else ~mask)
    dataset = data.dataset.select(indices)
    return replace(data, dataset=dataset, num_rows=len(indices))


def _label_array(dataset, label_column: str) -> np.ndarray:
    if getattr(dataset, "_indices", None) is None:
        return dataset.data.column(label_column).to_numpy()
    return np.asarray(dataset.select_columns([label_column]).with_format("numpy")[label_column])


def subsample(data: ImageClassificationData, max_examples: Optional[int], seed: int = 0) -> ImageClassificationData:
    """At most ``max_examples`` rows: a seeded random subset (map-style, original order kept) or
    the first rows of a stream. ``None`` returns ``data`` unchanged. Used for quick runs/tests.
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
    """Number of batches per epoch for ``num_rows`` examples (helper for schedules)."""
    return num_rows // batch_size if drop_last else math.ceil(num_rows / batch_size)
