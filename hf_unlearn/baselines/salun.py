"""SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
both Image Classification and Generation", ICLR 2024).

1. Weight saliency: accumulate the gradient of the cross-entropy on the forget set (base model,
   BatchNorm in eval mode), take its magnitude, and keep the top ``mask_ratio`` (50%) of the
   weights, over all parameters at once (``mask_scope="global"``, the paper's hard threshold) or
   within each tensor (``"per_tensor"``).
2. Random-label unlearning (see :mod:`.random_labels`) that updates only the salient weights:
   gradients are multiplied by the mask, and the non-salient weights are put back to their
   original values after every step (so weight decay and momentum cannot move them either).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Unlearner
from .random_labels import random_label_steps


def saliency_mask(model, forget_loader, *, ratio: float, scope: str, device, max_batches=None) -> dict:
    """``{param name: bool mask}`` of the top-``ratio`` weights by |grad of the forget CE|."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1], got {ratio}")
    was = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for i, batch in enumerate(forget_loader):
        if max_batches and i >= max_batches:
            break
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        F.cross_entropy(logits, batch["labels"].to(device), reduction="sum").backward()
    grads = {n: (p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.train(was)
    if scope == "global":
        flat = torch.cat([g.flatten() for g in grads.values()])
        k = max(1, int(round(ratio * flat.numel())))
        threshold = torch.topk(flat, k, sorted=True).values[-1]
        return {n: g >= threshold for n, g in grads.items()}
    if scope == "per_tensor":
        out = {}
        for n, g in grads.items():
            k = max(1, int(round(ratio * g.numel())))
            threshold = torch.topk(g.flatten(), k, sorted=True).values[-1]
            out[n] = g >= threshold
        return out
    raise ValueError(f"mask_scope must be 'global' or 'per_tensor', not {scope!r}")


class SalUn(Unlearner):
    name = "salun"
    description = "random labels on the top-50% salient weights (|grad of forget CE|)"
    # Source: Fan et al. 2024, CIFAR-10 ResNet-18: mask ratio 50%, RL on the salient weights for 10
    # epochs, SGD momentum 0.9, wd 5e-4, lr 0.1 in the reference script for random-data forgetting
    # (class-wise lr tuned in the paper's range). Adapted: 5 passes over the forget set (each step
    # also takes a retain batch), lr 0.02.
    default_hparams = {
        "mask_ratio": 0.5,
        "mask_scope": "global",  # global | per_tensor
        "mask_max_batches": None,
        "epochs": 5.0,
        "max_steps": None,
        "lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "retain_weight": 1.0,
        "max_grad_norm": None,
        "bn_mode": "train",
    }
    search_space = {"lr": [0.005, 0.01, 0.02, 0.05, 0.1], "epochs": [2.0, 5.0, 10.0], "mask_ratio": [0.3, 0.5, 0.7]}

    def _run(self, model, forget_ids, retain_loader, forget_loader, hp, *, device, seed, info):
        mask = saliency_mask(model, forget_loader, ratio=hp["mask_ratio"], scope=hp["mask_scope"], device=device,
                             max_batches=hp["mask_max_batches"])
        params = dict(model.named_parameters())
        frozen = {n: params[n].detach().clone() for n in params}
        fmask = {n: m.to(params[n].dtype) for n, m in mask.items()}

        def grad_hook(m):
            for n, p in params.items():
                if p.grad is not None:
                    p.grad.mul_(fmask[n])

        def restore(m):
            with torch.no_grad():
                for n, p in params.items():
                    keep = ~mask[n]
                    if keep.any():
                        p[keep] = frozen[n][keep]

        info["steps"] = random_label_steps(model, retain_loader, forget_loader, hp, device=device, seed=seed,
                                           grad_hook=grad_hook, after_step=restore)
        total = sum(m.numel() for m in mask.values())
        info["salient_share"] = float(sum(int(m.sum()) for m in mask.values()) / max(total, 1))
