"""Random labels (RL): relabel every forget sample with a class drawn uniformly among the OTHER
classes and train on those together with the retained data (Golatkar et al. 2020 / Hayase et al.
2020; "RL" in Jia et al. 2023 and Fan et al. 2024). Each step takes one forget batch (random
labels, redrawn every time) and one retain batch (true labels) in a single forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Unlearner, clip, cycle, make_sgd, random_other_labels, set_train_mode, steps_for


def random_label_steps(model, retain_loader, forget_loader, hp, *, device, seed, grad_hook=None,
                       after_step=None) -> int:
    """The RL loop shared with SalUn (``grad_hook`` masks gradients, ``after_step`` restores weights)."""
    num_classes = int(model.config.num_labels)
    generator = torch.Generator().manual_seed(seed)
    steps = steps_for(forget_loader, hp["epochs"], hp["max_steps"])
    opt = make_sgd([p for p in model.parameters() if p.requires_grad], hp)
    set_train_mode(model, hp["bn_mode"])
    forget_batches, retain_batches = cycle(forget_loader), cycle(retain_loader)
    w = hp.get("retain_weight", 1.0)
    for _ in range(steps):
        fb, rb = next(forget_batches), next(retain_batches)
        nf = fb["labels"].shape[0]
        wrong = random_other_labels(fb["labels"], num_classes, generator).to(device)
        logits = model(pixel_values=torch.cat([fb["pixel_values"], rb["pixel_values"]]).to(device)).logits
        loss = F.cross_entropy(logits[:nf], wrong) + w * F.cross_entropy(logits[nf:], rb["labels"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_hook is not None:
            grad_hook(model)
        clip(model, hp["max_grad_norm"])
        opt.step()
        if after_step is not None:
            after_step(model)
    return steps


class RandomLabels(Unlearner):
    name = "random_labels"
    description = "CE on forget samples relabelled at random among the other classes + CE on retain"
    # Source: Fan et al. 2024 (SalUn) / Jia et al. 2023 run RL on CIFAR-10 ResNet-18 for 10 epochs,
    # lr searched in [0.01, 0.1], SGD momentum 0.9, wd 5e-4. Adapted: 5 passes over the forget set
    # (each step also takes a retain batch), lr 0.01.
    default_hparams = {
        "epochs": 5.0,          # passes over the forget loader
        "max_steps": None,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "retain_weight": 1.0,
        "max_grad_norm": None,
        "bn_mode": "train",
    }
    search_space = {"lr": [0.002, 0.005, 0.01, 0.02, 0.05], "epochs": [2.0, 5.0, 10.0]}

    def _run(self, model, forget_ids, retain_loader, forget_loader, hp, *, device, seed, info):
        info["steps"] = random_label_steps(model, retain_loader, forget_loader, hp, device=device, seed=seed)
