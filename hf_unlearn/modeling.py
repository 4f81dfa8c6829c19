"""Helpers on image classifiers that training, evaluation and the baselines share.

- :func:`unwrap_model`: the plain transformers model (and the adapter, if any) behind an
  :class:`~hf_unlearn.UnlearnAdapter`, a ``PeftModel`` or a plain model;
- :func:`classifier_module`: the final classification layer (its input = the penultimate features);
- :func:`capture_classifier_input` and :func:`penultimate_features`: those features;
- :func:`random_reference_model`: a seeded randomly initialised copy of an architecture (ZRF's reference);
- :func:`filter_sparsity`: the share of each adapter row's filters switched off, per layer;
- :func:`load_classifier` / :func:`load_image_processor`: a saved classifier folder.

Example:

```py
>>> from hf_unlearn import UnlearnAdapter
>>> from hf_unlearn.modeling import classifier_module, penultimate_features
>>> adapter = UnlearnAdapter.from_pretrained("runs/wf-resnet")
>>> classifier_module(adapter)                                   # ResNet: Sequential(Flatten, Linear)
>>> penultimate_features(adapter, pixels, forget="Coat").shape   # (B, D)
```
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoImageProcessor, AutoModelForImageClassification

from .adapter import UnlearnAdapter

__all__ = [
    "capture_classifier_input",
    "classifier_module",
    "filter_sparsity",
    "load_classifier",
    "load_image_processor",
    "penultimate_features",
    "random_reference_model",
    "unwrap_model",
]


def unwrap_model(model) -> tuple[Any, Optional[UnlearnAdapter]]:
    """``(plain transformers model, adapter or None)`` for an UnlearnAdapter, a PeftModel or a plain model.

    Example:
        >>> plain, adapter = unwrap_model(UnlearnAdapter.from_pretrained("runs/wf-resnet"))
    """
    if isinstance(model, UnlearnAdapter):
        return model.base_model, model
    if isinstance(model, PeftModel):
        return model.get_base_model(), UnlearnAdapter(model)
    return model, None


def classifier_module(model) -> torch.nn.Module:
    """The final classification layer of an image classifier (its input = penultimate features).

    transformers' image classifiers call it ``classifier`` (ResNet: ``Sequential(Flatten, Linear)``
    fed the pooled output; ConvNeXt: a ``Linear`` after the final layernorm; ViT: a ``Linear`` on the
    CLS token after the final layernorm). Other models: ``head``/``fc``/``score``, else the last
    ``Linear`` with ``num_labels`` outputs.

    Example:
        >>> head = classifier_module(AutoModelForImageClassification.from_pretrained("runs/base-resnet"))
    """
    plain, _ = unwrap_model(model)
    for name in ("classifier", "head", "fc", "score"):
        module = getattr(plain, name, None)
        if isinstance(module, torch.nn.Module) and not isinstance(module, torch.nn.Identity):
            return module
    num_labels = getattr(getattr(plain, "config", None), "num_labels", None)
    last = None
    for module in plain.modules():
        linear = getattr(module, "base_layer", module)
        if isinstance(linear, torch.nn.Linear) and (num_labels is None or linear.out_features == num_labels):
            last = module
    if last is None:
        raise ValueError(
            f"Cannot find the classification layer of {type(plain).__name__}: expected an attribute "
            "`classifier` (transformers image classifiers) or a final Linear with num_labels outputs."
        )
    return last


def classifier_weight(model) -> torch.Tensor:
    """The weight ``(num_labels, features)`` of the classification layer (its base weight if wrapped).

    Example:
        >>> classifier_weight(model).shape
        torch.Size([10, 64])
    """
    linears = [getattr(m, "base_layer", m) for m in classifier_module(model).modules()]
    linears = [m for m in linears if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"The classification layer of {type(model).__name__} holds no Linear layer.")
    return linears[-1].weight


@contextlib.contextmanager
def capture_classifier_input(module: torch.nn.Module, *, detach: bool = True) -> Iterator[list]:
    """Within the block, every forward of ``module`` appends its input, flattened to ``(B, D)`` and
    detached (``detach=False`` keeps the graph: the untraining round's feature terms train through it).

    Example:
        >>> with capture_classifier_input(classifier_module(model)) as store:
        ...     logits = model(pixel_values=x).logits
        >>> features = store[-1]
    """
    store: list = []

    def hook(_module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        store.append((x.detach() if detach else x).flatten(1))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield store
    finally:
        handle.remove()


def penultimate_features(model, pixel_values, forget: Any = None, *, return_logits: bool = False):
    """Penultimate features: what the final classifier layer receives, flattened to ``(B, D)``.

    Works for a plain transformers classifier and for an :class:`~hf_unlearn.UnlearnAdapter` (or
    its ``PeftModel``) with any ``forget`` selection (a class, a set, a per-sample tensor). Taken
    with a forward pre-hook on :func:`classifier_module`: ResNet/ConvNeXt give the pooled output,
    ViT the CLS token after the final layernorm. Runs without gradients.

    Example:

    ```py
    >>> feats = penultimate_features(adapter, batch["pixel_values"], forget="Coat")   # (B, D)
    >>> feats, logits = penultimate_features(model, x, return_logits=True)
    ```
    """
    plain, adapter = unwrap_model(model)
    if forget is not None and adapter is None:
        raise ValueError("forget= needs an UnlearnAdapter (or its PeftModel); a plain model has nothing to select.")
    with torch.no_grad(), capture_classifier_input(classifier_module(plain)) as store:
        if adapter is not None:
            logits = adapter.model(pixel_values=pixel_values, forget=forget).logits
        else:
            logits = plain(pixel_values=pixel_values).logits
    if len(store) != 1:
        raise RuntimeError(f"The classifier layer ran {len(store)} times in one forward; cannot tell the features apart.")
    return (store[0], logits) if return_logits else store[0]


def random_reference_model(config, seed: int = 0, *, model_class=None):
    """A randomly initialised copy of the architecture (the ZRF reference), reproducible from ``seed``.

    ``AutoModelForImageClassification.from_config(config)`` under ``torch.manual_seed(seed)``; the
    global RNG state is left as it was. Same config + same seed = identical weights, on any rank.

    Example:
        >>> random_model = random_reference_model(model.config, seed=0)
    """
    config = copy.deepcopy(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_class is not None:
            model = model_class(config)
        else:
            try:
                model = AutoModelForImageClassification.from_config(config)
            except ValueError as err:
                raise ValueError(
                    f"Cannot build a random {type(config).__name__} with AutoModelForImageClassification ({err}); "
                    "pass model_class= for a custom architecture."
                ) from None
    return model.eval()


def filter_sparsity(adapter, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Share of each row's filter values below ``threshold`` ("switched off"), per filtered layer.

    Returns ``{layer_name: (num_classes,) array in [0, 1]}``, ready for
    :func:`~hf_unlearn.evaluation.plots.plot_filter_sparsity`.

    Example:
        >>> share = filter_sparsity(adapter)   # {"resnet.encoder...convolution": array([0.02, ...]), ...}
    """
    _, adapter = unwrap_model(adapter)
    if adapter is None:
        raise TypeError("filter_sparsity needs an UnlearnAdapter.")
    name = adapter.model.active_adapter
    out = {}
    with torch.no_grad():
        for layer_name, layer in adapter.filter_layers().items():
            if name in layer.weight_filter_theta:
                alpha = layer.filters(name).float().cpu()
                out[layer_name] = (alpha < threshold).float().mean(1).numpy()
    return out


def load_classifier(path: Union[str, os.PathLike]):
    """A saved image classifier (safetensors only), in eval mode; a clear error if the folder holds none.

    Example:
        >>> model = load_classifier("runs/retrain-resnet/class-4")
    """
    try:
        return AutoModelForImageClassification.from_pretrained(str(path), use_safetensors=True).eval()
    except OSError as err:
        raise OSError(f"Could not load an image classifier from {path}: {err}") from err


def load_image_processor(path: Union[str, os.PathLike]):
    """The image processor saved in a model folder, or None when it has none.

    Example:
        >>> processor = load_image_processor("runs/resnet-without-coat")
    """
    try:
        return AutoImageProcessor.from_pretrained(str(path))
    except (OSError, ValueError):
        return None
