"""The demo's logic as plain Python: no Gradio here, so that it is unit-tested and reusable.

:class:`UnlearnDemo` wraps an :class:`~hf_unlearn.UnlearnAdapter` and a few test images of the
dataset it was trained on, and answers what the app asks:

- :meth:`~UnlearnDemo.predict`: one image in, the base and the unlearned model's top-k out, from ONE
  forward pass with the per-sample selection (row "nothing" for the base copy, the chosen set for
  the other);
- :meth:`~UnlearnDemo.accuracy`: per-class accuracy of both models on a small test sample, as rows
  for a bar chart, plus forget accuracy (FA) and retain accuracy (RA) of the chosen set;
- :meth:`~UnlearnDemo.filter_map`: the filter map (``1 - alpha``) of the chosen rows and of their
  product, drawn by :func:`hf_unlearn.explain.plots.plot_filter_maps`;
- :meth:`~UnlearnDemo.export_zip` / :meth:`~UnlearnDemo.push`: ``UnlearnAdapter.export`` as a zip
  (with our model card) or pushed to the Hub with :func:`hf_unlearn.hub.core.push_exported`.

Bad input (an unknown class, an empty set, an image of the wrong mode or size) raises
:class:`DemoInputError` with a message that says what to do.

Example:

```py
>>> demo = UnlearnDemo.from_pretrained("runs/quickstart/adapter")       # dataset read from its report
>>> demo.predict(demo.gallery()[0][0], ["Coat"])["unlearned"][0]
{'label': 'Shirt', 'class_id': 6, 'score': 0.61}
```
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["DemoInputError", "UnlearnDemo", "check_image", "recorded_dataset", "MAX_SIDE", "MIN_SIDE", "MAX_ASPECT"]

# Image checks. The image processor resizes anything to the model's input: refuse what that
# resize cannot turn into a fair input (a few pixels, a huge upload, a strip).
MIN_SIDE = 4
MAX_SIDE = 4096
MAX_ASPECT = 4.0
# 8-bit grey or colour; the rest (16/32-bit integer, float, CMYK, Lab, ...) has no unambiguous
# mapping onto the pixels the model was trained on.
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
Progress = Optional[Callable[[float, str], Any]]


class DemoInputError(ValueError):
    """An input the demo cannot use; the message says what to change."""


# ------------------------------------------------------------------------------------ inputs


def check_image(image: Any, num_channels: int = 3):
    """The image as a PIL image in the model's mode ("L" for 1 channel, else "RGB").

    Accepts a PIL image or a uint8 array (H x W, H x W x 1/3/4). Raises :class:`DemoInputError`
    for no image, another type, a mode that is not 8-bit grey or colour, a side under
    ``MIN_SIDE`` or over ``MAX_SIDE`` pixels, or an aspect ratio over ``MAX_ASPECT``.
    """
    import numpy as np
    from PIL import Image

    if image is None:
        raise DemoInputError("No image: upload one, or pick one from the gallery.")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise DemoInputError(f"An image array must be uint8 (0..255), got {image.dtype}: scale and convert it.")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise DemoInputError(f"An image array must be H x W or H x W x 1/3/4, got shape {tuple(image.shape)}.")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise DemoInputError(f"Expected an image (PIL or uint8 array), got {type(image).__name__}.")
    if image.mode not in IMAGE_MODES:
        raise DemoInputError(
            f"Images of mode {image.mode!r} are not supported: the model takes 8-bit grey or colour "
            f"({', '.join(IMAGE_MODES)}). Convert it first, e.g. image.convert('RGB')."
        )
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise DemoInputError(f"The image is {w}x{h} pixels: each side needs at least {MIN_SIDE}.")
    if max(w, h) > MAX_SIDE:
        raise DemoInputError(f"The image is {w}x{h} pixels: each side may have at most {MAX_SIDE}; resize it first.")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise DemoInputError(
            f"The image is {w}x{h} pixels: squeezing it into the model's square input would distort it "
            f"(aspect ratio over {MAX_ASPECT:g}); crop it first."
        )
    mode = "L" if num_channels == 1 else "RGB"
    if image.mode in ("P", "PA", "LA", "RGBA"):  # composite transparency on white, as a viewer shows it
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


def recorded_dataset(folder: Union[str, os.PathLike]) -> Optional[str]:
    """The dataset an adapter folder records: its report / untraining metrics, else its training config."""
    from ..hub.cards import REPORT_FILENAMES

    folder = Path(folder)
    for name in REPORT_FILENAMES:
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("dataset"), str) and data["dataset"]:
                return data["dataset"]
    config = folder / "untraining_config.yaml"
    if config.is_file():
        import yaml

        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("dataset"), str):
            return data["dataset"]
    return None


# -------------------------------------------------------------------------------------- demo


class UnlearnDemo:
    """The demo's state and functions for one adapter (see the module docstring).

    Args:
        adapter: the :class:`~hf_unlearn.UnlearnAdapter` (with its image processor).
        data: the test split (an :class:`hf_unlearn.data.loading.ImageClassificationData`) for the gallery
            and the accuracy chart, or None (then only uploads work).
        source: the adapter's folder or Hub id (for the exported model's card).
        gallery_per_class: gallery images per class.
        eval_per_class: test images per class for the accuracy chart.
    """

    def __init__(self, adapter, data=None, *, source: Optional[str] = None, gallery_per_class: int = 3,
                 eval_per_class: int = 20, report: Any = None, workdir: Union[None, str, os.PathLike] = None):
        if adapter.image_processor is None:
            raise ValueError("The demo needs the adapter's image processor: save it with the adapter "
                             "(UnlearnAdapter.attach(..., image_processor=...)).")
        self.adapter = adapter.eval()
        self.data = data
        self.source = source
        self.report = report
        self.gallery_per_class = gallery_per_class
        self.eval_per_class = eval_per_class
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="hf_unlearn-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._rows: Optional[dict[int, list[int]]] = None
        self._eval: Optional[tuple[Any, Any, Any]] = None  # pixel_values, labels, base predictions
        self._maps = None
        if data is not None:
            from ..data.loading import check_labels_match

            check_labels_match(data, adapter.base_model.config)

    # ----------------------------------------------------------------------------- building

    @classmethod
    def from_pretrained(cls, adapter: str, *, dataset: Optional[str] = None, split: str = "test",
                        base_model: Optional[str] = None, revision: Optional[str] = None, token=None,
                        **kwargs) -> "UnlearnDemo":
        """Load the adapter (a folder or Hub id) and the test split of ``dataset`` (default: the one
        the adapter records in its report or training config).

        Example:

        ```py
        >>> demo = UnlearnDemo.from_pretrained("me/resnet-fashion-wf", dataset="fashion_mnist")
        ```
        """
        from ..adapter import UnlearnAdapter, _resolve_adapter_folder
        from ..data.loading import load_image_dataset

        folder = _resolve_adapter_folder(adapter, revision=revision, token=token)
        dataset = dataset or recorded_dataset(folder)
        if not dataset:
            raise DemoInputError(
                f"The adapter {adapter} records no dataset (no report.json, untraining_metrics.json or "
                "untraining_config.yaml naming one): pass --dataset (e.g. fashion_mnist, or a Hub dataset id)."
            )
        model = UnlearnAdapter.from_pretrained(folder, base_model=base_model, token=token)
        data = load_image_dataset(dataset, split=split)
        from ..hub.cards import REPORT_FILENAMES

        report = next((folder / n for n in REPORT_FILENAMES if (folder / n).is_file()), None)
        return cls(model, data, source=str(adapter), report=report, **kwargs)

    # ------------------------------------------------------------------------------ classes

    @property
    def class_names(self) -> list[str]:
        return [self.adapter.id2label[i] for i in range(self.adapter.num_classes)]

    def forget_ids(self, forget: Union[None, str, int, Iterable[Union[str, int]]], *, allow_empty: bool = True) -> list[int]:
        """Class ids of ``forget`` (names or ids). Raises :class:`DemoInputError` for an unknown class,
        and for an empty set unless ``allow_empty``."""
        from ..tuners.weight_filter import resolve_class

        if forget is None or isinstance(forget, (str, int)):
            forget = [] if forget in (None, "") else [forget]
        ids = []
        for ref in forget:
            try:
                ids.append(resolve_class(ref, self.adapter.num_classes, self.adapter.label2id))
            except (ValueError, TypeError) as err:
                raise DemoInputError(str(err)) from None
        if not ids and not allow_empty:
            raise DemoInputError("Choose at least one class to forget.")
        return sorted(set(ids))

    # ------------------------------------------------------------------------------ gallery

    def _class_rows(self) -> dict[int, list[int]]:
        """Row indices of the test split per class: the first ``max(gallery, eval)`` of each."""
        if self._rows is None:
            if self.data is None:
                raise DemoInputError("No dataset was loaded: start the demo with --dataset to get a gallery and the chart.")
            import numpy as np

            labels = np.asarray(self.data.dataset[self.data.label_column])
            keep = max(self.gallery_per_class, self.eval_per_class)
            self._rows = {c: np.flatnonzero(labels == c)[:keep].tolist() for c in range(self.adapter.num_classes)}
        return self._rows

    def _image(self, row: int):
        return self.data.dataset[int(row)][self.data.image_column]

    def gallery(self) -> list[tuple[Any, str]]:
        """``(PIL image, caption)`` for the first ``gallery_per_class`` test images of each class."""
        out = []
        for c, rows in self._class_rows().items():
            for row in rows[: self.gallery_per_class]:
                out.append((self._image(row), self.class_names[c]))
        return out

    # ----------------------------------------------------------------------------- predict

    @property
    def _num_channels(self) -> int:
        return int(getattr(self.adapter.base_model.config, "num_channels", 3))

    def _pixels(self, images: Sequence[Any]):
        return self.adapter.image_processor(list(images), return_tensors="pt")["pixel_values"]

    def _forward(self, pixel_values, ids: list[int]):
        """Logits of the base model and the model without ``ids`` in ONE pass: the batch twice, the
        first copy with no row, the second with the rows of ``ids`` (the per-sample selection)."""
        import torch

        from ..tuners.weight_filter import per_sample

        n = pixel_values.shape[0]
        forget = per_sample([None] * n + [ids or None] * n)
        with torch.no_grad():
            logits = self.adapter(pixel_values=torch.cat([pixel_values, pixel_values]), forget=forget).logits
        return logits[:n], logits[n:]

    def predict(self, image: Any, forget: Any, top_k: int = 3) -> dict[str, Any]:
        """Top-k of the base and of the unlearned model for one image.

        Returns ``{"forget": [names], "base": [...], "unlearned": [...]}``, each prediction a
        ``{"label", "class_id", "score"}`` dict, best first. An empty ``forget`` gives two equal lists.
        """
        ids = self.forget_ids(forget)
        if not isinstance(top_k, int) or top_k < 1:
            raise DemoInputError(f"top_k must be a positive integer, got {top_k!r}.")
        image = check_image(image, self._num_channels)
        base, unlearned = self._forward(self._pixels([image]), ids)
        return {"forget": [self.class_names[i] for i in ids], "base": self._top(base[0], top_k),
                "unlearned": self._top(unlearned[0], top_k)}

    def _top(self, logits, k: int) -> list[dict]:
        probs = logits.softmax(-1)
        scores, ids = probs.topk(min(k, probs.shape[-1]))
        return [{"label": self.class_names[i], "class_id": i, "score": s} for s, i in zip(scores.tolist(), ids.tolist())]

    # ---------------------------------------------------------------------------- accuracy

    def _eval_sample(self, progress: Progress = None, batch_size: int = 64):
        """Pixel values, labels and base predictions of the chart's sample (computed once)."""
        if self._eval is None:
            import torch

            if progress is not None:
                progress(0.0, "reading the test sample and classifying it with the base model (once)")
            rows = [r for c in sorted(self._class_rows()) for r in self._class_rows()[c][: self.eval_per_class]]
            labels = torch.tensor([int(self.data.dataset[r][self.data.label_column]) for r in rows])
            images = [check_image(self._image(r), self._num_channels) for r in rows]
            pixels = torch.cat([self._pixels(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
            with torch.no_grad():
                base = torch.cat([self.adapter(pixel_values=pixels[i:i + batch_size]).logits.argmax(-1)
                                  for i in range(0, len(rows), batch_size)])
            self._eval = (pixels, labels, base)
        return self._eval

    def accuracy(self, forget: Any, progress: Progress = None, batch_size: int = 64) -> dict[str, Any]:
        """Per-class accuracy (%) of the base and the unlearned model on the chart's test sample.

        Returns ``{"rows": [{"class", "model", "accuracy", "forgotten"}...], "forget_acc",
        "retain_acc", "base_forget_acc", "base_retain_acc", "n_samples", "forget"}``; ``rows`` has
        one entry per class and model ("base", "unlearned"), ready for a bar chart. ``progress``,
        if given, is called as ``progress(fraction, text)``.
        """
        import torch

        ids = self.forget_ids(forget, allow_empty=False)
        pixels, labels, base = self._eval_sample(progress)
        preds = []
        for start in range(0, len(labels), batch_size):
            if progress is not None:
                progress(start / len(labels), f"classifying the test sample without {', '.join(self.class_names[i] for i in ids)}")
            with torch.no_grad():
                preds.append(self.adapter(pixel_values=pixels[start:start + batch_size], forget=ids).logits.argmax(-1))
        preds = torch.cat(preds)
        if progress is not None:
            progress(1.0, "done")
        forgotten = torch.isin(labels, torch.tensor(ids))

        def pct(mask, p):
            return float((p[mask] == labels[mask]).float().mean() * 100) if bool(mask.any()) else None

        rows = []
        for c, name in enumerate(self.class_names):
            mask = labels == c
            for model, p in (("base", base), ("unlearned", preds)):
                rows.append({"class": name, "model": model, "accuracy": pct(mask, p), "forgotten": c in ids})
        return {"rows": rows, "forget": [self.class_names[i] for i in ids], "n_samples": int(len(labels)),
                "forget_acc": pct(forgotten, preds), "retain_acc": pct(~forgotten, preds),
                "base_forget_acc": pct(forgotten, base), "base_retain_acc": pct(~forgotten, base)}

    # --------------------------------------------------------------------------- filter map

    def filter_map_rows(self, forget: Any) -> tuple[list[str], dict[str, Any]]:
        """``(row names, {layer: (rows, units) array of 1 - alpha})`` for the chosen classes; for a set,
        one more row: the set's own (``1 - prod(alpha)``, the rows multiplied as at inference)."""
        import numpy as np

        from ..explain.filters import filter_maps

        ids = self.forget_ids(forget, allow_empty=False)
        if self._maps is None:
            self._maps = filter_maps(self.adapter)
        names = [self.class_names[i] for i in ids]
        chosen = {}
        for layer, m in self._maps.items():
            rows = m[ids]
            if len(ids) > 1:
                rows = np.vstack([rows, 1.0 - np.prod(1.0 - rows, axis=0, keepdims=True)])
            chosen[layer] = rows
        if len(ids) > 1:
            names.append(" × ".join(names))
        return names, chosen

    def filter_map(self, forget: Any, path: Union[str, os.PathLike, None] = None) -> Path:
        """A PNG of :meth:`filter_map_rows`, every filtered layer on one page, drawn by
        :func:`hf_unlearn.explain.plots.plot_filter_maps`. Returns the PNG's path."""
        from ..explain.plots import plot_filter_maps

        names, chosen = self.filter_map_rows(forget)
        folder = Path(tempfile.mkdtemp(prefix="filter-map-", dir=self.workdir))
        pages = plot_filter_maps(chosen, names, folder / "filter_map", per_page=max(1, len(chosen)))
        target = Path(path) if path is not None else folder / "filter_map.png"
        shutil.move(str(pages[0]), target)
        return target

    # ------------------------------------------------------------------------------ export

    def export_zip(self, forget: Any, out_dir: Union[str, os.PathLike, None] = None) -> Path:
        """``UnlearnAdapter.export(forget)`` saved with its image processor and model card, zipped.

        Returns the path of ``<name>.zip``, e.g. ``resnet-without-coat.zip``.
        """
        from ..hub.cards import write_exported_card

        ids = self.forget_ids(forget, allow_empty=False)
        model = self.adapter.export(forget=ids)
        label = "-".join(self.class_names[i] for i in ids)
        name = f"{model.config.model_type}-without-{label}".replace(" ", "_").replace("/", "_")
        base_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="export-", dir=self.workdir))
        folder = base_dir / name
        if folder.exists():
            shutil.rmtree(folder)
        model.save_pretrained(folder)
        self.adapter.image_processor.save_pretrained(folder)
        write_exported_card(model, folder, adapter_repo=self.source, report=self.report,
                            base_model=self.adapter.config.base_model_name_or_path)
        archive = shutil.make_archive(str(base_dir / name), "zip", root_dir=base_dir, base_dir=name)
        return Path(archive)

    def push(self, forget: Any, repo_id: str, token: Optional[str] = None):
        """Push ``export(forget)`` with its card to ``repo_id`` (:func:`hf_unlearn.hub.core.push_exported`).

        Returns the ``CommitInfo``. Raises :class:`hf_unlearn.hub.core.PushError` without a token.
        """
        from ..hub.cards import looks_like_hub_id
        from ..hub.core import push_exported, require_token

        ids = self.forget_ids(forget, allow_empty=False)
        if not repo_id or not looks_like_hub_id(repo_id) or "/" not in repo_id:
            raise DemoInputError(f"{repo_id!r} is not a Hub repo id: write it as ORG/NAME, e.g. me/resnet-without-coat.")
        token = require_token(token)  # before the export: no token, no work
        model = self.adapter.export(forget=ids)
        return push_exported(model, self.adapter.image_processor, repo_id, adapter_repo=self.source,
                             report=self.report, token=token, base_model=self.adapter.config.base_model_name_or_path)
