"""Load an image-classification split (built in, local or Hub) and find its image and label columns.

Every loader returns an :class:`ImageClassificationData`: a `datasets.Dataset` (or, with
``streaming=True``, a `datasets.IterableDataset`) plus the names of its image and label columns
and its class names. The rest of the pipeline lives next door: ``data.transforms`` (decoding, the
model's image processor, ``to_tensor_dataset``), ``data.loaders`` (``build_dataloader``, class
subsets, subsampling), ``data.builtin`` (the offline sets) and ``data.tensors``.

Sources understood by :func:`load_image_dataset`:

* ``"fashion_mnist"``, ``"fashion_mnist_100"``, ``"digits"``: built in (see
  :mod:`hf_unlearn.data.builtin`; Fashion-MNIST is read from the Debian package's IDX files).
* a local directory (an ``imagefolder`` layout such as ``root/train/<class>/x.png``, a directory
  of parquet files, or a directory written by ``Dataset.save_to_disk``), a local ``.parquet``
  file, or any Hub dataset id (``"uoft-cs/cifar10"``, ``"ylecun/mnist"``, ...).

Example:

```py
>>> from transformers import ViTImageProcessor
>>> from hf_unlearn.data.loading import load_image_dataset
>>> from hf_unlearn.data.loaders import build_dataloader
>>> data = load_image_dataset("fashion_mnist", split="train")
>>> data.num_classes, data.class_names[:2]
(10, ['T-shirt/top', 'Trouser'])
>>> processor = ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.286], image_std=[0.353])
>>> loader = build_dataloader(data, processor, num_channels=1, batch_size=128, shuffle=True, seed=0)
>>> batch = next(iter(loader))
>>> batch["pixel_values"].shape, batch["labels"].shape
(torch.Size([128, 1, 28, 28]), torch.Size([128]))
```

``datasets`` is imported inside the functions that need it: it takes about a second to import
(pyarrow), and importing this module (for ``ImageClassificationData``, say) must not cost that;
``import hf_unlearn.evaluation`` stays free of it (``tests/test_metrics.py``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

from .builtin import BUILTIN_DATASETS, load_builtin

__all__ = [
    "ImageClassificationData",
    "check_labels_match",
    "load_image_dataset",
    "wrap_dataset",
]


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
        source: ``"fashion_mnist"``, ``"fashion_mnist_100"`` or ``"digits"`` (built in), a local directory or parquet file,
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
        dataset, num_rows = load_builtin(source, split, streaming=streaming, revision=revision)
        data = _wrap(dataset, source, split, streaming, image_column, label_column, class_names)
        # num_rows is None for the Hub copy of Fashion-MNIST: _wrap then took it from the Hub's metadata.
        return data if num_rows is None else replace(data, num_rows=num_rows)

    import datasets  # heavy: see the module docstring

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
    import datasets  # heavy: see the module docstring

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
    from datasets import Image  # heavy: see the module docstring

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
    from datasets import ClassLabel, Value  # heavy: see the module docstring

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

