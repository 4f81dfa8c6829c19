"""SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023).

The original model is a frozen teacher; a copy (the student) is trained by alternating

- max-steps (the first ``msteps`` epochs): a pass over the forget set maximising the
  distillation divergence between student and teacher (loss ``-KL``), at most
  ``max_forget_batches_per_epoch`` batches (10: the reference's forget batch of 512 gives about 10
  max-steps per epoch on a 5,000-image CIFAR-10 class; without a cap the push would grow with the
  size of the forget set);
- min-steps (every epoch): one pass over the retained data minimising
  ``alpha * KL + gamma * CE``, which keeps the student close to the teacher and accurate there.

The divergence is the knowledge-distillation one that the reference code uses (``DistillKL``):
``KL(p_teacher || p_student)`` at temperature ``kd_T``, times ``kd_T^2``. The teacher runs in eval
mode; the student in train mode.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F

from .base import Unlearner, clip, kd_divergence, make_sgd, set_train_mode


class SCRUB(Unlearner):
    name = "scrub"
    description = "teacher-student: max KL on forget, min KL + CE on retain"
    # Source: the SCRUB reference configuration for CIFAR-10 ResNet-18 (small-scale notebook and the
    # copy in Kodge et al.'s code): SGD momentum 0.9, wd 5e-4, lr 5e-4, sgda_epochs 3, msteps 2,
    # gamma (CE weight) 0.99, alpha (KL weight) 0.001, kd_T 4, forget batch 512 / retain batch 64-128,
    # grad clip 0.2 (unused for SGD there). Adapted: lr 0.002. Spot checks, forget class 0 (test FA/RA %):
    # Fashion-MNIST ResNet preset on a 12k-sample subset: lr 0.01 -> 0/26.1 (collapse), 0.003 -> 0/89.5,
    # 0.001 -> 0/92.6; digits micro model (few steps): lr 0.001 -> 97.2/93.8 (nothing forgotten),
    # 0.002 -> 33-69/92-93 over seeds (only 3 forget batches per epoch there: the tests use lr 0.005).
    # 3 epochs, max-steps in the first 2 (at most 10 forget batches each); optional cap on retain
    # batches per epoch.
    default_hparams = {
        "epochs": 3,
        "msteps": 2,
        "lr": 0.002,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "gamma": 0.99,
        "alpha": 0.001,
        "kd_T": 4.0,
        "max_grad_norm": None,
        "retain_batches_per_epoch": None,  # None: the whole retain loader every epoch
        "max_forget_batches_per_epoch": 10,  # None: the whole forget loader
        "bn_mode": "train",
    }
    search_space = {"lr": [0.0005, 0.001, 0.002, 0.005, 0.01], "epochs": [2, 3, 5], "msteps": [1, 2, 3]}

    def _run(self, model, forget_ids, retain_loader, forget_loader, hp, *, device, seed, info):
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        opt = make_sgd(model.parameters(), hp)
        set_train_mode(model, hp["bn_mode"])
        T = hp["kd_T"]
        max_steps = min_steps = 0
        for epoch in range(int(hp["epochs"])):
            if epoch < int(hp["msteps"]):
                for batch in itertools.islice(forget_loader, hp["max_forget_batches_per_epoch"]):
                    x = batch["pixel_values"].to(device)
                    with torch.no_grad():
                        t = teacher(pixel_values=x).logits
                    loss = -kd_divergence(model(pixel_values=x).logits, t, T)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    clip(model, hp["max_grad_norm"])
                    opt.step()
                    max_steps += 1
            limit = hp["retain_batches_per_epoch"]
            for batch in itertools.islice(retain_loader, limit):
                x, y = batch["pixel_values"].to(device), batch["labels"].to(device)
                with torch.no_grad():
                    t = teacher(pixel_values=x).logits
                s = model(pixel_values=x).logits
                loss = hp["alpha"] * kd_divergence(s, t, T) + hp["gamma"] * F.cross_entropy(s, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                clip(model, hp["max_grad_norm"])
                opt.step()
                min_steps += 1
        info.update(max_steps=max_steps, min_steps=min_steps)
