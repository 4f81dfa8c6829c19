"""Faithfulness of a saliency map: RISE deletion and insertion AUCs (Petsiuk et al. 2018).

Pixels are deleted (replaced by a baseline: 0 = the dataset mean in normalised space, or a blur)
from the most salient down in ``steps`` equal steps, and the model's probability of the class is
recorded; the AUC is the trapezoid rule over the fraction deleted (0 to 1). Insertion starts from
the baseline and puts the most salient pixels back first. Lower deletion AUC and higher insertion
AUC mean a more faithful map.

Example:

```py
>>> from hf_unlearn.explain import faithfulness, saliency
>>> sal = saliency.filter_saliency(adapter, pixel_values, classes="Coat")
>>> faithfulness.deletion_auc(adapter, pixel_values, sal, target="Coat")      # (B,) array
```
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch.nn import functional as F

from .common import as_batch, base_model_context, class_ids, logits_of, model_device

__all__ = ["perturbation_curves", "curve_auc", "deletion_auc", "insertion_auc"]


def _blur(x, sigma: Optional[float] = None):

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
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', not {mode!r}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    x, _ = as_batch(images)
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
    ids = torch.as_tensor(class_ids(model, target, b), dtype=torch.long)
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
    device = model_device(model)
    with torch.no_grad(), base_model_context(model):
        for start in range(0, b, per_chunk):
            sl = slice(start, start + per_chunk)
            n = x[sl].shape[0]
            mask = (rank[sl][:, None, :] < counts[None, :, None]).view(n, steps + 1, 1, h, w)
            xi, bi = x[sl][:, None].cpu(), base[sl][:, None].cpu()
            variants = torch.where(mask, bi, xi) if mode == "deletion" else torch.where(mask, xi, bi)
            variants = variants.reshape(n * (steps + 1), c, h, w)
            if device is not None:
                variants = variants.to(device)
            out = logits_of(model, variants).float()
            probs = out.softmax(-1) if apply_softmax else out
            tgt = ids[sl].repeat_interleave(steps + 1).to(probs.device)
            curves[sl] = probs.gather(1, tgt[:, None])[:, 0].view(n, steps + 1).double().cpu()
    return fractions, curves


def curve_auc(fractions, curves):
    """Trapezoid-rule area under each curve ``(B, S+1)`` over ``fractions`` ``(S+1,)``: a ``(B,)`` tensor."""
    dx = (fractions[1:] - fractions[:-1])[None]
    return ((curves[:, 1:] + curves[:, :-1]) * dx / 2.0).sum(1)


def _auc_result(fractions, curves, single: bool, return_curve: bool):
    auc = curve_auc(fractions, curves).numpy()
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
    single = as_batch(image)[1]
    fr, curves = perturbation_curves(model, image, saliency, target, mode="deletion", steps=steps, baseline=baseline,
                                     batch_size=batch_size, apply_softmax=apply_softmax, seed=seed)
    return _auc_result(fr, curves, single, return_curve)


def insertion_auc(model, image, saliency, target, steps: int = 16, baseline: Any = 0.0, *, batch_size: int = 64,
                  apply_softmax: bool = True, return_curve: bool = False, seed: int = 0):
    """RISE insertion AUC: start from the baseline, insert the most salient pixels first; higher = more faithful.

    Same arguments and return values as :func:`deletion_auc`.
    """
    single = as_batch(image)[1]
    fr, curves = perturbation_curves(model, image, saliency, target, mode="insertion", steps=steps,
                                     baseline=baseline, batch_size=batch_size, apply_softmax=apply_softmax, seed=seed)
    return _auc_result(fr, curves, single, return_curve)
