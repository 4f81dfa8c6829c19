"""Explainability: what the weight filters say about each class.

Row ``c`` of a filtered layer's matrix ``alpha`` (shape ``(num_classes, out_units)``, values in
``[0, 1]``) says which output units forgetting class ``c`` switches off: ``1 - alpha[c, k]`` is how
much of unit ``k`` the row removes. This module reads those rows in three ways.

**Filter maps** (no data needed):

- :func:`filter_maps`: ``{layer: (N, out) array of 1 - alpha}``, per class and layer, which
  components the row switches off; :func:`top_components` lists the strongest ones;
- :func:`filter_usage`: per class and layer, the mean of ``1 - alpha`` and the share of units with
  ``alpha < 0.5``;
- :func:`row_similarity`: cosine similarity of the classes' concatenated ``1 - alpha`` vectors,
  :func:`cluster_rows`: hierarchical clustering (average linkage on ``1 - similarity``) and its
  dendrogram order, compared with the base model's confusion matrix
  (:func:`confusion_matrix`) by :func:`similarity_confusion_correlation` (Spearman and Pearson
  over the off-diagonal pairs of the symmetrised, row-normalised confusion).

**Saliency from the filters** (:func:`filter_saliency`): an image-level map for class ``c`` built
from the activations of the units its row switches off, on one filtered layer (default: the last
filtered layer with a spatial output for CNNs, the last filtered ``fc1`` (else ``fc2``) for ViT),
read with a forward hook on the wrapped layer's base output while no class is selected:

- CNN (ResNet, ConvNeXt): ``ReLU(sum_k (1 - alpha[c, k]) * A_k(x, y))`` (CAM-style);
- ViT: per patch token ``sum_k (1 - alpha[c, k]) * |A[token, k]|`` on the patch grid;

then upsampled (bilinear) to the input size and normalised to ``[0, 1]`` per image. A CNN layer's
base output is read before its normalisation and ReLU, where the weighted sum can be negative
everywhere (an empty CAM); ``"filter_abs"`` (``sum_k (1 - alpha[c, k]) |A_k|``, the size of what
the row removes at each location) is computed next to it for CNN layers. References:
:func:`gradcam` (Grad-CAM of the base model's class logit on the same layer; ViT: per token
``ReLU(sum_k grad * act)``) and :func:`random_saliency` (seeded uniform noise at the layer's
grid, upsampled), all three at once with :func:`saliency_maps`.

**Faithfulness** (:func:`deletion_auc`, :func:`insertion_auc`; RISE, Petsiuk et al. 2018): pixels
are deleted (replaced by a baseline: 0 = the dataset mean in normalised space, or a blur) from the
most salient down in ``steps`` equal steps, and the model's probability of the class is recorded;
the AUC is the trapezoid rule over the fraction deleted (0 to 1). Insertion starts from the
baseline and puts the most salient pixels back first. Lower deletion AUC and higher insertion AUC
mean a more faithful map.

Example:

```py
>>> from hf_unlearn import UnlearnAdapter
>>> from hf_unlearn.explain import core as explain
>>> adapter = UnlearnAdapter.from_pretrained("runs/wf-resnet")
>>> maps = explain.filter_maps(adapter)                      # {layer: (10, out) of 1 - alpha}
>>> sim = explain.row_similarity(maps); explain.cluster_rows(sim)["order"]
>>> sal = explain.filter_saliency(adapter, pixel_values, classes="Coat")   # (B, H, W) in [0, 1]
>>> explain.deletion_auc(adapter, pixel_values, sal, target="Coat")      # per image
```

The whole analysis as a job (``hf-unlearn explain`` / ``recipes/explain.py``, :func:`main`):
``python recipes/explain.py --adapter runs/wf-resnet --dataset fashion_mnist --split test
--images_per_class 2 --auc_images 200 --output_dir runs/explain-wf-resnet`` writes
``explain.json``, ``explain.md`` and PNG figures.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

__all__ = [
    "OFF_THRESHOLD",
    "METHODS",
    "DEFAULT_METHODS",
    "write_explain_report",
    "filter_maps",
    "filter_usage",
    "top_components",
    "row_similarity",
    "cluster_rows",
    "confusion_matrix",
    "similarity_confusion_correlation",
    "resolve_layer",
    "default_saliency_layer",
    "filter_saliency",
    "gradcam",
    "random_saliency",
    "saliency_maps",
    "deletion_auc",
    "insertion_auc",
    "perturbation_curves",
    "plot_filter_usage",
    "plot_filter_maps",
    "plot_similarity_confusion",
    "plot_saliency_overlays",
    "plot_auc_curves",
    "explain_adapter",
    "build_parser",
    "main",
]

OFF_THRESHOLD = 0.5  # a unit counts as "switched off" by a row when alpha < 0.5
METHODS = ("filter", "filter_abs", "gradcam", "random")
DEFAULT_METHODS = ("filter", "gradcam", "random")
_FILTER_METHODS = ("filter", "filter_abs")
_VIT_TYPES = ("vit", "deit", "dinov2", "beit", "data2vec-vision", "vit_msn", "vit_mae", "siglip_vision_model")

DEFINITIONS = {
    "filter map": "1 - alpha[c, k] for every unit k of every filtered layer: how much of unit k forgetting "
    "class c removes (1 = fully switched off).",
    "mean 1-alpha / share off": "per class and layer, the mean of 1 - alpha over the layer's units, and the "
    "share of units with alpha < 0.5.",
    "row similarity": "cosine similarity of the classes' 1 - alpha vectors concatenated over all filtered "
    "layers (two all-zero rows count as identical, 1; an all-zero row and another as 0).",
    "clustering": "average-linkage hierarchical clustering (scipy) on the distance 1 - similarity; the "
    "heatmaps use its dendrogram leaf order.",
    "confusion vs similarity": "Spearman and Pearson correlation, over the class pairs i < j, between row "
    "similarity and the base model's symmetrised row-normalised confusion (C[i, j] + C[j, i]) / 2.",
    "filter saliency": "CNN: ReLU(sum_k (1 - alpha[c, k]) A_k) on the saliency layer's base output "
    "(CAM-style); ViT: per patch token sum_k (1 - alpha[c, k]) |A[token, k]|; bilinear upsampling to "
    "the input, min-max normalised per image. No class is selected while the activations are read.",
    "filter |A| saliency": "sum_k (1 - alpha[c, k]) |A_k| per location: the size of what row c removes from "
    "the layer's output there (for ViT tokens the same as the filter saliency). Unlike the CAM form it is "
    "never empty when the weighted pre-activation sum is negative everywhere.",
    "empty maps": "share of images whose map is constant (e.g. all zero after the ReLU); their pixels are "
    "deleted in random order, so they score like the random control.",
    "Grad-CAM": "on the base model and the same layer: CNN ReLU(sum_k mean_xy(dlogit_c/dA_k) A_k); ViT per "
    "token ReLU(sum_k dlogit_c/dA[token, k] * A[token, k]); upsampled and normalised the same way.",
    "random": "seeded uniform noise at the saliency layer's grid, upsampled the same way (a control).",
    "deletion / insertion AUC": "RISE (Petsiuk et al. 2018): the most salient pixels (all channels) are "
    "replaced by the baseline (deletion) or put back onto the baseline (insertion) in equal steps; the "
    "base model's softmax probability of the class is recorded; AUC = trapezoid rule over the fraction "
    "of pixels changed, 0..1. Lower deletion / higher insertion = more faithful.",
}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _as_adapter(obj, what: str = "This function"):
    from peft import PeftModel

    from ..adapter import UnlearnAdapter

    if isinstance(obj, UnlearnAdapter):
        return obj
    if isinstance(obj, PeftModel):
        return UnlearnAdapter(obj)
    raise TypeError(f"{what} needs an UnlearnAdapter (or its PeftModel), got {type(obj).__name__}.")


def _maybe_adapter(obj):
    try:
        return _as_adapter(obj)
    except TypeError:
        return None


def _active_name(adapter) -> str:
    return adapter.model.active_adapter


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _model_device(model):
    torch = _torch()
    module = getattr(model, "model", model)  # UnlearnAdapter -> its PeftModel
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
    return None


@contextlib.contextmanager
def _base_model_context(model):
    """No class selected (the exact base model) for an adapter, whatever context the caller is in."""
    adapter = _maybe_adapter(model)
    if adapter is None:
        yield
    else:
        with adapter.forgetting(None):
            yield


def _logits(model, x):
    """Logits (B, N) of an UnlearnAdapter (no class selected), a transformers model or a callable."""
    torch = _torch()
    adapter = _maybe_adapter(model)
    if adapter is not None:
        out = adapter.model(pixel_values=x)
    elif isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        out = model(pixel_values=x)
    else:
        out = model(x)
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise TypeError("The model must return logits of shape (batch, num_classes) (or an output with .logits).")
    return out


def _class_ids(model, classes, count: int) -> list[int]:
    """One validated class id per image from an id, a name, or a sequence/tensor of them."""
    torch = _torch()
    adapter = _maybe_adapter(model)

    def one(ref) -> int:
        if adapter is not None:
            return adapter.class_id(int(ref) if isinstance(ref, (np.integer,)) else ref)
        if isinstance(ref, str):
            raise ValueError(f"Class names ({ref!r}) need an UnlearnAdapter (or a model with id2label); pass ids.")
        return int(ref)

    if isinstance(classes, torch.Tensor):
        classes = classes.tolist()
    if isinstance(classes, np.ndarray):
        classes = classes.tolist()
    if isinstance(classes, (int, str, np.integer)) and not isinstance(classes, bool):
        return [one(classes)] * count
    classes = list(classes)
    if len(classes) != count:
        raise ValueError(f"Got {len(classes)} classes for {count} images: give one class for all, or one per image.")
    return [one(c) for c in classes]


def _as_batch(images):
    torch = _torch()
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if images.ndim == 3:
        return images.unsqueeze(0), True
    if images.ndim != 4:
        raise ValueError(f"Images must be (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}.")
    return images, False


def _normalise(maps):
    """Per-image min-max to [0, 1]; a constant map (up to rounding) becomes all zeros."""
    torch = _torch()
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    span = hi - lo
    flat_enough = span <= 1e-5 * torch.maximum(lo.abs(), hi.abs()) + 1e-12  # constant up to rounding
    out = torch.where(flat_enough, torch.zeros_like(flat), (flat - lo) / span.clamp_min(1e-12))
    return out.reshape(maps.shape)


def _upsample(maps, size):
    from torch.nn import functional as F

    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# --------------------------------------------------------------------------------------------
# filter maps, usage, similarity, clustering, confusion
# --------------------------------------------------------------------------------------------


def filter_maps(adapter) -> dict[str, np.ndarray]:
    """``{layer_name: (num_classes, out_units) array of 1 - alpha}`` for every filtered layer.

    Row ``c`` says which components forgetting class ``c`` switches off (1 = fully off).

    Example:

    ```py
    >>> maps = filter_maps(adapter)
    >>> maps["resnet.encoder.stages.2.layers.0.layer.1.convolution"][4].argmax()   # unit row 4 removes most
    ```
    """
    torch = _torch()
    adapter = _as_adapter(adapter, "filter_maps")
    name = _active_name(adapter)
    out = {}
    with torch.no_grad():
        for layer_name, layer in adapter.filter_layers().items():
            if name in layer.weight_filter_theta:
                out[layer_name] = (1.0 - layer.filters(name).detach().double().cpu()).numpy()
    if not out:
        raise ValueError("The adapter has no filtered layers.")
    return out


def _maps_of(maps_or_adapter) -> dict[str, np.ndarray]:
    if isinstance(maps_or_adapter, Mapping):
        maps = {str(k): _to_numpy(v) for k, v in maps_or_adapter.items()}
        if not maps:
            raise ValueError("The filter maps are empty.")
        n = {v.shape[0] for v in maps.values()}
        if len(n) != 1 or any(v.ndim != 2 for v in maps.values()):
            raise ValueError("Filter maps must all be (num_classes, out_units) arrays with the same num_classes.")
        return maps
    return filter_maps(maps_or_adapter)


def filter_usage(maps_or_adapter, threshold: float = OFF_THRESHOLD) -> dict[str, Any]:
    """How much of each layer each class's row uses.

    Returns ``{"layers": [L names], "mean_off": (N, L) mean of 1 - alpha, "share_off": (N, L) share
    of units with alpha < threshold, "mean_off_overall": (N,), "share_off_overall": (N,)}`` (the
    overall values pool all units of all layers).
    """
    maps = _maps_of(maps_or_adapter)
    layers = list(maps)
    mean_off = np.stack([maps[l].mean(1) for l in layers], axis=1)
    share_off = np.stack([(maps[l] > 1.0 - threshold).mean(1) for l in layers], axis=1)
    allunits = np.concatenate([maps[l] for l in layers], axis=1)
    return {
        "layers": layers,
        "threshold": threshold,
        "mean_off": mean_off,
        "share_off": share_off,
        "mean_off_overall": allunits.mean(1),
        "share_off_overall": (allunits > 1.0 - threshold).mean(1),
        "units": {l: int(maps[l].shape[1]) for l in layers},
    }


def top_components(maps_or_adapter, k: int = 5) -> dict[str, list[list[tuple[int, float]]]]:
    """``{layer: [per class: [(unit, 1 - alpha), ...] strongest first]}``, the ``k`` units each row removes most."""
    maps = _maps_of(maps_or_adapter)
    out = {}
    for layer, m in maps.items():
        idx = np.argsort(-m, axis=1, kind="stable")[:, :k]
        out[layer] = [[(int(j), float(m[c, j])) for j in idx[c]] for c in range(m.shape[0])]
    return out


def row_similarity(maps_or_adapter) -> np.ndarray:
    """``(N, N)`` cosine similarity of the classes' ``1 - alpha`` vectors concatenated over all layers.

    Identical rows give 1. Two all-zero rows (classes whose rows switch nothing off) count as
    identical (1); an all-zero row and a non-zero one as 0.
    """
    maps = _maps_of(maps_or_adapter)
    X = np.concatenate([maps[l] for l in maps], axis=1)
    norms = np.linalg.norm(X, axis=1)
    zero = norms <= 1e-12
    safe = np.where(zero, 1.0, norms)
    S = (X / safe[:, None]) @ (X / safe[:, None]).T
    S[zero, :] = 0.0
    S[:, zero] = 0.0
    S[np.ix_(zero, zero)] = 1.0
    S = np.clip((S + S.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(S, 1.0)
    return S


def cluster_rows(similarity, method: str = "average") -> dict[str, Any]:
    """Hierarchical clustering of the rows on ``1 - similarity``.

    Returns ``{"order": dendrogram leaf order (a permutation of 0..N-1), "linkage": scipy linkage
    matrix ((N-1, 4), empty for N < 2), "method": method}``.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    S = _to_numpy(similarity)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise ValueError(f"`similarity` must be a square (N, N) matrix, got shape {S.shape}.")
    n = S.shape[0]
    if n < 2:
        return {"order": list(range(n)), "linkage": np.zeros((0, 4)), "method": method}
    D = np.clip(1.0 - (S + S.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    Z = linkage(squareform(D, checks=False), method=method, optimal_ordering=n <= 256)
    return {"order": [int(i) for i in leaves_list(Z)], "linkage": Z, "method": method}


def confusion_matrix(model, loader, num_classes: Optional[int] = None, *, progress: bool = False,
                     desc: str = "confusion (base model)") -> np.ndarray:
    """Counts ``C[true, predicted]`` of the base model (an adapter with no class selected) over ``loader``.

    ``loader`` yields ``{"pixel_values", "labels"}`` dicts (``hf_unlearn.data.loading.build_dataloader``)
    or ``(pixel_values, labels)`` pairs.
    """
    torch = _torch()
    from tqdm.auto import tqdm

    device = _model_device(model)
    C = None
    with torch.no_grad(), _base_model_context(model):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            x, y = _unpack(batch)
            logits = _logits(model, x.to(device) if device is not None else x)
            n = num_classes or logits.shape[1]
            if C is None:
                C = np.zeros((n, n), dtype=np.int64)
            pred = logits.argmax(1).cpu().numpy()
            np.add.at(C, (y.cpu().numpy().astype(np.int64), pred), 1)
    if C is None:
        raise ValueError("The loader yielded no batches.")
    return C


def _unpack(batch):
    if isinstance(batch, Mapping):
        return batch["pixel_values"], batch["labels"]
    x, y = batch[0], batch[1]
    return x, y


def similarity_confusion_correlation(similarity, confusion) -> dict[str, Any]:
    """Spearman and Pearson correlation between row similarity and the base model's confusion.

    The confusion counts are row-normalised (rows = true class) and symmetrised,
    ``(C[i, j] + C[j, i]) / 2``; both matrices are compared over the off-diagonal pairs ``i < j``.
    Returns ``{"spearman", "spearman_p", "pearson", "pearson_p", "n_pairs"}`` (None where undefined,
    e.g. a constant input).
    """
    from scipy import stats

    S = _to_numpy(similarity)
    C = _to_numpy(confusion)
    if S.shape != C.shape or S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"`similarity` {S.shape} and `confusion` {C.shape} must be square and the same shape.")
    rows = C.sum(1, keepdims=True)
    Cn = np.divide(C, rows, out=np.zeros_like(C), where=rows > 0)
    Csym = (Cn + Cn.T) / 2.0
    iu = np.triu_indices(S.shape[0], 1)
    s, c = S[iu], Csym[iu]
    out: dict[str, Any] = {"spearman": None, "spearman_p": None, "pearson": None, "pearson_p": None,
                           "n_pairs": int(len(s))}
    if len(s) >= 3 and np.ptp(s) > 0 and np.ptp(c) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sp = stats.spearmanr(s, c)
            pr = stats.pearsonr(s, c)
        out.update(spearman=_finite(sp.statistic), spearman_p=_finite(sp.pvalue),
                   pearson=_finite(pr.statistic), pearson_p=_finite(pr.pvalue))
    return out


def _finite(v) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# saliency
# --------------------------------------------------------------------------------------------


def resolve_layer(adapter, layer: str) -> str:
    """The full name of a filtered layer from its name or a unique dotted suffix of it.

    Raises ``ValueError`` listing the layers the adapter filters.
    """
    adapter = _as_adapter(adapter, "resolve_layer")
    layers = list(adapter.filter_layers())
    if not isinstance(layer, str):
        raise TypeError(f"`layer` must be a module name (str), got {type(layer).__name__}.")
    if layer in layers:
        return layer
    matches = [n for n in layers if n.endswith("." + layer)]
    if len(matches) == 1:
        return matches[0]
    listing = "\n  ".join(layers)
    if matches:
        raise ValueError(f"Layer {layer!r} matches several filtered layers: {matches}. Give the full name. "
                         f"Filtered layers:\n  {listing}")
    raise ValueError(f"Layer {layer!r} is not a layer this adapter filters. Filtered layers:\n  {listing}")


def _hook_module(model, layer_name: str):
    """The module whose forward output is the layer's base output."""
    adapter = _maybe_adapter(model)
    if adapter is not None:
        layer = adapter.filter_layers()[resolve_layer(adapter, layer_name)]
        return layer.get_base_layer()
    modules = dict(model.named_modules())
    if layer_name not in modules:
        raise ValueError(f"The model has no module named {layer_name!r}.")
    module = modules[layer_name]
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


@contextlib.contextmanager
def _capture(module, detach: bool):
    store: dict[str, Any] = {}

    def hook(_module, _args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        store["out"] = out.detach().clone() if detach else out

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _config(model):
    adapter = _maybe_adapter(model)
    if adapter is not None:
        return adapter.base_model.config
    return getattr(model, "config", None)


def _token_grid(config, tokens: int, image_hw) -> tuple[int, int]:
    patch = getattr(config, "patch_size", None) if config is not None else None
    if isinstance(patch, (list, tuple)):
        ph, pw = int(patch[0]), int(patch[1])
    elif patch:
        ph = pw = int(patch)
    else:
        ph = pw = None
    if ph:
        h, w = int(image_hw[0]) // ph, int(image_hw[1]) // pw
        if 0 < h * w <= tokens:
            return h, w
    for n in (tokens - 1, tokens):  # a class token in front, or none
        r = int(round(math.sqrt(max(n, 0))))
        if r > 0 and r * r == n:
            return r, r
    raise ValueError(f"Cannot map {tokens} tokens onto a patch grid (no usable patch_size in the config).")


def _spatial(act, module, config, image_hw):
    """``(B, C, h, w)`` activations and their kind ("spatial" for conv maps, "tokens" for ViT tokens)."""
    torch = _torch()
    if act.ndim == 4:
        if isinstance(module, torch.nn.Conv2d):
            return act, "spatial"
        return act.permute(0, 3, 1, 2), "spatial"  # a Linear on channels-last maps (ConvNeXt pwconv)
    if act.ndim == 3:
        b, t, c = act.shape
        h, w = _token_grid(config, t, image_hw)
        return act[:, t - h * w:, :].transpose(1, 2).reshape(b, c, h, w), "tokens"
    raise ValueError(
        f"The saliency layer's output has shape {tuple(act.shape)}: no spatial or token axis to map onto "
        "the image. Choose a convolution, a channels-last Linear or a ViT token layer (layer=)."
    )


def default_saliency_layer(adapter, example=None) -> str:
    """The layer saliency maps are read from when none is given.

    CNNs: the last filtered layer (in module order) with a spatial output (ResNet: the last
    block's second convolution; ConvNeXt: the last ``pwconv2``). ViT-like models: the last filtered
    ``fc1`` (else ``fc2``, else any token layer) whose patch tokens still reach the logits. In a
    standard ViT only the class token of the last block feeds the classifier, so the last block's
    patch tokens have no effect at all (Grad-CAM there is exactly 0): the choice falls on the block
    before it. Found with one forward and backward pass of ``example`` (default: zeros of the
    config's image size).
    """
    torch = _torch()
    adapter = _as_adapter(adapter, "default_saliency_layer")
    layers = adapter.filter_layers()
    cfg = adapter.base_model.config
    if example is None:
        size = getattr(cfg, "image_size", None) or 64
        size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        example = torch.zeros(1, getattr(cfg, "num_channels", 3), *size)
    example, _ = _as_batch(example)
    device = _model_device(adapter)
    example = example[:1].to(device) if device is not None else example[:1]
    outputs: dict[str, Any] = {}
    handles = []
    for name, layer in layers.items():
        def hook(_m, _a, out, name=name):
            outputs[name] = out[0] if isinstance(out, (tuple, list)) else out
        handles.append(layer.get_base_layer().register_forward_hook(hook))
    try:
        with torch.enable_grad(), _base_model_context(adapter):
            logits = _logits(adapter, example.clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    ran = [n for n in layers if n in outputs]  # module (registration) order = depth order
    tokens = [n for n in ran if outputs[n].ndim == 3]
    spatial = [n for n in ran if outputs[n].ndim == 4]
    model_type = getattr(cfg, "model_type", "")
    if tokens and (model_type in _VIT_TYPES or not spatial):
        acts = [outputs[n] for n in tokens]
        grads = torch.autograd.grad((logits.float() ** 2).sum(), acts, allow_unused=True)
        reach = []
        for n, a, g in zip(tokens, acts, grads):
            h, w = _token_grid(cfg, a.shape[1], example.shape[-2:])
            if g is not None and bool(g[:, a.shape[1] - h * w:].abs().sum() > 0):
                reach.append(n)
        for pool in (reach, tokens):
            for suffix in ("fc1", "intermediate.dense", "fc2", "output.dense"):
                chosen = [n for n in pool if n.endswith(suffix)]
                if chosen:
                    return chosen[-1]
            if pool:
                return pool[-1]
    if spatial:
        return spatial[-1]
    raise ValueError("No filtered layer has a spatial or token output to map onto the image; "
                     f"filtered layers: {list(layers)}.")


def _layer_kind(model, layer_name: str, example=None) -> str:
    """"spatial" (conv maps, channels-last maps) or "tokens" (ViT) for a layer, from one forward pass."""
    torch = _torch()
    adapter = _maybe_adapter(model)
    if example is None:
        cfg = _config(model)
        size = getattr(cfg, "image_size", None) or 64
        size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        example = torch.zeros(1, getattr(cfg, "num_channels", 3), *size)
    x, _ = _as_batch(example)
    device = _model_device(model)
    x = x[:1].to(device) if device is not None else x[:1]
    module = _hook_module(adapter if adapter is not None else model, layer_name)
    with torch.no_grad(), _base_model_context(model), _capture(module, detach=True) as store:
        _logits(model, x)
    return _spatial(store["out"], module, _config(model), x.shape[-2:])[1]


def _filter_weights(adapter, layer_name: str):
    torch = _torch()
    layer = adapter.filter_layers()[layer_name]
    with torch.no_grad():
        return (1.0 - layer.filters(_active_name(adapter))).detach().float()


def _saliency_chunk(model, x, ids, layer_name, methods, weights, generator):
    """Maps of one chunk of images: {method: (b, H, W)} (and the layer's grid)."""
    torch = _torch()
    module = _hook_module(model, layer_name)
    config = _config(model)
    hw = x.shape[-2:]
    need_grad = "gradcam" in methods
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_base_model_context(model))
        stack.enter_context(torch.enable_grad() if need_grad else torch.no_grad())
        store = stack.enter_context(_capture(module, detach=not need_grad))
        xin = x.clone().requires_grad_(True) if need_grad else x
        logits = _logits(model, xin)
        act = store.get("out")
        if act is None:
            raise RuntimeError(f"The layer {layer_name!r} did not run in the forward pass.")
        target = torch.as_tensor(ids, device=logits.device)
        if need_grad:
            score = logits.gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, act)
            act = act.detach()
            g_sp, _ = _spatial(grad.float(), module, config, hw)
        a_sp, kind = _spatial(act.float(), module, config, hw)
    grid = tuple(a_sp.shape[-2:])
    if any(m in methods for m in _FILTER_METHODS):
        w = weights.to(a_sp.device)[target][:, :, None, None]
        if w.shape[1] != a_sp.shape[1]:
            raise RuntimeError(f"Layer {layer_name!r} has {a_sp.shape[1]} channels but {w.shape[1]} filters.")
        if "filter" in methods:
            m = (w * a_sp.abs()).sum(1) if kind == "tokens" else torch.relu((w * a_sp).sum(1))
            out["filter"] = _normalise(_upsample(m, hw)).cpu()
        if "filter_abs" in methods:
            out["filter_abs"] = _normalise(_upsample((w * a_sp.abs()).sum(1), hw)).cpu()
    if need_grad:
        if kind == "tokens":
            m = torch.relu((g_sp * a_sp).sum(1))
        else:
            m = torch.relu((g_sp.mean((2, 3), keepdim=True) * a_sp).sum(1))
        out["gradcam"] = _normalise(_upsample(m, hw)).cpu()
    if "random" in methods:
        out["random"] = random_saliency(x.shape[0], hw, grid, generator=generator)
    return out, grid


def saliency_maps(model, pixel_values, classes, *, layer: Optional[str] = None, methods=DEFAULT_METHODS,
                  batch_size: int = 32, seed: int = 0, generator=None) -> dict[str, Any]:
    """Filter saliency, Grad-CAM and the random control for the same images, in one pass per chunk.

    Args:
        model: an :class:`~hf_unlearn.UnlearnAdapter` (``"filter"`` needs one), or a plain
            transformers classifier for ``"gradcam"``/``"random"`` (then ``layer`` is required).
        pixel_values: ``(B, C, H, W)`` (or ``(C, H, W)``) model inputs.
        classes: one class (id or name) for all images, or one per image.
        layer: the filtered layer to read (full name or unique suffix); default
            :func:`default_saliency_layer`.
        methods: any of ``"filter"`` (CNN: CAM-style ``ReLU(sum_k (1 - alpha) A_k)``; ViT tokens:
            ``sum_k (1 - alpha) |A_k|``), ``"filter_abs"`` (``sum_k (1 - alpha) |A_k|`` for CNNs too: the
            size of what the row removes at each location, never empty), ``"gradcam"``, ``"random"``.
        seed / generator: for the random maps.

    Returns ``{method: (B, H, W) float tensor in [0, 1], "layer": name, "grid": (h, w)}``.
    """
    torch = _torch()
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown saliency method(s) {unknown}; choose from {list(METHODS)}.")
    x, _ = _as_batch(pixel_values)
    adapter = _maybe_adapter(model)
    if adapter is None and any(m in methods for m in _FILTER_METHODS):
        raise TypeError("Filter saliency needs an UnlearnAdapter (or its PeftModel).")
    ids = _class_ids(model, classes, x.shape[0])
    if layer is None:
        if adapter is None:
            raise ValueError("Give layer= (a module name) for a plain model.")
        layer_name = default_saliency_layer(adapter, x[:1])
    else:
        layer_name = resolve_layer(adapter, layer) if adapter is not None else layer
    wants_filters = any(m in methods for m in _FILTER_METHODS)
    weights = _filter_weights(adapter, layer_name) if adapter is not None and wants_filters else None
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    device = _model_device(model)
    chunks: dict[str, list] = {m: [] for m in methods}
    grid = None
    for start in range(0, x.shape[0], max(1, batch_size)):
        xb = x[start:start + batch_size]
        xb = xb.to(device) if device is not None else xb
        maps, grid = _saliency_chunk(model, xb, ids[start:start + batch_size], layer_name, methods, weights,
                                     generator)
        for m in methods:
            chunks[m].append(maps[m])
    out: dict[str, Any] = {m: torch.cat(chunks[m]) for m in methods}
    out["layer"] = layer_name
    out["grid"] = grid
    return out


def filter_saliency(adapter, pixel_values, classes, *, layer: Optional[str] = None, batch_size: int = 32):
    """``(B, H, W)`` maps in [0, 1]: where the units class ``c``'s row switches off are active.

    CNN: ``ReLU(sum_k (1 - alpha[c, k]) A_k)``; ViT: per patch token ``sum_k (1 - alpha[c, k]) |A_k|``;
    read on the base model (no class selected), upsampled bilinearly, min-max normalised.
    ``classes`` is one class (id or name) for all images or one per image; an unknown class or a
    layer the adapter does not filter raises ``ValueError`` listing the valid ones.
    """
    _as_adapter(adapter, "filter_saliency")
    return saliency_maps(adapter, pixel_values, classes, layer=layer, methods=("filter",),
                         batch_size=batch_size)["filter"]


def gradcam(model, pixel_values, classes, *, layer: Optional[str] = None, batch_size: int = 32):
    """Grad-CAM ``(B, H, W)`` in [0, 1] of the base model's logit for ``classes`` on ``layer``.

    CNN: channel weights = spatial mean of the gradient, ``ReLU(sum_k w_k A_k)``; ViT tokens:
    ``ReLU(sum_k grad * act)`` per patch token. Default layer: the one :func:`filter_saliency` uses.
    """
    return saliency_maps(model, pixel_values, classes, layer=layer, methods=("gradcam",),
                         batch_size=batch_size)["gradcam"]


def random_saliency(images, image_size=None, grid=(7, 7), *, seed: int = 0, generator=None):
    """Seeded uniform noise at ``grid`` resolution, upsampled (bilinear) to ``image_size``; ``(B, H, W)``.

    ``images`` is a batch of images (its count and size are used) or a count with ``image_size``.
    """
    torch = _torch()
    if isinstance(images, int):
        count = images
        if image_size is None:
            raise ValueError("Give image_size=(H, W) with a count of images.")
    else:
        x, _ = _as_batch(images)
        count = x.shape[0]
        image_size = image_size or tuple(x.shape[-2:])
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    h, w = (int(grid), int(grid)) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    noise = torch.rand(count, h, w, generator=generator)
    return _normalise(_upsample(noise, image_size))


# --------------------------------------------------------------------------------------------
# faithfulness: deletion / insertion (RISE)
# --------------------------------------------------------------------------------------------


def _blur(x, sigma: Optional[float] = None):
    torch = _torch()
    from torch.nn import functional as F

    h = x.shape[-2]
    sigma = sigma or max(0.5, 5.0 * h / 224.0)
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y


def _baseline(baseline, x):
    torch = _torch()
    if isinstance(baseline, str):
        if baseline == "blur":
            return _blur(x)
        if baseline in ("zero", "zeros", "mean"):
            return torch.zeros_like(x)
        raise ValueError(f"baseline must be a number, a tensor, 'zero' or 'blur', not {baseline!r}.")
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return b.expand_as(x).clone() if b.ndim <= 3 or b.shape[0] == 1 else b.reshape(x.shape).clone()
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(b.shape)} does not fit images {tuple(x.shape)}.") from None


def perturbation_curves(model, images, saliency, target, *, mode: str = "deletion", steps: int = 16,
                        baseline: Any = 0.0, batch_size: int = 64, apply_softmax: bool = True, seed: int = 0):
    """Class-probability curves for deletion/insertion: ``(fractions (steps+1,), curves (B, steps+1))``.

    Step ``i`` changes the ``round(i * H * W / steps)`` most salient pixels (all channels). Pixels
    of equal saliency are taken in a random order (seeded by ``seed``): an all-zero map then
    behaves like a random one instead of deleting from the top-left corner. ``model``: an adapter
    (no class selected), a transformers classifier, or a callable returning logits — or
    probabilities with ``apply_softmax=False``.
    """
    torch = _torch()
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', not {mode!r}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    x, _ = _as_batch(images)
    x = x.float()
    s = torch.as_tensor(saliency).float() if not isinstance(saliency, torch.Tensor) else saliency.float()
    if s.ndim == 4 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim == 2:
        s = s[None]
    b, c, h, w = x.shape
    if s.shape != (b, h, w):
        raise ValueError(f"saliency must be (H, W) or (B, H, W) matching the images {tuple(x.shape)}, "
                         f"got {tuple(s.shape)}.")
    ids = torch.as_tensor(_class_ids(model, target, b), dtype=torch.long)
    base = _baseline(baseline, x)
    p = h * w
    gen = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(p, generator=gen) for _ in range(b)])  # random tie-break
    flat = s.reshape(b, p).cpu().gather(1, shuffle)
    order = shuffle.gather(1, torch.argsort(flat, dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(p).expand(b, p).contiguous())
    counts = torch.tensor([int(round(i * p / steps)) for i in range(steps + 1)])
    fractions = counts.double() / p
    curves = torch.zeros(b, steps + 1, dtype=torch.float64)
    per_chunk = max(1, batch_size // (steps + 1))
    device = _model_device(model)
    with torch.no_grad(), _base_model_context(model):
        for start in range(0, b, per_chunk):
            sl = slice(start, start + per_chunk)
            n = x[sl].shape[0]
            mask = (rank[sl][:, None, :] < counts[None, :, None]).view(n, steps + 1, 1, h, w)
            xi, bi = x[sl][:, None].cpu(), base[sl][:, None].cpu()
            variants = torch.where(mask, bi, xi) if mode == "deletion" else torch.where(mask, xi, bi)
            variants = variants.reshape(n * (steps + 1), c, h, w)
            if device is not None:
                variants = variants.to(device)
            out = _logits(model, variants).float()
            probs = out.softmax(-1) if apply_softmax else out
            tgt = ids[sl].repeat_interleave(steps + 1).to(probs.device)
            curves[sl] = probs.gather(1, tgt[:, None])[:, 0].view(n, steps + 1).double().cpu()
    return fractions, curves


def _auc(fractions, curves):
    dx = (fractions[1:] - fractions[:-1])[None]
    return ((curves[:, 1:] + curves[:, :-1]) * dx / 2.0).sum(1)


def _auc_result(fractions, curves, single: bool, return_curve: bool):
    auc = _auc(fractions, curves).numpy()
    if single:
        value = float(auc[0])
        return (value, curves[0].numpy()) if return_curve else value
    return (auc, curves.numpy()) if return_curve else auc


def deletion_auc(model, image, saliency, target, steps: int = 16, baseline: Any = 0.0, *, batch_size: int = 64,
                 apply_softmax: bool = True, return_curve: bool = False, seed: int = 0):
    """RISE deletion AUC: delete the most salient pixels first; lower = more faithful.

    Args:
        model: an :class:`~hf_unlearn.UnlearnAdapter` (run with no class selected), a transformers
            classifier, or a callable ``f(x) -> logits`` (probabilities with ``apply_softmax=False``).
        image: ``(C, H, W)`` or a batch ``(B, C, H, W)`` of model inputs.
        saliency: ``(H, W)`` or ``(B, H, W)``.
        target: the class (id, or name for an adapter), one for all or one per image.
        steps: number of equal deletion steps (``steps + 1`` points, 0 to 100% of the pixels).
        baseline: what deleted pixels become: a number (0 = the dataset mean in normalised
            space), a tensor, ``"zero"`` or ``"blur"`` (a Gaussian blur of the image).
        seed: order of pixels with equal saliency (random, seeded).

    Returns a float for one image, else a ``(B,)`` array (with ``return_curve``, also the curves).
    """
    single = _as_batch(image)[1]
    fr, curves = perturbation_curves(model, image, saliency, target, mode="deletion", steps=steps, baseline=baseline,
                                     batch_size=batch_size, apply_softmax=apply_softmax, seed=seed)
    return _auc_result(fr, curves, single, return_curve)


def insertion_auc(model, image, saliency, target, steps: int = 16, baseline: Any = 0.0, *, batch_size: int = 64,
                  apply_softmax: bool = True, return_curve: bool = False, seed: int = 0):
    """RISE insertion AUC: start from the baseline, insert the most salient pixels first; higher = more faithful.

    Same arguments and return values as :func:`deletion_auc`.
    """
    single = _as_batch(image)[1]
    fr, curves = perturbation_curves(model, image, saliency, target, mode="insertion", steps=steps,
                                     baseline=baseline, batch_size=batch_size, apply_softmax=apply_softmax, seed=seed)
    return _auc_result(fr, curves, single, return_curve)


# --------------------------------------------------------------------------------------------
# plots (bare matplotlib Figures on Agg, atomic writes: the style of evaluation/plots.py)
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float):
    from ..evaluation.plots import new_figure as new

    return new(width, height)


def _save(fig, path) -> Path:
    from ..evaluation.plots import save_figure as save

    return save(fig, path)


def _short_layer_names(layers: Sequence[str]) -> list[str]:
    parts = [l.split(".") for l in layers]
    if len(parts) < 2:
        return [".".join(p[-2:]) for p in parts]
    pre = 0
    while all(len(p) > pre + 1 for p in parts) and len({p[pre] for p in parts}) == 1:
        pre += 1
    suf = 0
    while all(len(p) > pre + suf + 1 for p in parts) and len({p[-1 - suf] for p in parts}) == 1:
        suf += 1
    return [".".join(p[pre:len(p) - suf]) for p in parts]


def _names(class_names, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"`class_names` has {len(names)} entries but there are {n} classes.")
    return names


def plot_filter_usage(usage: Mapping[str, Any], class_names, path, *, title: Optional[str] = None) -> Path:
    """Two heatmaps, classes (rows) x filtered layers (columns): mean ``1 - alpha`` and share ``alpha < 0.5``."""
    from matplotlib import colormaps

    mean_off, share_off = _to_numpy(usage["mean_off"]), _to_numpy(usage["share_off"])
    layers = list(usage["layers"])
    n, L = mean_off.shape
    names = _names(class_names, n)
    short = _short_layer_names(layers)
    width = min(max(8.0, 0.32 * L * 2 + 5.0), 60.0)
    fig = _new_figure(width, min(max(3.5, 0.3 * n + 2.5), 40.0))
    cmap = colormaps["magma"]
    for i, (M, label) in enumerate(((mean_off, "mean of 1 - alpha"),
                                     (share_off, f"share of units with alpha < {usage.get('threshold', 0.5)}"))):
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=max(float(np.nanmax(M)), 1e-6), aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(label)
        if L <= 120:
            ax.set_xticks(range(L), short, rotation=90, fontsize=max(4, min(8, 500 / max(L, 1))))
        ax.set_xlabel("filtered layer")
        if n <= 60:
            ax.set_yticks(range(n), names if i == 0 else [""] * n)
        if i == 0:
            ax.set_ylabel("class c (row)")
    fig.suptitle(title or "How much of each filtered layer each class's row switches off")
    return _save(fig, path)


def plot_filter_maps(maps: Mapping[str, Any], class_names, path_prefix, *, per_page: int = 12,
                     order: Optional[Sequence[int]] = None) -> list[Path]:
    """Per layer, a heatmap classes x units of ``1 - alpha`` (which components each row switches off).

    Layers are drawn ``per_page`` to a figure: ``{path_prefix}_01.png``, ``_02.png``, ...
    ``order`` reorders the classes (e.g. the dendrogram order).
    """
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    maps = _maps_of(maps)
    layers = list(maps)
    n = next(iter(maps.values())).shape[0]
    names = _names(class_names, n)
    order = list(order) if order is not None else list(range(n))
    short = _short_layer_names(layers)
    cmap = colormaps["magma"]
    paths = []
    pages = [layers[i:i + per_page] for i in range(0, len(layers), per_page)]
    prefix = Path(path_prefix)
    for p, page in enumerate(pages):
        cols = min(3, len(page))
        rows = int(math.ceil(len(page) / cols))
        fig = _new_figure(5.0 * cols, min(max(2.4, 0.22 * n + 1.4), 12.0) * rows + 0.6)
        fig.subplots_adjust(hspace=0.6, wspace=0.35)
        for j, layer in enumerate(page):
            ax = fig.add_subplot(rows, cols, j + 1)
            M = maps[layer][order]
            im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            ax.set_title(f"{short[layers.index(layer)]} ({M.shape[1]} units)", fontsize=8)
            if n <= 40:
                ax.set_yticks(range(n), [names[i] for i in order], fontsize=max(4, min(8, 240 / n)))
            ax.set_xlabel("unit k", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        fig.suptitle(f"1 - alpha per class (rows) and unit: what each row switches off "
                     f"(page {p + 1}/{len(pages)})")
        paths.append(_save(fig, prefix.with_name(f"{prefix.name}_{p + 1:02d}.png")))
    return paths


def plot_similarity_confusion(similarity, confusion, class_names, path, *, clustering: Optional[Mapping] = None,
                              correlation: Optional[Mapping] = None, title: Optional[str] = None) -> Path:
    """Row similarity in dendrogram order (with the dendrogram), next to the base model's confusion.

    The confusion is row-normalised (%), in the same class order, with the diagonal hidden (it
    would dominate the colour scale).
    """
    from matplotlib import colormaps
    from scipy.cluster.hierarchy import dendrogram

    S = _to_numpy(similarity)
    C = _to_numpy(confusion)
    n = S.shape[0]
    names = _names(class_names, n)
    clustering = clustering or cluster_rows(S)
    order = list(clustering["order"])
    rows = C.sum(1, keepdims=True)
    Cn = 100.0 * np.divide(C, rows, out=np.zeros_like(C), where=rows > 0)
    Cn = Cn[np.ix_(order, order)]
    np.fill_diagonal(Cn, np.nan)
    So = S[np.ix_(order, order)]
    side = min(max(4.0, 0.4 * n + 2.5), 30.0)
    fig = _new_figure(2 * side + 2.0, side * 1.3)
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 4], hspace=0.12, wspace=0.35)
    ax_d = fig.add_subplot(gs[0, 0])
    Z = clustering.get("linkage")
    if Z is not None and len(Z):
        dendrogram(np.asarray(Z), ax=ax_d, no_labels=True, color_threshold=0, above_threshold_color="#555555")
        ax_d.set_xlim(0, 10 * n)
    ax_d.axis("off")
    ax_d.set_title("hierarchical clustering of rows (average linkage on 1 - similarity)", fontsize=9)
    labels = [names[i] for i in order]
    tick_kw = dict(rotation=90, fontsize=max(4, min(9, 300 / n)))
    ax_s = fig.add_subplot(gs[1, 0])
    im = ax_s.imshow(So, cmap=colormaps["viridis"], vmin=min(0.0, float(So.min())), vmax=1.0, aspect="auto")
    cax = ax_s.inset_axes([1.02, 0.0, 0.03, 1.0])
    fig.colorbar(im, cax=cax, label="cosine similarity of 1 - alpha")
    ax_s.set_title("filter-row similarity (dendrogram order)", fontsize=10)
    ax_c = fig.add_subplot(gs[1, 1])
    im2 = ax_c.imshow(np.ma.masked_invalid(Cn), cmap=colormaps["magma"], vmin=0.0,
                      vmax=max(float(np.nanmax(Cn)) if np.isfinite(Cn).any() else 0.0, 1e-6), aspect="auto")
    cax2 = ax_c.inset_axes([1.02, 0.0, 0.03, 1.0])
    fig.colorbar(im2, cax=cax2, label="% of true class (row) predicted as column")
    ax_c.set_title("base model confusion, same order (diagonal hidden)", fontsize=10)
    if n <= 80:
        for ax in (ax_s, ax_c):
            ax.set_xticks(range(n), labels, **tick_kw)
            ax.set_yticks(range(n), labels, fontsize=tick_kw["fontsize"])
    ax_c.set_xlabel("predicted")
    ax_c.set_ylabel("true")
    corr = correlation or {}
    text = "similarity vs symmetrised confusion (off-diagonal pairs): "
    text += ", ".join(f"{k} {corr[k]:.3f}" if corr.get(k) is not None else f"{k} n/a" for k in ("spearman", "pearson"))
    fig.suptitle((title or "Which classes share filters, and which the base model confuses") + "\n" + text, fontsize=11)
    return _save(fig, path)


_METHOD_TITLES = {"filter": "filter saliency", "filter_abs": "filter |A| saliency", "gradcam": "Grad-CAM",
                  "random": "random"}


def _display_image(x, mean=None, std=None) -> np.ndarray:
    x = _to_numpy(x)
    if mean is not None and std is not None and len(mean) == x.shape[0] and len(std) == x.shape[0]:
        x = x * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
        x = np.clip(x, 0.0, 1.0)
    else:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if x.shape[0] == 1:
        return x[0]
    return np.transpose(x[:3], (1, 2, 0))


def plot_saliency_overlays(images, maps: Mapping[str, Any], path, *, row_labels: Optional[Sequence[str]] = None,
                           cell_notes: Optional[Mapping[str, Sequence[str]]] = None, image_mean=None,
                           image_std=None, title: Optional[str] = None) -> Path:
    """One row per image: the original, then each map (e.g. filter saliency | Grad-CAM | random) over it.

    ``images``: ``(B, C, H, W)`` model inputs (un-normalised for display with ``image_mean``/``image_std``
    when given); ``maps``: ``{method: (B, H, W)}`` in [0, 1]; ``cell_notes``: ``{method: [text per image]}``.
    """
    from matplotlib import colormaps

    x, _ = _as_batch(images)
    b = x.shape[0]
    methods = list(maps)
    cols = 1 + len(methods)
    fig = _new_figure(2.3 * cols, 2.4 * b + 0.8)
    for i in range(b):
        img = _display_image(x[i], image_mean, image_std)
        grey = img if img.ndim == 2 else img.mean(-1)
        ax = fig.add_subplot(b, cols, i * cols + 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if row_labels is not None:
            ax.set_ylabel(row_labels[i], fontsize=7)
        if i == 0:
            ax.set_title("original", fontsize=9)
        for j, m in enumerate(methods):
            ax = fig.add_subplot(b, cols, i * cols + 2 + j)
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
            ax.imshow(_to_numpy(maps[m][i]), cmap=colormaps["jet"], alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_METHOD_TITLES.get(m, m), fontsize=9)
            if cell_notes and m in cell_notes:
                ax.set_xlabel(cell_notes[m][i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_auc_curves(fractions, curves: Mapping[str, Mapping[str, Any]], path, *, title: Optional[str] = None) -> Path:
    """Mean deletion and insertion curves per method: ``curves = {method: {"deletion": (B, S+1), "insertion": ...}}``."""
    fr = _to_numpy(fractions)
    fig = _new_figure(10.0, 4.0)
    colors = {"filter": "#d62728", "filter_abs": "#ff7f0e", "gradcam": "#1f77b4", "random": "#7f7f7f"}
    for k, mode in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, k + 1)
        for method, d in curves.items():
            c = _to_numpy(d[mode])
            if c.size == 0:
                continue
            auc = float(_auc(_torch().as_tensor(fr), _torch().as_tensor(c)).mean())
            ax.plot(fr, c.mean(0), marker=".", color=colors.get(method), label=f"{method} (AUC {auc:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("probability of the class")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC = more faithful)", fontsize=10)
    fig.suptitle(title or "Mean RISE curves")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# the whole analysis
# --------------------------------------------------------------------------------------------


def _keep_smallest(kept, keys, x, y, k):
    """Merge a batch into a kept set, keeping the k smallest random keys (seeded reservoir sample)."""
    torch = _torch()
    if k <= 0 or keys.numel() == 0:
        return kept
    if kept is not None:
        keys = torch.cat([kept[0], keys])
        x = torch.cat([kept[1], x])
        y = torch.cat([kept[2], y])
    if keys.numel() > k:
        idx = torch.argsort(keys)[:k]
        keys, x, y = keys[idx], x[idx], y[idx]
    return keys, x, y


def _sort_by_key(kept):
    torch = _torch()
    if kept is None:
        return None, None
    idx = torch.argsort(kept[0])
    return kept[1][idx], kept[2][idx]


def _stats(values) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "sem": std / math.sqrt(v.size), "n": int(v.size)}


def explain_adapter(
    adapter,
    loader,
    *,
    output_dir: Union[str, os.PathLike, None] = None,
    classes: Optional[Sequence[Any]] = None,
    layer: Optional[str] = None,
    images_per_class: int = 2,
    auc_images: int = 200,
    steps: int = 16,
    baseline: Any = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    image_mean=None,
    image_std=None,
    methods: Optional[Sequence[str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Filter maps, row similarity vs confusion, saliency overlays and deletion/insertion AUCs.

    Args:
        adapter: an :class:`~hf_unlearn.UnlearnAdapter`.
        loader: yields ``{"pixel_values", "labels"}`` (``build_dataloader``); one pass gives the base
            model's confusion matrix and a seeded random choice of images (``images_per_class`` per
            class for the overlays, ``auc_images`` for the AUCs, from ``classes``).
        classes: classes (ids or names) to explain (default: all).
        layer: saliency layer (default :func:`default_saliency_layer`).
        output_dir: where ``explain.json``, ``explain.md`` and the PNGs go (None: nothing written).
        methods: saliency methods to compare (default: ``filter``, ``gradcam``, ``random``, plus
            ``filter_abs`` when the layer is a CNN layer, where the two filter forms differ).

    Returns the report dict (also written as JSON).
    """
    torch = _torch()
    from tqdm.auto import tqdm

    adapter = _as_adapter(adapter, "explain_adapter")
    adapter.eval()
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    n = adapter.num_classes
    id2label = adapter.id2label
    names = [id2label.get(i, str(i)) for i in range(n)]
    wanted = sorted({adapter.class_id(c) for c in classes}) if classes else list(range(n))
    layer_name = resolve_layer(adapter, layer) if layer is not None else None
    t0 = time.perf_counter()

    maps = filter_maps(adapter)
    usage = filter_usage(maps)
    sim = row_similarity(maps)
    clustering = cluster_rows(sim)
    tops = top_components(maps, k=5)

    # one pass: confusion + seeded choice of images
    gen = torch.Generator().manual_seed(seed)
    device = _model_device(adapter)
    C = np.zeros((n, n), dtype=np.int64)
    wanted_t = torch.tensor(wanted)
    per_class: dict[int, Any] = {c: None for c in wanted}
    auc_kept = None
    with torch.no_grad(), _base_model_context(adapter):
        for batch in tqdm(loader, desc="confusion + sampling", disable=not progress, leave=False, dynamic_ncols=True):
            x, y = _unpack(batch)
            y = torch.as_tensor(y).long().cpu()
            logits = _logits(adapter, x.to(device) if device is not None else x)
            np.add.at(C, (y.numpy(), logits.argmax(1).cpu().numpy()), 1)
            keys = torch.rand(y.shape[0], generator=gen)
            xs = x.detach().cpu()
            sel = torch.isin(y, wanted_t)
            if sel.any():
                auc_kept = _keep_smallest(auc_kept, keys[sel], xs[sel], y[sel], auc_images)
                for c in wanted:
                    m = y == c
                    if m.any():
                        per_class[c] = _keep_smallest(per_class[c], keys[m], xs[m], y[m], images_per_class)
    if C.sum() == 0:
        raise ValueError("The loader yielded no samples.")
    correlation = similarity_confusion_correlation(sim, C)
    def example_of(kept):
        return next((v[1][:1] for v in kept.values() if v is not None), None)

    if layer_name is None:
        layer_name = default_saliency_layer(adapter, example_of(per_class))

    rand_gen = torch.Generator().manual_seed(seed + 1)
    if methods is None:
        methods = METHODS if _layer_kind(adapter, layer_name, example_of(per_class)) == "spatial" else DEFAULT_METHODS
    methods = tuple(methods)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"Unknown saliency method(s) in {list(methods)}; choose from {list(METHODS)}.")

    def evaluate(x, y, desc):
        out = {m: {"deletion": [], "insertion": []} for m in methods}
        curves = {m: {"deletion": [], "insertion": []} for m in methods}
        sal_all = {m: [] for m in methods}
        empty = {m: [] for m in methods}
        chunk = max(1, batch_size // 2)
        starts = range(0, x.shape[0], chunk)
        for s0 in tqdm(starts, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            xb, yb = x[s0:s0 + chunk], y[s0:s0 + chunk]
            sal = saliency_maps(adapter, xb, yb, layer=layer_name, methods=methods, batch_size=chunk,
                                generator=rand_gen)
            for m in methods:
                sal_all[m].append(sal[m])
                empty[m].append(sal[m].flatten(1).amax(1) <= 0)
                for mode in ("deletion", "insertion"):
                    fr, cv = perturbation_curves(adapter, xb, sal[m], yb, mode=mode, steps=steps, baseline=baseline,
                                                 batch_size=batch_size, seed=seed + s0)
                    curves[m][mode].append(cv)
                    out[m][mode].append(_auc(fr, cv))
        fr = torch.tensor([round(i * x.shape[-2] * x.shape[-1] / steps) for i in range(steps + 1)]).double() / (
            x.shape[-2] * x.shape[-1])
        cat = lambda parts: torch.cat(parts).numpy() if parts else np.zeros((0,))  # noqa: E731
        return ({m: {k: cat(v) for k, v in d.items()} for m, d in out.items()},
                {m: {k: cat(v) for k, v in d.items()} for m, d in curves.items()},
                {m: torch.cat(v) if v else None for m, v in sal_all.items()}, fr.numpy(),
                {m: float(torch.cat(v).float().mean()) if v else None for m, v in empty.items()})

    # AUCs over the sampled images
    auc_x, auc_y = _sort_by_key(auc_kept)
    faithfulness: dict[str, Any] = {"n_images": 0}
    auc_curves = None
    fractions = None
    if auc_x is not None and auc_images > 0:
        aucs, auc_curves, _, fractions, empty_share = evaluate(auc_x, auc_y, "deletion/insertion AUC")
        labels = auc_y.numpy()
        faithfulness = {
            "n_images": int(len(labels)),
            "summary": {m: {mode: _stats(aucs[m][mode]) for mode in ("deletion", "insertion")} for m in methods},
            "per_class": {m: {mode: [(_stats(aucs[m][mode][labels == c])["mean"] if c in wanted else None)
                                     for c in range(n)] for mode in ("deletion", "insertion")} for m in methods},
            "empty_maps": empty_share,
            "wins": {
                f"{a} vs {b}": {
                    "deletion": float(np.mean(aucs[a]["deletion"] < aucs[b]["deletion"])),
                    "insertion": float(np.mean(aucs[a]["insertion"] > aucs[b]["insertion"])),
                }
                for a in methods for b in ("gradcam", "random") if b in methods and a != b and a != "random"
            },
            "mean_curves": {m: {mode: auc_curves[m][mode].mean(0) for mode in ("deletion", "insertion")}
                            for m in methods},
            "fractions": fractions,
            "labels": labels,
            "per_image": {m: {mode: aucs[m][mode] for mode in ("deletion", "insertion")} for m in methods},
        }

    # overlays
    overlays = {}
    overlay_data = {}
    for c in wanted:
        xc, yc = _sort_by_key(per_class[c])
        if xc is None:
            continue
        aucs_c, _, sal_c, _, _ = evaluate(xc, yc, f"saliency {names[c]}")
        with torch.no_grad(), _base_model_context(adapter):
            probs = _logits(adapter, xc.to(device) if device is not None else xc).softmax(-1).cpu()
        overlay_data[c] = (xc, sal_c, aucs_c, probs)
        overlays[names[c]] = {m: {mode: aucs_c[m][mode] for mode in ("deletion", "insertion")} for m in methods}

    row_summary = []
    sim_off = sim.copy()
    np.fill_diagonal(sim_off, -np.inf)
    Coff = C.astype(np.float64).copy()
    np.fill_diagonal(Coff, -1)
    for c in range(n):
        j = int(np.argmax(usage["mean_off"][c]))
        row_summary.append({
            "class": names[c],
            "mean_off": float(usage["mean_off_overall"][c]),
            "share_off": float(usage["share_off_overall"][c]),
            "most_used_layer": usage["layers"][j],
            "most_used_layer_mean_off": float(usage["mean_off"][c, j]),
            "nearest_row": names[int(np.argmax(sim_off[c]))] if n > 1 else None,
            "nearest_row_similarity": float(np.max(sim_off[c])) if n > 1 else None,
            "most_confused_with": names[int(np.argmax(Coff[c]))] if n > 1 and Coff[c].max() > 0 else None,
            "base_accuracy": float(C[c, c] / C[c].sum() * 100.0) if C[c].sum() else None,
        })

    report: dict[str, Any] = dict(extra or {})
    report.update({
        "title": "What the weight filters say about each class",
        "num_classes": n,
        "class_names": names,
        "classes_explained": [names[c] for c in wanted],
        "saliency_layer": layer_name,
        "saliency_methods": list(methods),
        "settings": {"images_per_class": images_per_class, "auc_images": auc_images, "steps": steps,
                     "baseline": baseline if isinstance(baseline, (int, float, str)) else "tensor",
                     "batch_size": batch_size, "seed": seed, "off_threshold": OFF_THRESHOLD},
        "filters": {
            "layers": usage["layers"],
            "units": usage["units"],
            "mean_off": usage["mean_off"],
            "share_off": usage["share_off"],
            "top_components": {l: [[{"unit": k, "off": v} for k, v in row] for row in rows]
                               for l, rows in tops.items()},
        },
        "rows": row_summary,
        "similarity": {"matrix": sim, "order": [names[i] for i in clustering["order"]],
                       "order_ids": clustering["order"], "linkage": clustering["linkage"],
                       "method": clustering["method"]},
        "confusion": {"counts": C, "n_samples": int(C.sum()),
                      "base_accuracy": float(np.trace(C) / C.sum() * 100.0)},
        "similarity_vs_confusion": correlation,
        "faithfulness": faithfulness,
        "overlay_aucs": overlays,
        "definitions": DEFINITIONS,
    })

    if output_dir is not None:
        out = Path(output_dir)
        figures: list[str] = []
        if plots:
            figures.append(str(plot_filter_usage(usage, names, out / "filter_usage.png")))
            figures += [str(p) for p in plot_filter_maps(maps, names, out / "filter_maps", order=clustering["order"])]
            figures.append(str(plot_similarity_confusion(sim, C, names, out / "similarity_confusion.png",
                                                         clustering=clustering, correlation=correlation)))
            if auc_curves is not None:
                figures.append(str(plot_auc_curves(fractions, auc_curves, out / "auc_curves.png",
                                                   title=f"Mean RISE curves over {faithfulness['n_images']} images "
                                                         f"(layer {layer_name})")))
            for c, (xc, sal_c, aucs_c, probs) in overlay_data.items():
                pred = probs.argmax(-1)
                row_labels = [f"{names[c]}: p={probs[i, c]:.2f}\npred {names[int(pred[i])]}" for i in range(len(xc))]
                notes = {m: [f"del {aucs_c[m]['deletion'][i]:.2f} / ins {aucs_c[m]['insertion'][i]:.2f}"
                             + (" (empty map)" if float(sal_c[m][i].max()) <= 0 else "")
                             for i in range(len(xc))] for m in methods}
                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in names[c])
                figures.append(str(plot_saliency_overlays(
                    xc, {m: sal_c[m] for m in methods}, out / f"saliency_{c:03d}_{safe}.png",
                    row_labels=row_labels, cell_notes=notes, image_mean=image_mean, image_std=image_std,
                    title=f"class {c} '{names[c]}' (row {c}), layer {layer_name}")))
        report["figures"] = [os.path.relpath(f, out) for f in figures]
        report["seconds"] = time.perf_counter() - t0
        write_explain_report(report, out)
    else:
        report["seconds"] = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "–"
    return str(v).replace("|", "\\|")


def _markdown(r: Mapping[str, Any]) -> str:
    lines = [f"# {r.get('title', 'Explaining the weight filters')}", ""]
    run = [(k, r[k]) for k in ("adapter", "base_model", "dataset", "split", "saliency_layer") if r.get(k)]
    s = r.get("settings", {})
    run += [("images per class / AUC images", f"{s.get('images_per_class')} / {r['faithfulness'].get('n_images')}"),
            ("steps, baseline, seed", f"{s.get('steps')}, {s.get('baseline')}, {s.get('seed')}"),
            ("base accuracy on the split", f"{_fmt(r['confusion']['base_accuracy'], 2)}% "
                                           f"({r['confusion']['n_samples']} samples)")]
    lines += ["| run | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in run] + [""]

    lines += ["## What each row switches off", "",
              "| class (row) | mean 1-α | share α<0.5 | most-used layer (mean 1-α) | nearest row (cos) | "
              "base: most confused with | base acc (%) |", "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(r["rows"]):
        lines.append(
            f"| {i} {_fmt(row['class'])} | {_fmt(row['mean_off'])} | {_fmt(row['share_off'])} | "
            f"{_fmt(row['most_used_layer'])} ({_fmt(row['most_used_layer_mean_off'])}) | "
            f"{_fmt(row['nearest_row'])} ({_fmt(row['nearest_row_similarity'])}) | "
            f"{_fmt(row['most_confused_with'])} | {_fmt(row['base_accuracy'], 1)} |")
    lines.append("")

    corr = r["similarity_vs_confusion"]
    lines += ["## Row similarity vs the base model's confusion", "",
              f"Dendrogram order: {', '.join(map(str, r['similarity']['order']))}", "",
              f"Spearman {_fmt(corr.get('spearman'))} (p {_fmt(corr.get('spearman_p'), 4)}), "
              f"Pearson {_fmt(corr.get('pearson'))} (p {_fmt(corr.get('pearson_p'), 4)}) over "
              f"{corr.get('n_pairs')} class pairs. Positive = classes whose rows switch off the same units are "
              "the ones the base model confuses.", ""]

    f = r["faithfulness"]
    lines += ["## Faithfulness: deletion / insertion AUC (RISE)", ""]
    if f.get("n_images"):
        lines += [f"{f['n_images']} images (seeded sample), probability of the true class under the base model; "
                  "mean ± standard error. Lower deletion and higher insertion = more faithful.", "",
                  "| saliency | deletion AUC ↓ | insertion AUC ↑ | empty maps |", "|---|---|---|---|"]
        empty = f.get("empty_maps") or {}
        for m, d in f["summary"].items():
            cell = lambda st: f"{_fmt(st['mean'])} ± {_fmt(st['sem'])}"  # noqa: E731
            share = empty.get(m)
            lines.append(f"| {m} | {cell(d['deletion'])} | {cell(d['insertion'])} | "
                         f"{'–' if share is None else f'{100 * share:.0f}%'} |")
        lines += ["", "Share of images on which the first method beats the second (lower deletion / higher "
                      "insertion AUC):", "", "| comparison | deletion | insertion |", "|---|---|---|"]
        for pair, w in (f.get("wins") or {}).items():
            lines.append(f"| {pair} | {100 * w['deletion']:.0f}% | {100 * w['insertion']:.0f}% |")
        lines.append("")
        high = [m for m, v in empty.items() if v is not None and v > 0.2 and m != "random"]
        if high:
            lines += [f"**Note**: {', '.join(high)} gave a constant (empty) map on more than 20% of the images; "
                      "those images score like the random control (equal-saliency pixels are deleted in random "
                      "order). For CNN layers read before their normalisation/ReLU, compare with `filter_abs`.", ""]
        names = r["class_names"]
        per = f["per_class"]
        lines += ["| class | " + " | ".join(f"{m} del" for m in per) + " | " + " | ".join(f"{m} ins" for m in per) + " |",
                  "|---|" + "---|" * (2 * len(per))]
        for c, name in enumerate(names):
            vals = [per[m]["deletion"][c] for m in per] + [per[m]["insertion"][c] for m in per]
            if all(v is None for v in vals):
                continue
            lines.append(f"| {c} {_fmt(name)} | " + " | ".join(_fmt(v) for v in vals) + " |")
        lines.append("")
    else:
        lines += ["No AUC images (auc_images = 0).", ""]

    if r.get("figures"):
        lines += ["## Figures", ""] + [f"- `{p}`" for p in r["figures"]] + [""]
    env = r.get("environment") or {}
    if env:
        versions = env.get("versions", {})
        lines += ["## Environment", "", f"python {env.get('python')} on {env.get('platform')}, "
                  f"{env.get('cpu_count')} CPUs" + (f", GPUs: {', '.join(env['gpus'])}" if env.get("gpus") else ""),
                  "", ", ".join(f"{k} {v}" for k, v in versions.items() if v), "",
                  f"{_fmt(r.get('seconds'), 1)} s", ""]
    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in r.get("definitions", DEFINITIONS).items()] + [""]
    return "\n".join(lines)


def write_explain_report(report: Mapping[str, Any], out_dir, *, name: str = "explain") -> tuple[Path, Path]:
    """Write ``{out_dir}/{name}.json`` (everything) and ``{name}.md`` (tables), atomically."""
    from ..evaluation.report import write_report

    return write_report(report, out_dir, name=name, markdown=_markdown)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False,
        prog="hf-unlearn explain",
        description="Explain an adapter's filters: filter maps, row similarity vs confusion, saliency from the "
                    "filters next to Grad-CAM and a random map, and deletion/insertion AUCs; writes explain.json, "
                    "explain.md and PNGs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="adapter folder or Hub repo id")
    parser.add_argument("--base_model", default=None, help="default: the one named in the adapter config")
    parser.add_argument("--output_dir", required=True)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="fashion_mnist")
    data.add_argument("--split", default="test")
    data.add_argument("--dataset_revision", default=None)
    data.add_argument("--image_column", default=None)
    data.add_argument("--label_column", default=None)
    data.add_argument("--max_samples", type=int, default=None,
                      help="seeded subset of the split (confusion matrix and image choice); default all")
    ex = parser.add_argument_group("explanation")
    ex.add_argument("--classes", nargs="+", default=None, help="class ids or names to explain (default all)")
    ex.add_argument("--layer", default=None, help="filtered layer for saliency (full name or unique suffix); "
                                                  "default: last spatial layer (CNN), last fc1 whose patch "
                                                  "tokens reach the logits (ViT)")
    ex.add_argument("--images_per_class", type=int, default=2, help="overlay images per class")
    ex.add_argument("--auc_images", type=int, default=200, help="images for the deletion/insertion AUCs (0 = none)")
    ex.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    ex.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                    help="saliency methods to compare (default: filter gradcam random, plus filter_abs for CNN layers)")
    ex.add_argument("--baseline", default="zero", choices=["zero", "blur"],
                    help="what deleted pixels become: 0 (the dataset mean, normalised) or a blur")
    ex.add_argument("--batch_size", type=int, default=64)
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is there")
    ex.add_argument("--num_threads", type=int, default=None, help="torch.set_num_threads")
    ex.add_argument("--no_plots", action="store_true")
    ex.add_argument("--no_progress", action="store_true")
    return parser


def _refs(values):
    if values is None:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``hf-unlearn explain`` / ``recipes/explain.py``: parse ``argv``, run :func:`explain_adapter`, write the report."""
    torch = _torch()
    from ..adapter import UnlearnAdapter
    from ..data.loading import build_dataloader, check_labels_match, load_image_dataset, subsample

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for opt in ("images_per_class", "auc_images", "batch_size", "steps"):
        if getattr(args, opt) < (1 if opt in ("batch_size", "steps") else 0):
            raise SystemExit(f"error: --{opt} must be {'>= 1' if opt in ('batch_size', 'steps') else '>= 0'}")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    adapter = UnlearnAdapter.from_pretrained(args.adapter, base_model=args.base_model)
    # Bad classes or layers fail here, before any data is read.
    classes = _refs(args.classes)
    if classes:
        for c in classes:
            adapter.class_id(c)
    if args.layer is not None:
        resolve_layer(adapter, args.layer)
    processor = adapter.image_processor
    if processor is None:
        raise ValueError(f"The adapter at {args.adapter} has no image processor (nor does its base model): "
                         "save one next to the adapter or the base model.")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    adapter.to(device).eval()
    data = load_image_dataset(args.dataset, split=args.split, image_column=args.image_column,
                              label_column=args.label_column, revision=args.dataset_revision)
    check_labels_match(data, adapter.base_model.config)
    data = subsample(data, args.max_samples, seed=args.seed)
    loader = build_dataloader(data, processor, num_channels=getattr(adapter.base_model.config, "num_channels", 3),
                              batch_size=args.batch_size, shuffle=False, seed=args.seed,
                              progress=not args.no_progress)
    extra = {"adapter": str(args.adapter), "base_model": adapter.config.base_model_name_or_path,
             "dataset": args.dataset, "split": args.split, "argv": argv}
    report = explain_adapter(
        adapter, loader, output_dir=args.output_dir, classes=classes, layer=args.layer,
        images_per_class=args.images_per_class, auc_images=args.auc_images, steps=args.steps,
        baseline=args.baseline, batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress,
        plots=not args.no_plots, image_mean=getattr(processor, "image_mean", None),
        image_std=getattr(processor, "image_std", None), methods=args.methods, extra=extra,
    )
    f = report["faithfulness"]
    corr = report["similarity_vs_confusion"]
    parts = [f"layer {report['saliency_layer']}",
             f"similarity~confusion spearman {_fmt(corr.get('spearman'))}"]
    if f.get("n_images"):
        for m, d in f["summary"].items():
            parts.append(f"{m} del {_fmt(d['deletion']['mean'])} ins {_fmt(d['insertion']['mean'])}")
    print("; ".join(parts) + f"\nwrote {Path(args.output_dir) / 'explain.json'}, explain.md"
          + (f", {len(report.get('figures', []))} plots" if not args.no_plots else ""))
    return report


if __name__ == "__main__":
    main()
