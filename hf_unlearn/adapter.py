"""``UnlearnAdapter``: the object users hold — a base classifier plus weight filters for every class."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

import torch
from peft import PeftModel, get_peft_model
from peft.utils import CONFIG_NAME
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from .adapter_files import check_adapter_tensors, check_peft_type, remove_stale_temp_folders, resolve_adapter_folder
from .hub.cards import write_adapter_card
from .hub.push import push_adapter
from .tuners.weight_filter import WeightFilterConfig, WeightFilterLayer, resolve_class


class UnlearnAdapter:
    """A transformers image classifier with a weight-filter adapter that can forget any class(es).

    Args:
        model (`peft.PeftModel`): the base model wrapped with a ``WeightFilterConfig`` adapter.
        image_processor (*optional*): the base model's image processor, used by ``predict``.

    Example:

    ```py
    >>> from hf_unlearn import UnlearnAdapter
    >>> adapter = UnlearnAdapter.from_pretrained("org/vit-cifar100-wf")      # base model + filters
    >>> out = adapter(pixel_values=x, forget="apple")                       # as if "apple" were unlearned
    >>> adapter.predict(images, forget=["apple", "pear"])                  # labels and scores
    >>> plain = adapter.export(forget="apple")                              # a plain transformers model
    >>> plain.save_pretrained("vit-without-apple")
    ```

    Concurrency: one adapter may serve calls from several threads (or asyncio tasks) at once,
    each with its own ``forget=``: the selection travels with the call in a context variable,
    never on the shared layers. A ``forgetting(...)`` context covers calls in its own thread/task
    only (a ``ThreadPoolExecutor`` worker does not see the submitting thread's context: pass
    ``forget=`` with the request). Training, ``export`` and loading or changing filters while
    other threads serve are not supported.
    """

    def __init__(self, model: PeftModel, image_processor: Any = None):
        if not isinstance(model, PeftModel) or not isinstance(model.peft_config.get(model.active_adapter), WeightFilterConfig):
            raise TypeError(
                "UnlearnAdapter wraps a peft.PeftModel with a WeightFilterConfig adapter; use "
                "UnlearnAdapter.attach(model) for a plain transformers model."
            )
        self.model = model
        self.image_processor = image_processor
        # `forget=` must NOT be added to PEFT's special_peft_forward_args: PEFT would strip it before
        # the base model runs, and the tuner's pre-hook on the base model is what reads it.

    # ------------------------------------------------------------------ creation and loading

    @classmethod
    def attach(
        cls,
        model: PreTrainedModel,
        config: Optional[WeightFilterConfig] = None,
        image_processor: Any = None,
        adapter_name: str = "default",
        **config_kwargs,
    ) -> "UnlearnAdapter":
        """Add fresh (untrained) weight filters to a transformers classifier you already have.

        Example:

        ```py
        >>> model = AutoModelForImageClassification.from_pretrained("microsoft/resnet-50")
        >>> adapter = UnlearnAdapter.attach(model)          # default targets for model_type "resnet"
        ```
        """
        if config is None:
            config = WeightFilterConfig(**config_kwargs)
        elif config_kwargs:
            raise TypeError("Pass either a WeightFilterConfig or config keyword arguments, not both.")
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
        requested = config.base_model_name_or_path
        peft_model = get_peft_model(model, config, adapter_name=adapter_name)
        # After PEFT (which resets it to model.name_or_path): local folders absolute, Hub ids as given.
        peft_model.peft_config[adapter_name].base_model_name_or_path = canonical_base_model_path(requested)
        return cls(peft_model, image_processor)

    @classmethod
    def from_pretrained(
        cls,
        adapter_name_or_path: Union[str, os.PathLike],
        *,
        base_model: Union[None, str, PreTrainedModel] = None,
        revision: Optional[str] = None,
        token: Union[None, bool, str] = None,
        is_trainable: bool = False,
        adapter_name: str = "default",
        cache_dir: Optional[str] = None,
    ) -> "UnlearnAdapter":
        """Load filters from a local folder or a Hub repo, and the base model they name.

        Args:
            adapter_name_or_path: a folder written by ``save_pretrained`` or a Hub repo id.
            base_model: the base model (or its path / repo id). Default: the
                ``base_model_name_or_path`` recorded in the adapter config.
            revision: branch, tag or commit of the adapter repo on the Hub.
            is_trainable: load the filters as trainable parameters (to continue untraining).

        Only safetensors files are read: a repo that holds pickle weights instead is refused.
        """
        folder = resolve_adapter_folder(adapter_name_or_path, revision=revision, token=token, cache_dir=cache_dir)
        check_peft_type(folder)
        config = WeightFilterConfig.from_pretrained(folder)
        check_adapter_tensors(folder, config)  # before the base model is touched
        if base_model is None:
            base_model = resolve_base_model_path(config.base_model_name_or_path, folder)
            if not base_model:
                raise ValueError(
                    f"The adapter at {adapter_name_or_path} does not name its base model "
                    "(base_model_name_or_path is empty): pass base_model=."
                )
        base_path = base_model if isinstance(base_model, (str, os.PathLike)) else None
        if base_path is not None:
            from_config = str(base_path) == str(resolve_base_model_path(config.base_model_name_or_path, folder))
            base_model = _load_base_model(
                str(base_path), token=token, cache_dir=cache_dir,
                revision=config.revision if from_config else None,
                source="named in the adapter config" if from_config else "passed as base_model=",
            )
        model = PeftModel.from_pretrained(
            base_model, folder, adapter_name=adapter_name, is_trainable=is_trainable, config=config
        )
        if not is_trainable:
            model.eval()
        image_processor = _load_image_processor(folder, base_path or getattr(base_model, "name_or_path", None))
        return cls(model, image_processor)

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> WeightFilterConfig:
        return self.model.peft_config[self.model.active_adapter]

    @property
    def base_model(self) -> PreTrainedModel:
        return self.model.get_base_model()

    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes)

    @property
    def id2label(self) -> dict[int, str]:
        id2label = getattr(self.base_model.config, "id2label", None) or {}
        return {int(k): str(v) for k, v in id2label.items()}

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def class_id(self, ref: Union[int, str]) -> int:
        """Validated class id for an id or a name (``ValueError`` lists the valid ones)."""
        return resolve_class(ref, self.num_classes, self.label2id)

    def filter_layers(self) -> dict[str, WeightFilterLayer]:
        """The wrapped layers by module name."""
        return {n: m for n, m in self.base_model.named_modules() if isinstance(m, WeightFilterLayer)}

    # ------------------------------------------------------------------ using it

    def __call__(self, pixel_values: Optional[torch.Tensor] = None, forget: Any = None, **kwargs):
        """Run the model; ``forget`` chooses the class(es) to behave as unlearned (None: the base model)."""
        return self.model(pixel_values=pixel_values, forget=forget, **kwargs)

    @contextmanager
    def forgetting(self, forget: Any):
        """Context in which every call behaves as if ``forget`` had been unlearned."""
        with self.model.base_model.forgetting(forget):
            yield self

    def eval(self) -> "UnlearnAdapter":
        self.model.eval()
        return self

    def to(self, *args, **kwargs) -> "UnlearnAdapter":
        self.model.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def predict(self, images, forget: Any = None, top_k: int = 1, batch_size: int = 64) -> list[list[dict]]:
        """Classify images (PIL images, arrays, or a ``pixel_values`` tensor) with ``forget`` applied.

        Returns, per image, the ``top_k`` predictions as ``{"label", "class_id", "score"}`` dicts.
        """
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            pixel_values = images
        else:
            if self.image_processor is None:
                raise ValueError("predict() on images needs an image processor: pass image_processor= or pixel_values.")
            if not isinstance(images, (list, tuple)):
                images = [images]
            # Match the model's channels the way transformers' pipeline does (it converts to RGB).
            mode = "L" if getattr(self.base_model.config, "num_channels", 3) == 1 else "RGB"
            images = [im.convert(mode) if hasattr(im, "convert") else im for im in images]
            pixel_values = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        results: list[list[dict]] = []
        id2label = self.id2label
        # A per-sample selection is cut into the same chunks as the images.
        selection = self.model.base_model.normalize_selection(forget)
        per_sample_rows = selection is not None and selection.shape[0] > 1
        if per_sample_rows and selection.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"`forget` has {selection.shape[0]} per-sample entries for {pixel_values.shape[0]} images: "
                "give one entry per image, or one class/set for all."
            )
        for start in range(0, pixel_values.shape[0], batch_size):
            chunk = pixel_values[start : start + batch_size].to(device)
            rows = selection[start : start + batch_size] if per_sample_rows else forget
            probs = self.model(pixel_values=chunk, forget=rows).logits.softmax(-1)
            scores, ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for s_row, i_row in zip(scores.tolist(), ids.tolist()):
                results.append(
                    [{"label": id2label.get(i, str(i)), "class_id": i, "score": s} for s, i in zip(s_row, i_row)]
                )
        self.model.train(was_training)
        return results

    def export(self, forget: Any) -> PreTrainedModel:
        """A plain transformers model of the base class with the rows of ``forget`` folded into its weights.

        The result has no adapter and no overhead; ``save_pretrained`` writes safetensors that
        ``AutoModelForImageClassification`` and ``pipeline("image-classification")`` load without
        hf_unlearn. Only this form is unlearned for whoever receives it: an adapter can be switched off.
        """
        selection = self.model.base_model.normalize_selection(forget)
        if selection is None:
            raise ValueError("export() needs the class(es) to forget, e.g. export(forget='Coat') or export(forget=[1, 3]).")
        if selection.shape[0] != 1:
            raise ValueError("export() folds one class or one set into the weights, not a per-sample selection.")
        if not bool((selection >= 0).any()):  # [] or -1: a copy of the base model labelled as an export
            raise ValueError(f"export(forget={forget!r}) selects no class: name at least one class to forget.")
        work = copy.deepcopy(self.model)
        with work.base_model.forgetting(selection):
            merged = work.merge_and_unload()
        ids = [int(i) for i in selection[0].tolist() if i >= 0]
        merged.config.unlearned_classes = [self.id2label.get(i, str(i)) for i in ids]
        merged.config.unlearned_class_ids = ids
        merged.eval()
        return merged

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs) -> Path:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (+ the image processor).

        Files are written to a temporary folder first and then moved in, so an interrupted save
        never leaves a half-written file behind; other files in the folder are kept.
        """
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_folders(target, ".saving-")  # left by saves that were killed
        tmp = Path(tempfile.mkdtemp(prefix=f".saving-{os.getpid()}-", dir=target))
        try:
            self.model.save_pretrained(str(tmp), safe_serialization=True, **kwargs)
            if self.image_processor is not None:
                self.image_processor.save_pretrained(str(tmp))
            write_adapter_card(self, tmp, look_in=target)  # our card, not PEFT's empty template
            # Each file lands by an atomic rename; the config goes last, so a folder that has an
            # adapter_config.json always has the weights it describes. Other files are left alone.
            names = sorted(p.name for p in tmp.iterdir())
            names.sort(key=lambda n: n == CONFIG_NAME)
            for name in names:
                os.replace(tmp / name, target / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: Union[None, bool, str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        report: Any = None,
        command: Optional[str] = None,
    ):
        """Upload the filters, config, image processor, a model card and (optionally) the report.

        Everything goes in ONE commit (``HfApi.upload_folder`` from a temporary folder), so a
        failure leaves the remote as it was and nothing behind locally; retrying is safe. The repo
        is created if needed. The generated ``README.md`` (:func:`hf_unlearn.hub.cards.adapter_card`)
        has the metadata, a ``model-index`` with the results, how to use it and its limits.

        Args:
            repo_id: e.g. ``"me/resnet-fashion-wf"``.
            token: default ``HF_TOKEN`` or the stored login; none at all raises before any traffic.
            private: create the repo as private.
            revision: the branch to push to (created from main if needed).
            report: ``untraining_metrics.json`` (what ``hf-unlearn train`` writes), an evaluation
                report dict, or a path to either; pushed as ``report.json`` + ``report.md``.
            command: the command that reproduces the adapter, for the card.

        Returns the ``CommitInfo``: ``.oid`` is the commit sha (load it back with
        ``from_pretrained(repo_id, revision=sha)``), ``.commit_url`` its page.

        The base model is recorded by ``config.base_model_name_or_path``: make it a Hub id
        (not a local folder) so that others can load the adapter.
        """
        return push_adapter(
            self, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message, report=report, command=command,
        )

    def __repr__(self) -> str:
        layers = self.filter_layers()
        per_class = sum(m.out_features for m in layers.values())
        return (
            f"UnlearnAdapter(base={type(self.base_model).__name__}, classes={self.num_classes}, "
            f"filtered_layers={len(layers)}, filters_per_class={per_class})"
        )


# ---------------------------------------------------------------------- loading helpers


def _load_base_model(name_or_path: str, *, token=None, cache_dir=None, revision=None,
                     source: str = "named in the adapter config") -> PreTrainedModel:
    check_local_path(name_or_path, f"The base model ({source})")
    try:
        return AutoModelForImageClassification.from_pretrained(
            name_or_path, use_safetensors=True, token=token, cache_dir=cache_dir, revision=revision
        )
    except (OSError, ValueError) as err:  # ValueError: huggingface_hub's invalid repo id
        raise OSError(
            f"Could not load the base model {name_or_path!r} ({source}): it is neither a local folder "
            f"nor a Hub repo that can be reached (or it has no safetensors weights). Pass base_model= "
            f"(a model, a local folder or a Hub repo id) if it lives elsewhere. Cause: {err}"
        ) from err


def _load_image_processor(folder: Path, base_path: Optional[str]):
    for candidate in (str(folder), base_path):
        if not candidate:
            continue
        if Path(candidate).is_dir() and not (Path(candidate) / "preprocessor_config.json").is_file():
            continue
        try:
            return AutoImageProcessor.from_pretrained(candidate)
        except (OSError, ValueError):
            continue
    return None


# ---------------------------------------------------------------------- base model paths


def looks_like_local_path(name: str) -> bool:
    """True for names that can only be a local path (a Hub id is ``name`` or ``org/name``)."""
    name = str(name)
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or os.sep in name.replace("/", "")
        or name.count("/") > 1 or (os.altsep is not None and os.altsep != "/" and os.altsep in name)
    )


def check_local_path(name: str, what: str) -> None:
    """Raise ``FileNotFoundError`` naming ``name`` when it is plainly a local path that does not exist.

    Without this, transformers reports a missing folder as an invalid Hub repo id.
    """
    if looks_like_local_path(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(
            f"{what} {name!r} is a local path that does not exist (working directory: {os.getcwd()}). "
            "Pass the folder that holds its config.json and model.safetensors, or a Hub repo id."
        )


def canonical_base_model_path(name: Optional[str]) -> Optional[str]:
    """How an adapter records its base model: a local folder ABSOLUTE, a Hub id as given.

    A relative folder would name another model (or none) when the adapter is loaded elsewhere.

    Example:

    ```py
    >>> canonical_base_model_path("runs/base-resnet")      # an existing folder
    '/home/me/project/runs/base-resnet'
    >>> canonical_base_model_path("microsoft/resnet-50")   # not a folder here: a Hub id
    'microsoft/resnet-50'
    ```
    """
    if not name:
        return name
    path = Path(str(name)).expanduser()
    return str(path.resolve()) if path.is_dir() else str(name)


def resolve_base_model_path(name: Optional[str], adapter_folder: Union[str, os.PathLike]) -> Optional[str]:
    """The base model named in an adapter config; a relative path is looked for next to the adapter first.

    Adapters written before paths were stored absolute hold e.g. ``runs/base-resnet`` as typed,
    relative to the directory the run started in, which is usually an ancestor of the adapter
    folder (``runs/wf-resnet``). The closest ancestor holding that model wins over the current
    working directory, which may hold another model of that name. A name that is no local folder
    stays a Hub id.
    """
    if not name or os.path.isabs(str(name)):
        return name
    adapter_folder = Path(adapter_folder).absolute()
    for root in (adapter_folder, *adapter_folder.parents):
        candidate = root / str(name)
        if (candidate / "config.json").is_file():
            return str(candidate.resolve())
    return str(Path(name).resolve()) if Path(name).is_dir() else name
