"""The interface every peer unlearning method implements, and the helpers they share.

A peer method (a *baseline*) takes a trained transformers image classifier and the class(es) to
forget, and returns a NEW plain transformers classifier (a deep copy; the input is never touched)
that has forgotten them, with ``config.unlearned_class_ids`` / ``config.unlearned_classes`` set the
way ``UnlearnAdapter.export`` sets them, so :func:`hf_unlearn.evaluation.suite.evaluate_unlearning` reads
the forgotten classes from the model itself.

```py
>>> from hf_unlearn.baselines import get_baseline
>>> result = get_baseline("scrub").unlearn(model, [3], retain_loader, forget_loader, seed=0)
>>> result.model.config.unlearned_class_ids, result.seconds, result.hparams["lr"]
([3], 12.3, 0.01)
```

Loaders are ordinary DataLoaders yielding ``{"pixel_values", "labels"}`` (``hf_unlearn.data.loaders.
build_dataloader`` over ``class_subset(train, classes, keep=False)`` and ``keep=True``, or
:func:`tensor_loaders` over preprocessed tensors). ``seconds`` is the wall time of the unlearning
itself (everything the method computes, mask/Fisher/SVD included; the deep copy excluded).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.tensors import TensorDictDataset, collate_batches
from ..modeling import classifier_module
from ..tuners.weight_filter.selection import resolve_class

__all__ = [
    "UnlearnResult",
    "Unlearner",
    "resolve_forget_classes",
    "mark_unlearned",
    "param_bytes",
    "final_linear",
    "cycle",
    "tensor_loaders",
    "random_other_labels",
]


@dataclass
class UnlearnResult:
    """What a baseline returns.

    Attributes:
        model: a new plain transformers classifier (eval mode) that forgot ``forget_classes``.
        seconds: wall time of the unlearning run.
        method: the baseline's registry name.
        forget_classes: the forgotten class ids (sorted).
        hparams: the hyperparameters actually used (defaults merged with overrides).
        info: method-specific extras (steps run, mask sparsity, dampened parameters, ...).
    """

    model: Any
    seconds: float
    method: str
    forget_classes: list
    hparams: dict
    info: dict = field(default_factory=dict)


def resolve_forget_classes(model, classes: Any) -> list[int]:
    """Class ids (sorted, unique) from ids or names (case-insensitive), checked against the model's labels."""
    config = model.config
    num = int(config.num_labels)
    label2id = {str(v): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if isinstance(classes, (int, str)) or not isinstance(classes, Iterable):
        classes = [classes]
    ids = sorted({resolve_class(int(c) if hasattr(c, "__index__") and not isinstance(c, str) else c, num, label2id)
                  for c in classes})
    if not ids:
        raise ValueError("The set of classes to forget is empty.")
    if len(ids) == num:
        raise ValueError("Every class is in the forget set: nothing would be retained.")
    return ids


def mark_unlearned(model, ids: Sequence[int], method: str):
    """Record the forgotten classes in the config (as ``UnlearnAdapter.export`` does) and the method."""
    id2label = {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    model.config.unlearned_class_ids = [int(i) for i in ids]
    model.config.unlearned_classes = [id2label.get(int(i), str(i)) for i in ids]
    model.config.unlearning_method = method
    return model


def param_bytes(model, *, buffers: bool = False) -> int:
    """Bytes of the parameters (and, with ``buffers=True``, the buffers) of a model."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if buffers:
        total += sum(b.numel() * b.element_size() for b in model.buffers())
    return int(total)


def final_linear(model) -> torch.nn.Linear:
    """The ``Linear`` that produces the logits (inside ``classifier`` for ResNet's Sequential head)."""
    head = classifier_module(model)
    if isinstance(head, torch.nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    num = int(model.config.num_labels)
    linears = [m for m in linears if m.out_features == num]
    if not linears:
        raise ValueError(f"No Linear with {num} outputs in the classifier head {type(head).__name__}.")
    return linears[-1]


def cycle(loader) -> Iterator[dict]:
    """Batches of ``loader`` forever (a new pass, reshuffled by the loader, each time it runs out)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("The loader yielded no batch (empty split?).")


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly among the OTHER ``num_classes - 1`` classes, for every sample."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def tensor_loaders(pixel_values: torch.Tensor, labels: torch.Tensor, forget_classes: Sequence[int], *,
                   batch_size: int = 128, seed: int = 0, forget_batch_size: Optional[int] = None):
    """``(retain_loader, forget_loader)``: shuffled, seeded DataLoaders over preprocessed tensors
    (e.g. ``hf_unlearn.data.transforms.to_tensor_dataset(...).tensors``), sharing them without copies."""
    mask = torch.isin(labels, torch.as_tensor(list(forget_classes), dtype=labels.dtype))
    out = []
    for keep, bs, offset in ((~mask, batch_size, 0), (mask, forget_batch_size or batch_size, 1)):
        idx = torch.nonzero(keep).flatten()
        if len(idx) == 0:
            raise ValueError("A retain or forget split is empty.")
        ds = TensorDictDataset(pixel_values, labels, idx)
        out.append(torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, collate_fn=collate_batches,
                                               generator=torch.Generator().manual_seed(seed + offset)))
    return tuple(out)


@contextlib.contextmanager
def _reseeded_loaders(loaders, seed: int):
    """Seed the loaders' own shuffling generators from ``seed`` for the run and restore them after.

    A DataLoader built with ``generator=`` (as ``build_dataloader`` does) shuffles from that
    generator's current state, so without this a run would depend on what iterated the loader
    before it; loaders without a generator draw from the global RNG, which ``unlearn`` seeds.
    """
    saved = []
    for i, loader in enumerate(loaders):
        gen = getattr(loader, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g, _ in saved):
            saved.append((gen, gen.get_state()))
            gen.manual_seed(int(seed) * 1009 + 7919 * (i + 1))
    try:
        yield
    finally:
        for gen, state in saved:
            gen.set_state(state)


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------


class Unlearner:
    """Base class of the peer methods.

    Subclasses set ``name``, ``default_hparams`` (each paper's published CIFAR-10 ResNet-18 values,
    adapted to our small CPU-trained models; the source is documented next to them), optionally
    ``search_space`` (candidate values for the benchmark's ``--tune``), and implement
    :meth:`_run`, which modifies the copy it receives in place.

    ``unlearn(model, forget_classes, retain_loader, forget_loader, *, hparams=None, seed=0,
    device="cpu")`` returns an :class:`UnlearnResult` with a new model.
    """

    name: str = "base"
    description: str = ""
    default_hparams: dict = {}
    search_space: dict = {}
    gradient_free: bool = False  # no optimiser steps (may still take gradients, e.g. SSD's Fisher)
    uses_retain: bool = True
    uses_forget: bool = True

    def hparams(self, overrides: Optional[Mapping[str, Any]] = None) -> dict:
        """Defaults merged with ``overrides``; unknown names raise (a typo must not pass silently)."""
        hp = copy.deepcopy(dict(self.default_hparams))
        unknown = sorted(set(overrides or {}) - set(hp))
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter(s) {unknown}; known: {sorted(hp)}")
        hp.update(dict(overrides or {}))
        return hp

    def unlearn(self, model, forget_classes, retain_loader=None, forget_loader=None, *,
                hparams: Optional[Mapping[str, Any]] = None, seed: int = 0, device: Any = "cpu") -> UnlearnResult:
        hp = self.hparams(hparams)
        ids = resolve_forget_classes(model, forget_classes)
        if self.uses_retain and retain_loader is None:
            raise ValueError(f"{self.name} needs a retain_loader.")
        if self.uses_forget and forget_loader is None:
            raise ValueError(f"{self.name} needs a forget_loader.")
        device = torch.device(device)
        work = copy.deepcopy(model).to(device)
        for p in work.parameters():
            p.requires_grad_(True)
        info: dict = {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _reseeded_loaders((retain_loader, forget_loader), seed):
            torch.manual_seed(seed)
            start = time.perf_counter()
            out = self._run(work, ids, retain_loader, forget_loader, hp, device=device, seed=seed, info=info)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
        work = out if out is not None else work
        work.eval()
        for p in work.parameters():
            p.grad = None
        mark_unlearned(work, ids, self.name)
        return UnlearnResult(model=work, seconds=max(seconds, 1e-9), method=self.name, forget_classes=ids,
                             hparams=hp, info=info)

    def _run(self, model, forget_ids, retain_loader, forget_loader, hp, *, device, seed, info):  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --------------------------------------------------------------------------------------------
# helpers for the gradient-based methods
# --------------------------------------------------------------------------------------------


def logits_of(model, batch, device) -> torch.Tensor:
    return model(pixel_values=batch["pixel_values"].to(device)).logits


def make_sgd(params, hp) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (every peer paper's optimiser)."""
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp.get("momentum", 0.9),
                           weight_decay=hp.get("weight_decay", 0.0))


def set_train_mode(model, bn_mode: str) -> None:
    """``"train"``: BatchNorm uses and updates batch statistics (the papers' ``model.train()``);
    ``"eval"``: BatchNorm keeps the base model's running statistics (its affine weights still learn)."""
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"bn_mode must be 'train' or 'eval', not {bn_mode!r}")
    model.train()
    if bn_mode == "eval":
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def steps_for(loader, epochs: float, max_steps: Optional[int]) -> int:
    n = max(1, math.ceil(float(epochs) * len(loader)))
    return min(n, int(max_steps)) if max_steps else n


def clip(model, max_norm: Optional[float]) -> None:
    if max_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def kd_divergence(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """Knowledge-distillation divergence KL(p_teacher || p_student) at temperature T, times T^2
    (the ``DistillKL`` loss SCRUB uses), averaged over the batch."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean") * (t * t)
