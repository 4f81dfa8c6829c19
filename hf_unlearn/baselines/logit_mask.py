"""Logit masking (control): the forgotten classes' logits are pinned to a large negative number.

Implemented as a plain transformers model: the rows of the final ``Linear`` that produce the
forgotten logits get zero weights and a bias of ``mask_value`` (-1e4: finite, so softmax and
log-probabilities stay well defined, yet no logit of a trained model comes near it). Forget
accuracy is 0 by construction and every other logit is untouched, so the argmax over the other
classes is exactly the base model's. Nothing inside the network changes: the features, the probe
and the other metrics must expose that the knowledge is all still there.
"""

from __future__ import annotations

import torch

from .base import Unlearner, final_linear


class LogitMask(Unlearner):
    name = "logit_mask"
    description = "control: forgotten logits set to -1e4 (classifier rows zeroed); nothing else changes"
    gradient_free = True
    uses_retain = False
    uses_forget = False
    default_hparams = {"mask_value": -1e4}  # no paper: a control
    search_space = {}

    def _run(self, model, forget_ids, retain_loader, forget_loader, hp, *, device, seed, info):
        head = final_linear(model)
        if head.bias is None:
            raise ValueError("logit masking needs a classifier with a bias")
        ids = torch.as_tensor(forget_ids, dtype=torch.long, device=head.weight.device)
        with torch.no_grad():
            head.weight[ids] = 0.0
            head.bias[ids] = float(hp["mask_value"])
        info["masked_rows"] = list(forget_ids)
