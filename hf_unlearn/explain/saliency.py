"""Saliency from the filters, with Grad-CAM and a random map as references.

:func:`filter_saliency` builds an image-level map for class ``c`` from the activations of the units
its row switches off, on one filtered layer (default: the last filtered layer with a spatial output
for CNNs, the last filtered ``fc1`` (else ``fc2``) for ViT), read with a forward hook on the wrapped
layer's base output while no class is selected:

- CNN (ResNet, ConvNeXt): ``ReLU(sum_k (1 - alpha[c, k]) * A_k(x, y))`` (CAM-style);
- ViT: per patch token ``sum_k (1 - alpha[c, k]) * |A[token, k]|`` on the patch grid;

then upsampled (bilinear) to the input size and normalised to ``[0, 1]`` per image. A CNN layer's
base output is read before its normalisation and ReLU, where the weighted sum can be negative
everywhere (an empty CAM); ``"filter_abs"`` (``sum_k (1 - alpha[c, k]) |A_k|``, the size of what
the row removes at each location) is computed next to it for CNN layers. References:
:func:`gradcam` (Grad-CAM of the base model's class logit on the same layer; ViT: per token
``ReLU(sum_k grad * act)``) and :func:`random_saliency` (seeded uniform noise at the layer's
grid, upsampled), all at once with :func:`saliency_maps`.

Example:

```py
>>> from hf_unlearn.explain import saliency
>>> sal = saliency.filter_saliency(adapter, pixel_values, classes="Coat")   # (B, H, W) in [0, 1]
>>> maps = saliency.saliency_maps(adapter, pixel_values, "Coat")            # filter, gradcam, random
```
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional

import torch
from torch.nn import functional as F

from .common import as_adapter, as_batch, base_model_context, class_ids, logits_of, maybe_adapter, model_device

__all__ = [
    "METHODS",
    "DEFAULT_METHODS",
    "resolve_layer",
    "default_saliency_layer",
    "layer_kind",
    "saliency_maps",
    "filter_saliency",
    "gradcam",
    "random_saliency",
    "normalise",
    "upsample",
]

METHODS = ("filter", "filter_abs", "gradcam", "random")
DEFAULT_METHODS = ("filter", "gradcam", "random")
_FILTER_METHODS = ("filter", "filter_abs")
_VIT_TYPES = ("vit", "deit", "dinov2", "beit", "data2vec-vision", "vit_msn", "vit_mae", "siglip_vision_model")


def normalise(maps):
    """Per-image min-max to [0, 1]; a constant map (up to rounding) becomes all zeros."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    span = hi - lo
    flat_enough = span <= 1e-5 * torch.maximum(lo.abs(), hi.abs()) + 1e-12  # constant up to rounding
    out = torch.where(flat_enough, torch.zeros_like(flat), (flat - lo) / span.clamp_min(1e-12))
    return out.reshape(maps.shape)


def upsample(maps, size):
    """``(B, h, w)`` maps resized (bilinear) to ``size = (H, W)``."""
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def resolve_layer(adapter, layer: str) -> str:
    """The full name of a filtered layer from its name or a unique dotted suffix of it.

    Raises ``ValueError`` listing the layers the adapter filters.
    """
    adapter = as_adapter(adapter, "resolve_layer")
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
    adapter = maybe_adapter(model)
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
    adapter = maybe_adapter(model)
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


def _example_input(config):
    """A zero image of the config's size (64 x 64 if it has none): enough to see the layers' shapes."""
    size = getattr(config, "image_size", None) or 64
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    return torch.zeros(1, getattr(config, "num_channels", 3), *size)


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
    adapter = as_adapter(adapter, "default_saliency_layer")
    layers = adapter.filter_layers()
    cfg = adapter.base_model.config
    example, _ = as_batch(_example_input(cfg) if example is None else example)
    device = model_device(adapter)
    example = example[:1].to(device) if device is not None else example[:1]
    outputs: dict[str, Any] = {}
    handles = []
    for name, layer in layers.items():
        def hook(_m, _a, out, name=name):
            outputs[name] = out[0] if isinstance(out, (tuple, list)) else out
        handles.append(layer.get_base_layer().register_forward_hook(hook))
    try:
        with torch.enable_grad(), base_model_context(adapter):
            logits = logits_of(adapter, example.clone().requires_grad_(True))
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


def layer_kind(model, layer_name: str, example=None) -> str:
    """``"spatial"`` (conv maps, channels-last maps) or "tokens" (ViT) for a layer, from one forward pass."""
    adapter = maybe_adapter(model)
    x, _ = as_batch(_example_input(_config(model)) if example is None else example)
    device = model_device(model)
    x = x[:1].to(device) if device is not None else x[:1]
    module = _hook_module(adapter if adapter is not None else model, layer_name)
    with torch.no_grad(), base_model_context(model), _capture(module, detach=True) as store:
        logits_of(model, x)
    return _spatial(store["out"], module, _config(model), x.shape[-2:])[1]


def _filter_weights(adapter, layer_name: str):
    layer = adapter.filter_layers()[layer_name]
    with torch.no_grad():
        return (1.0 - layer.filters(adapter.model.active_adapter)).detach().float()


def _saliency_chunk(model, x, ids, layer_name, methods, weights, generator):
    """Maps of one chunk of images: {method: (b, H, W)} (and the layer's grid)."""
    module = _hook_module(model, layer_name)
    config = _config(model)
    hw = x.shape[-2:]
    need_grad = "gradcam" in methods
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(base_model_context(model))
        stack.enter_context(torch.enable_grad() if need_grad else torch.no_grad())
        store = stack.enter_context(_capture(module, detach=not need_grad))
        xin = x.clone().requires_grad_(True) if need_grad else x
        logits = logits_of(model, xin)
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
            out["filter"] = normalise(upsample(m, hw)).cpu()
        if "filter_abs" in methods:
            out["filter_abs"] = normalise(upsample((w * a_sp.abs()).sum(1), hw)).cpu()
    if need_grad:
        if kind == "tokens":
            m = torch.relu((g_sp * a_sp).sum(1))
        else:
            m = torch.relu((g_sp.mean((2, 3), keepdim=True) * a_sp).sum(1))
        out["gradcam"] = normalise(upsample(m, hw)).cpu()
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
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown saliency method(s) {unknown}; choose from {list(METHODS)}.")
    x, _ = as_batch(pixel_values)
    adapter = maybe_adapter(model)
    if adapter is None and any(m in methods for m in _FILTER_METHODS):
        raise TypeError("Filter saliency needs an UnlearnAdapter (or its PeftModel).")
    ids = class_ids(model, classes, x.shape[0])
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
    device = model_device(model)
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
    as_adapter(adapter, "filter_saliency")
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
    if isinstance(images, int):
        count = images
        if image_size is None:
            raise ValueError("Give image_size=(H, W) with a count of images.")
    else:
        x, _ = as_batch(images)
        count = x.shape[0]
        image_size = image_size or tuple(x.shape[-2:])
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    h, w = (int(grid), int(grid)) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    noise = torch.rand(count, h, w, generator=generator)
    return normalise(upsample(noise, image_size))
