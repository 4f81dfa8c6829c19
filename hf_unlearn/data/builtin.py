"""The built-in offline datasets: Fashion-MNIST (IDX files), its 100-class composites, scikit-learn digits.

* ``"fashion_mnist"``: read from the official IDX files that the Debian package
  ``dataset-fashion-mnist`` installs in ``/usr/share/datasets/fashion-mnist/`` (override the
  directory with the environment variable ``HF_UNLEARN_FASHION_MNIST_DIR``). Where those files
  are absent, the Hub copy ``zalando-datasets/fashion_mnist`` is loaded instead.
* ``"fashion_mnist_100"``: 100 classes made from the same IDX files: each image is two
  Fashion-MNIST items side by side (28x56 grey), class ``10 * left + right``, named ``"Coat | Bag"``.
  Seeded and stratified: 600 composites per class in ``train`` (from the train split's items only),
  100 per class in ``test`` (from the test split's items only). Forgetting "Coat | Bag" must keep
  "Coat | Sneaker" and "Shirt | Bag": a CIFAR-100-sized test with shared structure. The square
  presets' image processors resize it to 28x28 (each item then 14 pixels wide); pass a processor
  with ``{"height": 28, "width": 56}`` to keep every pixel.
* ``"digits"``: scikit-learn's 8x8 digits (1,797 images, ships inside the wheel), split 80/20 with a
  fixed seed. Good for fast tests.

Each is served as a real `datasets.Dataset` (``{"image": Image(), "label": ClassLabel}``) by
:func:`load_builtin`, which :func:`hf_unlearn.data.loading.load_image_dataset` calls. The IDX reader
needs only numpy, so it also serves machines without ``datasets`` (``hf_unlearn.benchmark.images``)::

    from hf_unlearn.data.builtin import read_fashion_mnist, read_idx

    images, labels = read_fashion_mnist("test")    # uint8 (10000, 28, 28), int64 (10000,)
    raw = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")  # uint8 (10000,)
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "BUILTIN_DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEBIAN_DIR",
    "FASHION_MNIST_DIR_ENV",
    "FASHION_MNIST_HUB_ID",
    "dataset_from_arrays",
    "fashion_mnist_100_arrays",
    "fashion_mnist_100_class_names",
    "fashion_mnist_dir",
    "fashion_mnist_files",
    "load_builtin",
    "read_fashion_mnist",
    "read_idx",
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


def load_builtin(name: str, split: str, *, streaming: bool = False, revision: Optional[str] = None):
    """``(dataset, num_rows)`` for the built-in dataset ``name`` (one of :data:`BUILTIN_DATASETS`).

    ``dataset`` is a `datasets.Dataset`, or with ``streaming=True`` a `datasets.IterableDataset`.
    ``num_rows`` is None only when Fashion-MNIST's IDX files are missing and the Hub copy was loaded
    instead (``revision`` applies to that copy only); its length then comes from the Hub's metadata.

    Example:

    ```py
    >>> dataset, num_rows = load_builtin("digits", "test")
    >>> num_rows, dataset.features["label"].names[:3]
    (360, ['0', '1', '2'])
    ```
    """
    if name == "fashion_mnist":
        files = fashion_mnist_files(split)
        if not all(os.path.isfile(path) for path in files):
            return _fashion_mnist_from_hub(split, streaming=streaming, revision=revision), None
        dataset = _builtin_fashion_mnist(*files, split)
    elif name == "fashion_mnist_100":
        dataset = _builtin_fashion_mnist_100(split)
    elif name == "digits":
        dataset = _builtin_digits(split)
    else:
        raise ValueError(f"{name!r} is not a built-in dataset; built in: {', '.join(BUILTIN_DATASETS)}")
    num_rows = len(dataset)
    if streaming:
        # Several contiguous shards: order is unchanged when read by one process, and
        # DataLoader workers (or accelerate with dispatch_batches=False) can split them.
        dataset = dataset.to_iterable_dataset(num_shards=min(8, num_rows))
    return dataset, num_rows


# -- Fashion-MNIST's IDX files -------------------------------------------------------------------


def fashion_mnist_dir() -> str:
    """The folder holding Fashion-MNIST's IDX files: ``$HF_UNLEARN_FASHION_MNIST_DIR``, else the Debian one."""
    return os.environ.get(FASHION_MNIST_DIR_ENV) or FASHION_MNIST_DEBIAN_DIR


def fashion_mnist_files(split: str, directory: Optional[str] = None) -> tuple[str, str]:
    """``(images_path, labels_path)`` of a Fashion-MNIST split's IDX files (default folder: :func:`fashion_mnist_dir`).

    Example:

    ```py
    >>> fashion_mnist_files("test", "/data/fm")
    ('/data/fm/t10k-images-idx3-ubyte.gz', '/data/fm/t10k-labels-idx1-ubyte.gz')
    ```
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"fashion_mnist has the splits 'train' and 'test', not {split!r}")
    directory = directory or fashion_mnist_dir()
    return (os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
            os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))


def read_idx(path: str) -> np.ndarray:
    """The array stored in an IDX file of unsigned bytes (gzipped when the name ends in ``.gz``).

    IDX (the MNIST format): two zero bytes, a type byte (0x08 = unsigned byte), the number of
    dimensions, one big-endian uint32 per dimension, then the data. The array is writable (a copy
    of the file's bytes), so ``torch.from_numpy`` may share it.

    Example:

    ```py
    >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    >>> images.shape, images.dtype
    ((10000, 28, 28), dtype('uint8'))
    ```
    """
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = bytearray(f.read())
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {bytes(raw[:4]).hex()}, expected "
                         "0000 08 <ndim>)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) < header + size:
        raise ValueError(f"{path} is truncated: its header declares shape {shape} ({size} bytes) but it holds "
                         f"{len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(shape)


def read_fashion_mnist(split: str = "train", directory: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """A Fashion-MNIST split read from its IDX files: ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    Needs only numpy (no ``datasets``). ``directory`` defaults to :func:`fashion_mnist_dir`.

    Example:

    ```py
    >>> images, labels = read_fashion_mnist("train")
    >>> images.shape, int(labels[0])     # the first training image is an ankle boot
    ((60000, 28, 28), 9)
    ```
    """
    images_path, labels_path = fashion_mnist_files(split, directory)
    missing = [path for path in (images_path, labels_path) if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found: {', '.join(missing)}; install the Debian package "
            f"'{FASHION_MNIST_DEBIAN_PACKAGE}' (apt-get install -y {FASHION_MNIST_DEBIAN_PACKAGE}) or point "
            f"{FASHION_MNIST_DIR_ENV} at a directory holding them."
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path} ({labels.shape}) is not the label file for {images_path} ({images.shape})")
    return images, labels.astype(np.int64)


def _fashion_mnist_from_hub(split: str, *, streaming: bool, revision: Optional[str]):
    """The Hub copy of Fashion-MNIST, for machines without the IDX files."""
    import datasets  # heavy (pyarrow, ~1 s): only imported when data is really loaded

    images, labels = fashion_mnist_files(split)
    try:
        kwargs = {"split": split, "streaming": streaming}
        if revision is not None:
            kwargs["revision"] = revision
        dataset = datasets.load_dataset(FASHION_MNIST_HUB_ID, **kwargs)
    except Exception as err:
        raise RuntimeError(
            f"Fashion-MNIST is not available: the IDX files {os.path.basename(images)} and "
            f"{os.path.basename(labels)} are not in {fashion_mnist_dir()!r} (install the Debian package "
            f"'{FASHION_MNIST_DEBIAN_PACKAGE}': apt-get install -y {FASHION_MNIST_DEBIAN_PACKAGE}, or point "
            f"{FASHION_MNIST_DIR_ENV} at a directory holding them), and loading the Hub copy "
            f"'{FASHION_MNIST_HUB_ID}' failed: {type(err).__name__}: {err}"
        ) from err
    # Same class names whichever copy was read, so models trained on either agree on id2label.
    return dataset.cast_column("label", datasets.ClassLabel(names=FASHION_MNIST_CLASSES))


@functools.lru_cache(maxsize=4)
def _builtin_fashion_mnist(images_path: str, labels_path: str, split: str):
    # Cached per process (keyed on the files, so a changed $HF_UNLEARN_FASHION_MNIST_DIR is seen):
    # building the 60k-row train split costs ~2 s, and datasets are immutable.
    images, labels = read_fashion_mnist(split, os.path.dirname(images_path))
    return dataset_from_arrays(images, labels, FASHION_MNIST_CLASSES, split)


# -- fashion_mnist_100 ---------------------------------------------------------------------------


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
    try:
        images, labels = read_fashion_mnist(split)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"fashion_mnist_100 is built from the Fashion-MNIST IDX files. {err}") from None
    # Test composites are made from the test split's items only: no test image ever saw training.
    composite, target = fashion_mnist_100_arrays(images, labels, FASHION_MNIST_100_PER_CLASS[split],
                                                 FASHION_MNIST_100_SEED + (0 if split == "train" else 1))
    return dataset_from_arrays(composite, target, fashion_mnist_100_class_names(), split)


# -- digits --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _builtin_digits(split: str):
    if split not in ("train", "test"):
        raise ValueError(f"digits has the splits 'train' and 'test', not {split!r}")
    # scikit-learn is imported here, not at the top: it takes ~1 s and only this split needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    return dataset_from_arrays(images[chosen], digits.target[chosen].astype(np.int64),
                               [str(i) for i in range(10)], split)


# -- arrays -> datasets.Dataset ------------------------------------------------------------------


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


def dataset_from_arrays(images: np.ndarray, labels: np.ndarray, names: Sequence[str], split: str):
    """A real `datasets.Dataset` with ``{"image": Image(), "label": ClassLabel(names)}`` from numpy arrays.

    ``images`` are uint8 ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB). The Arrow table is built
    directly (PNG bytes in the Image feature's ``{bytes, path}`` struct): going through
    ``Dataset.from_dict`` would encode every example in Python once more.

    Example:

    ```py
    >>> ds = dataset_from_arrays(np.zeros((4, 8, 8), np.uint8), np.arange(4), ["a", "b", "c", "d"], "train")
    >>> ds[3]["label"], ds[3]["image"].size
    (3, (8, 8))
    ```
    """
    # heavy (pyarrow, ~1 s): imported only when a dataset is built, so that read_idx needs numpy only
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
