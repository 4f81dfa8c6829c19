"""Untraining: teach every row of the weight filters at once (WF-Net's one training round).

For a batch of labelled samples ``(x, y)``:

- *forget pass*: each sample runs with a forget set that contains its own class ``y`` (``{y}``,
  or with probability ``set_prob`` a random set of up to ``max_set_size`` classes containing ``y``),
  and its cross-entropy is pushed **up** through the bounded term ``1 / (CE + eps)``;
- *retain pass*: each sample runs ``retain_rows`` (T) more times with random forget sets that do
  **not** contain ``y``; its cross-entropy is pushed **down**;
- *regulariser*: ``mean(1 - alpha)`` over all filters keeps most of them at 1, so each row switches
  off only what its class needs.

``L = lambda_retain * CE_retain + lambda_forget * mean(1 / (CE_forget + eps)) + lambda_reg * mean(1 - alpha)``

With ``retain_loss="kd"`` the retain term is instead the KL divergence from the *base model's*
prediction with the set's logits masked out (the unfiltered network, one extra forward without
gradients) to the filtered prediction: the filtered network is asked to behave exactly like the
original one minus the forgotten classes, not only to keep the labels right.

With ``feature_loss="centroid"`` a feature-level forget term is added (the DUCK/SCAR idea): the
penultimate features of each forget pair (what the final classifier receives) are pulled, by cosine
distance, to the base model's feature centroid of the class the base finds most likely outside the
forget set, so the class leaves the representation and not only the output. The centroids are the
base's features of the batch averaged per label (the same extra no-grad forward as ``boundary``).
``feature_loss="prototype"`` asks for more than closeness: a cross-entropy over the cosine similarities
(divided by ``feature_temperature``) of each forget feature to every class centroid of the batch, with
that nearest other class as the label, so the feature must be nearer to it than to its own class's
centroid, which is what a nearest-class-mean probe tests.

With ``forget_loss="boundary"`` the forget term is instead the cross-entropy towards the class the
*base model* finds most likely outside the forget set (Boundary Shrink's target): a forgotten sample
must look like its nearest other class, not merely stop looking like its own.

All passes of a batch run as one forward with a per-sample selection. The backbone is frozen and in
eval mode (BatchNorm statistics fixed); only the filters learn. Runs on ``accelerate`` (one or many
processes, DDP over gloo on CPU), with checkpoints that a killed run resumes from exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..tuners.weight_filter import WeightFilterLayer


@dataclass
class UntrainingArguments:
    """Hyperparameters and run controls of one untraining round (all classes at once).

    Defaults follow the paper's objective (inverse CE on forget pairs, CE on retain pairs) with the
    measured best settings on Fashion-MNIST; the ResNet recipe config measured ``forget_loss="boundary"``
    better there (recipes/README.md records the search).
    """

    epochs: float = 3.0
    batch_size: int = 128
    learning_rate: float = 0.1
    optimizer: str = "adam"  # adam | adamw | sgd
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    lambda_retain: float = 1.0
    retain_loss: str = "ce"  # ce (labels) | kd (match the base model with the set's logits masked)
    kd_temperature: float = 1.0
    forget_loss: str = "inverse_ce"  # inverse_ce (bounded 1/CE, the paper) | boundary (CE to the base's nearest other class)
    lambda_forget: float = 1.0
    lambda_reg: float = 0.0
    feature_loss: str = "none"  # none | centroid (cosine pull to the base's nearest-other-class centroid) | prototype
    lambda_feature: float = 1.0
    feature_temperature: float = 0.1  # prototype: cosine similarities are divided by this
    inverse_ce_eps: float = 1e-2
    retain_rows: int = 1
    max_set_size: int = 2
    set_prob: float = 0.5
    gradient_accumulation_steps: int = 1
    # "" = as launched (`accelerate launch --mixed_precision ...` / accelerate config), else fp32;
    # an explicit "no" would override the launcher's choice.
    mixed_precision: str = ""  # "" | no | fp16 | bf16
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0 = no intermediate checkpoints
    max_steps: int = 0  # stop after this many optimiser steps (0 = use epochs); the budget with eval_every
    # Convergence-driven rounds (hf_unlearn.training.convergence): with eval_every > 0 and a validation loader the
    # round measures every row every eval_every steps and stops when the worst row's forget accuracy is
    # <= target_forget_acc (%) and the retain accuracy stopped improving (patience measurements).
    eval_every: int = 0  # steps between validation measurements; 0 = no convergence check
    target_forget_acc: float = 1.0
    patience: int = 2
    min_retain_delta: float = 0.05  # points of retain accuracy that count as an improvement
    validation_retain_rows: int = 2  # random other rows each validation sample runs with
    balance_forget: bool = True  # weight forget pairs by inverse class frequency: every row gets the same signal
    log_every: int = 20
    progress: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Reject unknown objective names at once (a job checks them before it writes anything)."""
        if self.retain_loss not in ("ce", "kd"):
            raise ValueError(f"Unknown retain_loss {self.retain_loss!r}: use 'ce' (labels) or 'kd' (match the base model).")
        if self.forget_loss not in ("inverse_ce", "boundary"):
            raise ValueError(f"Unknown forget_loss {self.forget_loss!r}: use 'inverse_ce' or 'boundary'.")
        if self.eval_every < 0 or self.max_steps < 0 or self.patience < 1:
            raise ValueError("eval_every and max_steps must be >= 0 and patience >= 1.")
        if self.mixed_precision not in ("", "no", "fp16", "bf16"):
            raise ValueError(f"Unknown mixed_precision {self.mixed_precision!r}: use no, fp16, bf16, or leave it "
                             "empty for what `accelerate launch` was given.")
        if not (self.epochs > 0 or self.max_steps > 0) or self.epochs < 0 or self.max_steps < 0:
            raise ValueError(f"epochs={self.epochs}, max_steps={self.max_steps}: give epochs > 0 (or max_steps > 0).")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be at least 1.")
        if self.feature_loss not in ("none", "centroid", "prototype"):
            raise ValueError(f"Unknown feature_loss {self.feature_loss!r}: use 'none', 'centroid' or 'prototype'.")
        if self.feature_temperature <= 0:
            raise ValueError(f"feature_temperature must be > 0, got {self.feature_temperature}.")
        if self.lambda_feature < 0:
            raise ValueError(f"lambda_feature must be >= 0, got {self.lambda_feature}.")

    def to_dict(self) -> dict:
        return asdict(self)


def sample_forget_sets(
    labels: torch.Tensor,
    num_classes: int,
    *,
    contain: bool,
    max_set_size: int,
    set_prob: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random forget sets, one per label: ``(B, max_set_size)`` class ids padded with -1.

    ``contain=True``: every set holds the sample's own class (a forget pair).
    ``contain=False``: no set holds it (a retain pair). Set sizes are 1, or with probability
    ``set_prob`` uniform in ``2..max_set_size``.
    """
    batch = labels.shape[0]
    width = max(1, min(max_set_size, num_classes - (0 if contain else 1)))
    sizes = torch.ones(batch, dtype=torch.long)
    if width > 1 and set_prob > 0:
        grow = torch.rand(batch, generator=generator) < set_prob
        sizes = torch.where(grow, torch.randint(2, width + 1, (batch,), generator=generator), sizes)
    # A random permutation of the other classes per sample; take the first entries.
    scores = torch.rand(batch, num_classes, generator=generator)
    scores[torch.arange(batch), labels] = 2.0  # the own class sorts last among "others"
    others = scores.argsort(dim=1)[:, : num_classes - 1]
    out = torch.full((batch, width), -1, dtype=torch.long)
    if contain:
        out[:, 0] = labels
        extra = others[:, : width - 1]
        keep = torch.arange(width - 1)[None, :] < (sizes[:, None] - 1)
        out[:, 1:] = torch.where(keep, extra, torch.full_like(extra, -1))
    else:
        extra = others[:, :width]
        keep = torch.arange(width)[None, :] < sizes[:, None]
        out[:] = torch.where(keep, extra, torch.full_like(extra, -1))
    return out


def _pad_to(sel: torch.Tensor, width: int) -> torch.Tensor:
    if sel.shape[1] == width:
        return sel
    pad = torch.full((sel.shape[0], width - sel.shape[1]), -1, dtype=sel.dtype)
    return torch.cat([sel, pad], dim=1)


def expand_batch(pixel_values, labels, num_classes, args: UntrainingArguments, generator):
    """Build the single forward of a step: B forget pairs followed by T*B retain pairs."""
    forget = sample_forget_sets(
        labels, num_classes, contain=True, max_set_size=args.max_set_size, set_prob=args.set_prob, generator=generator
    )
    rep = labels.repeat(args.retain_rows)
    retain = sample_forget_sets(
        rep, num_classes, contain=False, max_set_size=args.max_set_size, set_prob=args.set_prob, generator=generator
    )
    width = max(forget.shape[1], retain.shape[1])
    selection = torch.cat([_pad_to(forget, width), _pad_to(retain, width)])
    pixels = torch.cat([pixel_values] + [pixel_values] * args.retain_rows)
    return pixels, torch.cat([labels, rep]), selection


def masked_teacher_log_probs(teacher_logits, selection, temperature: float = 1.0):
    """Log-probabilities of the base model's logits with each row's forget set masked out.

    ``selection`` is ``(N, K)`` class ids padded with -1; the target a retain pair should match.
    """
    logits = teacher_logits.float() / temperature
    mask = torch.zeros_like(logits, dtype=torch.bool)
    selection = selection.to(logits.device)
    rows, cols = torch.nonzero(selection >= 0, as_tuple=True)
    mask[rows, selection[rows, cols]] = True
    return torch.log_softmax(logits.masked_fill(mask, float("-inf")), dim=-1)


def _weighted_mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    if weights is None:
        return values.mean()
    weights = weights.to(values.device, values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def nearest_centroid_targets(base_features, labels, forget_targets):
    """Feature targets of the forget pairs: the base's batch centroid of each pair's target class.

    ``base_features`` ``(B, D)`` are the unfiltered network's penultimate features of the batch,
    ``labels`` their classes, ``forget_targets`` ``(B,)`` the class each forget pair should look like
    (the base's most likely class outside its forget set). Returns ``(targets (B, D), valid (B,))``;
    ``valid`` is False where the batch holds no sample of the target class (no centroid to pull to).

    Example:
        >>> t, ok = nearest_centroid_targets(torch.eye(3), torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2]))
        >>> t[0].tolist(), ok.tolist()
        ([0.0, 0.5, 0.5], [True, True, False])
    """
    centroids, present = batch_centroids(base_features, labels, int(forget_targets.max()) + 1)
    return centroids[forget_targets], present[forget_targets]


def batch_centroids(base_features, labels, min_classes: int = 0):
    """Per-class mean of the base's features over the batch: ``(centroids (K, D), present (K,))``.

    ``K = max(labels.max() + 1, min_classes)``; a class with no sample in the batch has a zero row
    and ``present`` False.
    """
    feats = base_features.detach().float()
    num = max(int(labels.max()) + 1, int(min_classes))
    sums = feats.new_zeros(num, feats.shape[1]).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=num).to(feats.dtype)
    return sums / counts.clamp(min=1)[:, None], counts > 0


def prototype_forget_loss(features, centroids, present, forget_targets, temperature: float):
    """Cross-entropy of cosine-similarity logits to the batch's class centroids, target = the nearest other class.

    Pairs whose target class has no centroid in the batch are skipped (0 when none is left).

    Example:
        >>> c = torch.eye(2)
        >>> prototype_forget_loss(torch.tensor([[0.0, 1.0]]), c, torch.tensor([True, True]), torch.tensor([1]), 0.1) < 1e-3
        tensor(True)
    """
    valid = present[forget_targets]
    if not bool(valid.any()):
        return features.new_zeros(()).float()
    sims = F.normalize(features[valid].float(), dim=-1) @ F.normalize(centroids.float(), dim=-1).T
    logits = (sims / temperature).masked_fill(~present[None, :], float("-inf"))
    return F.cross_entropy(logits, forget_targets[valid])


def feature_forget_loss(features, target_features, valid):
    """Mean cosine distance ``1 - cos(f_i, t_i)`` over the valid forget pairs (0 when none is valid)."""
    if not bool(valid.any()):
        return features.new_zeros(()).float()
    cos = F.cosine_similarity(features[valid].float(), target_features[valid].float(), dim=-1)
    return (1.0 - cos).mean()


class capture_features:
    """Context manager: the inputs of ``model``'s final classifier layer (penultimate features), WITH grad.

    ``with capture_features(model) as store: model(...)`` leaves ``store[-1]`` = ``(B, D)`` features.
    """

    def __init__(self, model):
        from ..modeling import classifier_module

        self.module = classifier_module(model)
        self.store: list = []

    def __enter__(self):
        def hook(_module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            self.store.append(x.flatten(1))

        self.handle = self.module.register_forward_pre_hook(hook, with_kwargs=True)
        return self.store

    def __exit__(self, *exc):
        self.handle.remove()
        return False


def untraining_loss(logits, targets, batch, filter_values, args: UntrainingArguments, teacher_log_probs=None,
                    forget_targets=None, forget_features=None, feature_targets=None, feature_valid=None,
                    feature_centroids=None, feature_present=None, forget_weights=None):
    """The untraining objective on the expanded batch; returns ``(loss, parts)``.

    ``teacher_log_probs`` (retain rows only, from :func:`masked_teacher_log_probs`) is needed with
    ``args.retain_loss == "kd"``; ``forget_targets`` (forget rows only: the base's most likely class
    outside each row's set) with ``args.forget_loss == "boundary"``; ``forget_features`` (the filtered
    network's penultimate features of the forget rows) with ``feature_targets``/``feature_valid``
    (from :func:`nearest_centroid_targets`) with ``args.feature_loss == "centroid"``; with
    ``"prototype"``, ``feature_targets`` are the target CLASS ids and ``feature_centroids``/``feature_present``
    come from :func:`batch_centroids`; ``forget_weights`` (forget rows
    only, optional) weights the forget term per sample (class balancing).
    """
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    forget_ce, retain_ce = ce[:batch], ce[batch:]
    if args.forget_loss == "boundary":
        if forget_targets is None:
            raise ValueError("forget_loss='boundary' needs the base model's nearest other class (forget_targets).")
        forget_term = _weighted_mean(F.cross_entropy(logits[:batch].float(), forget_targets, reduction="none"),
                                     forget_weights)
    else:
        forget_term = _weighted_mean(1.0 / (forget_ce + args.inverse_ce_eps), forget_weights)
    if args.retain_loss == "kd":
        if teacher_log_probs is None:
            raise ValueError("retain_loss='kd' needs the base model's log-probabilities (teacher_log_probs).")
        t = args.kd_temperature
        student = torch.log_softmax(logits[batch:].float() / t, dim=-1)
        p = teacher_log_probs.exp()
        # KL(teacher || student); masked classes have p = 0 and contribute nothing
        kl = torch.where(p > 0, p * (teacher_log_probs - student), torch.zeros_like(p)).sum(-1)
        retain_term = kl.mean() * (t * t)
    else:
        retain_term = retain_ce.mean()
    reg = torch.stack([(1 - v).mean() for v in filter_values]).mean() if args.lambda_reg else logits.new_zeros(())
    loss = args.lambda_retain * retain_term + args.lambda_forget * forget_term + args.lambda_reg * reg
    parts = {"retain_ce": retain_term.detach(), "forget_ce": forget_ce.mean().detach(), "reg": reg.detach()}
    if args.feature_loss == "centroid":
        if forget_features is None or feature_targets is None or feature_valid is None:
            raise ValueError("feature_loss='centroid' needs the forget rows' features and their centroid targets.")
        feature_term = feature_forget_loss(forget_features, feature_targets, feature_valid)
        loss = loss + args.lambda_feature * feature_term
        parts["feature"] = feature_term.detach()
    elif args.feature_loss == "prototype":
        if forget_features is None or feature_targets is None or feature_centroids is None or feature_present is None:
            raise ValueError("feature_loss='prototype' needs the forget rows' features, their target classes and the "
                             "batch centroids.")
        feature_term = prototype_forget_loss(forget_features, feature_centroids, feature_present, feature_targets,
                                             args.feature_temperature)
        loss = loss + args.lambda_feature * feature_term
        parts["feature"] = feature_term.detach()
    return loss, parts


def _maybe_features(model, on: bool):
    """:class:`capture_features` when the feature term needs them, else a no-op context."""
    import contextlib

    return capture_features(model) if on else contextlib.nullcontext([])


def _make_optimizer(params, args: UntrainingArguments):
    name = args.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=0.9, weight_decay=args.weight_decay)
    raise ValueError(f"Unknown optimizer {args.optimizer!r}: use adam, adamw or sgd.")


def _make_scheduler(optimizer, args: UntrainingArguments, total_steps: int, warmup: int):
    warm = max(0, warmup)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if args.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if args.lr_scheduler == "linear":
            return 1.0 - progress
        if args.lr_scheduler == "constant":
            return 1.0
        raise ValueError(f"Unknown lr_scheduler {args.lr_scheduler!r}: use constant, cosine or linear.")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _filter_values(model) -> list[torch.Tensor]:
    values = []
    for module in model.modules():
        if isinstance(module, WeightFilterLayer):
            for name in module.active_adapters:
                if name in module.weight_filter_theta:
                    values.append(module.filters(name))
    return values


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    # Derived from (seed, step, rank) alone, so a resumed run draws the same forget sets.
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63))


def untrain(
    adapter,
    train_loader,
    args: UntrainingArguments,
    *,
    accelerator=None,
    output_dir: Optional[str] = None,
    resume_from: Optional[str] = None,
    steps_per_epoch: Optional[int] = None,
    on_batch=None,
    validation_loader=None,
    forget_class_weights: Optional[torch.Tensor] = None,
    _crash_after_step: Optional[int] = None,
    run_config_hash: Optional[str] = None,
) -> dict:
    """Run one untraining round on ``adapter`` (an ``UnlearnAdapter``) and return a summary dict.

    Args:
        train_loader: a DataLoader yielding ``{"pixel_values", "labels"}`` over the training split
            (all classes). Map-style loaders are sharded by ``accelerator.prepare``; pass an
            ``IterableDataset`` loader already sharded per rank only if you know what you do (see
            ``hf_unlearn.data.loading``).
        accelerator: an ``accelerate.Accelerator`` (one is made if None).
        output_dir: where ``checkpoint-<step>`` folders go (with ``args.checkpoint_every``).
        resume_from: a checkpoint folder, or ``"latest"`` for the newest one in ``output_dir``.
        steps_per_epoch: needed for streaming loaders without ``len()`` (optimiser steps per epoch).
        on_batch: optional ``fn(batch, epoch, accelerator)`` called with every batch a process trains on.
        run_config_hash: identifies the run's whole configuration; stored with each checkpoint, and
            resuming from a checkpoint of another configuration is refused. Default: a hash of ``args``.
        validation_loader: with ``args.eval_every > 0``, an unshuffled loader over a validation split
            (every class present): the round is measured on it every ``eval_every`` steps and stops when
            it has converged (see :mod:`hf_unlearn.training.convergence`); ``args.max_steps`` is the budget.
        forget_class_weights: optional ``(num_classes,)`` weights of the forget term per class (inverse
            class frequency from :func:`forget_class_weights`), so that every row gets the same signal.

    The summary's ``stop_reason`` says why the round ended (``"epochs"``, ``"converged"``, ``"budget"``
    or ``"budget_target_not_met"``) and ``convergence`` holds every validation measurement.

    Example:

    ```py
    >>> adapter = UnlearnAdapter.attach(model)
    >>> summary = untrain(adapter, loader, UntrainingArguments(epochs=3))
    ```
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from tqdm.auto import tqdm

    args.validate()  # fields may have been changed since construction
    if accelerator is None:
        accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision or None,  # None: as launched
            dataloader_config=DataLoaderConfiguration(even_batches=False, use_seedable_sampler=True),
        )
    set_seed(args.seed)
    model = adapter.model
    model.eval()  # frozen backbone: BatchNorm statistics and dropout stay as trained
    for name, param in model.named_parameters():
        param.requires_grad = "weight_filter_theta" in name
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The adapter has no trainable filters: load it with is_trainable=True.")
    optimizer = _make_optimizer(params, args)
    num_classes = adapter.num_classes

    is_iterable = isinstance(getattr(train_loader, "dataset", None), torch.utils.data.IterableDataset)
    if steps_per_epoch is None:
        try:
            batches = len(train_loader)
        except TypeError as err:
            raise ValueError("A streaming loader has no length: pass steps_per_epoch=.") from err
        # After sharding, each rank sees about 1/world of the batches.
        batches = math.ceil(batches / accelerator.num_processes)
        steps_per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    total_steps = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    # A prepared scheduler advances once per process for every optimizer step: lay the schedule
    # out in those units so that it ends with the run, whatever the number of processes.
    scheduler = _make_scheduler(optimizer, args, total_steps * accelerator.num_processes,
                                warmup=args.warmup_steps * accelerator.num_processes)

    tracker = _make_tracker(args, validation_loader)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if not is_iterable:
        # accelerate shards map-style data; with even_batches=False nothing is padded or repeated.
        train_loader = accelerator.prepare(train_loader)

    completed = 0
    if resume_from:
        run_config_hash = run_config_hash or config_hash(args)
        checkpoint = _find_checkpoint(output_dir, resume_from, run_config_hash)
        accelerator.load_state(str(checkpoint))
        completed = json.loads((checkpoint / "progress.json").read_text())["completed_steps"]
        _load_tracker(tracker, checkpoint)
        accelerator.print(f"Resumed from {checkpoint} at step {completed}.")

    bar = tqdm(total=total_steps, initial=completed, disable=not (args.progress and accelerator.is_main_process),
               desc="untraining", unit="step")
    history, start, cpu_start = [], time.perf_counter(), time.process_time()
    stop_reason = None
    step = completed
    micro = 0
    epoch = completed // steps_per_epoch
    done = step >= total_steps
    while not done:
        loader = _epoch_loader(train_loader, accelerator, epoch, is_iterable)
        iterator = iter(loader)
        # Resume mid-epoch: this rank's batches already trained on are skipped (read and dropped
        # for a stream, which replays the same order for the same epoch).
        skip = (step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
        for _ in range(max(0, skip)):
            next(iterator, None)
        steps_this_epoch, last = 0, None
        while True:
            batch = next(iterator, None)
            # Ranks can hold unequal shares (every example exactly once, no padding). All ranks
            # step together; a rank out of data replays its last batch with weight 0, and each
            # rank's loss is weighted by its share, so the averaged gradient is the mean over all
            # real samples of the step.
            n_local = 0 if batch is None else int(batch["labels"].shape[0])
            counts = accelerator.gather(torch.tensor([n_local], device=accelerator.device))
            total = int(counts.sum())
            if total == 0:
                break
            if batch is None:
                if last is None:
                    raise ValueError(
                        f"Process {accelerator.process_index} got no training batch at all: the dataset is too "
                        f"small for {accelerator.num_processes} processes at batch size {args.batch_size}."
                    )
                batch = last
            elif on_batch is not None:
                on_batch(batch, epoch, accelerator)
            last = batch
            weight = n_local * accelerator.num_processes / total
            gen = _step_generator(args.seed, step * args.gradient_accumulation_steps + micro, accelerator.process_index)
            labels = batch["labels"]
            pixels, targets, selection = expand_batch(batch["pixel_values"], labels.cpu(), num_classes, args, gen)
            pixels, targets = pixels.to(accelerator.device), targets.to(accelerator.device)
            teacher = forget_targets = None
            features = {}
            use_features = args.feature_loss != "none"
            if args.retain_loss == "kd" or args.forget_loss == "boundary" or use_features:
                b = labels.shape[0]
                with torch.no_grad(), _maybe_features(accelerator.unwrap_model(model), use_features) as store:
                    # the original network: no row selected
                    base_logits = accelerator.unwrap_model(model)(pixel_values=pixels[:b]).logits
                if use_features:
                    nearest = masked_teacher_log_probs(base_logits, selection[:b]).argmax(-1)
                    if args.feature_loss == "prototype":
                        features["centroids"], features["present"] = batch_centroids(store[-1], targets[:b],
                                                                                     num_classes)
                        features["target"] = nearest
                    else:
                        features["target"], features["valid"] = nearest_centroid_targets(store[-1], targets[:b],
                                                                                          nearest)
                if args.retain_loss == "kd":
                    teacher = masked_teacher_log_probs(base_logits.repeat(args.retain_rows, 1), selection[b:],
                                                       args.kd_temperature)
                if args.forget_loss == "boundary":
                    forget_targets = masked_teacher_log_probs(base_logits, selection[:b]).argmax(-1)
            with accelerator.accumulate(model):
                with _maybe_features(accelerator.unwrap_model(model), use_features) as store:
                    logits = model(pixel_values=pixels, forget=selection).logits
                loss, parts = untraining_loss(
                    logits, targets, labels.shape[0], _filter_values(accelerator.unwrap_model(model)), args,
                    teacher_log_probs=teacher, forget_targets=forget_targets,
                    forget_weights=None if forget_class_weights is None else forget_class_weights[labels.cpu()],
                    forget_features=store[-1][: labels.shape[0]] if use_features else None,
                    feature_targets=features.get("target"), feature_valid=features.get("valid"),
                    feature_centroids=features.get("centroids"), feature_present=features.get("present"),
                )
                accelerator.backward(loss * weight)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            micro += 1
            if not accelerator.sync_gradients:
                continue
            micro = 0
            step += 1
            steps_this_epoch += 1
            bar.update(1)
            if step % max(1, args.log_every) == 0 or step == total_steps:
                record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", forget_ce=f"{record['forget_ce']:.2f}")
                accelerator.log(record, step=step)
            if tracker is not None and (step % args.eval_every == 0 or step >= total_steps):
                stop_reason = _convergence_check(tracker, model, validation_loader, num_classes, args, step,
                                                 accelerator, bar)
            if output_dir and args.checkpoint_every and step % args.checkpoint_every == 0:
                _save_checkpoint(accelerator, output_dir, step, run_config_hash or config_hash(args), tracker)
            if _crash_after_step is not None and step == _crash_after_step:
                os._exit(17)  # simulate a killed process (tests): no cleanup, no final save
            if step >= total_steps or stop_reason is not None:
                done = True
                break
        epoch += 1
        if steps_this_epoch == 0:
            break
    bar.close()
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # this process's CPU time: comparable on a shared machine
    stop_reason = _final_stop_reason(tracker, stop_reason, accelerator, total_steps)
    return {
        "stop_reason": stop_reason,
        "budget_steps": total_steps,
        "convergence": None if tracker is None else tracker.state_dict(),
        "steps": step,
        "epochs": step / steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "num_processes": accelerator.num_processes,
        "history": history,
        "args": args.to_dict(),
    }


def _epoch_loader(train_loader, accelerator, epoch: int, is_iterable: bool):
    """The loader for one epoch on this rank.

    Map-style loaders were prepared (sharded) by accelerate. A stream is sharded here, once, with
    ``split_dataset_by_node`` and is NOT prepared: sharding it twice would silently drop half of
    the examples with two ranks.
    """
    if not is_iterable:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        return train_loader
    dataset = train_loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if accelerator.num_processes == 1:
        return train_loader
    from datasets.distributed import split_dataset_by_node

    shard = split_dataset_by_node(dataset, rank=accelerator.process_index, world_size=accelerator.num_processes)
    return torch.utils.data.DataLoader(
        shard, batch_size=train_loader.batch_size, collate_fn=train_loader.collate_fn, drop_last=train_loader.drop_last
    )


# Fields that change how a run is watched or chunked, not what it computes: a resumed run may change them.
_RUN_CONTROL_FIELDS = ("progress", "log_every", "checkpoint_every")


def config_hash(values) -> str:
    """A short, stable hash of a run's configuration (a dataclass like ``UntrainingArguments`` or a dict).

    Example:

    ```py
    >>> config_hash(UntrainingArguments(epochs=3)) == config_hash(UntrainingArguments(epochs=3))
    True
    ```
    """
    import hashlib

    if not isinstance(values, dict):
        values = asdict(values)
    values = {k: v for k, v in values.items() if k not in _RUN_CONTROL_FIELDS}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_checkpoint(accelerator, output_dir: str, step: int, run_config_hash: Optional[str] = None,
                     tracker=None) -> None:
    path = Path(output_dir) / f"checkpoint-{step}"
    accelerator.save_state(str(path))
    _save_tracker(tracker, accelerator, output_dir, step)  # before progress.json marks the folder complete
    if accelerator.is_main_process:
        # progress.json marks the checkpoint complete: written last, and atomically (a kill while
        # writing it must not leave an empty file that makes the checkpoint look complete).
        tmp = path / "progress.json.tmp"
        tmp.write_text(json.dumps({"completed_steps": step, "config_hash": run_config_hash}))
        os.replace(tmp, path / "progress.json")
    accelerator.wait_for_everyone()


def read_progress(checkpoint: Path) -> Optional[dict]:
    """The checkpoint's ``progress.json``, or None when it is missing or torn (the save was killed)."""
    try:
        progress = json.loads((Path(checkpoint) / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(progress, dict) or not isinstance(progress.get("completed_steps"), int):
        return None
    return progress


def _check_same_run(checkpoint: Path, progress: dict, run_config_hash: Optional[str]) -> None:
    stored = progress.get("config_hash")
    if run_config_hash and stored and stored != run_config_hash:
        raise ValueError(
            f"{checkpoint} belongs to a run with another configuration (config hash {stored}, this run "
            f"{run_config_hash}): resuming would mix two runs. Resume with the same options, or start "
            "afresh in a new --output_dir (or with --overwrite_output_dir)."
        )


def _find_checkpoint(output_dir: Optional[str], resume_from: str, run_config_hash: Optional[str] = None) -> Path:
    if resume_from != "latest":
        path = Path(resume_from)
        progress = read_progress(path)
        if progress is None:
            raise FileNotFoundError(f"{path} is not a complete untraining checkpoint (no readable progress.json).")
        _check_same_run(path, progress, run_config_hash)
        return path
    if not output_dir:
        raise ValueError("resume_from='latest' needs output_dir.")
    candidates = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]), reverse=True,
    )
    for path in candidates:  # newest first; a torn one (killed mid-save) falls back to the previous
        progress = read_progress(path)
        if progress is not None:
            _check_same_run(path, progress, run_config_hash)
            return path
    raise FileNotFoundError(f"No complete checkpoint-* folder in {output_dir} to resume from.")


# -- convergence-driven rounds (hf_unlearn.training.convergence) ------------------------------------------

TRACKER_FILENAME = "convergence.json"


def forget_class_weights(labels, num_classes: int) -> Optional[torch.Tensor]:
    """Inverse-frequency weights of the forget term per class (mean 1 over the data), or None when the
    classes are balanced (nothing to correct: the plain mean is used, bit for bit as before).

    Example:

    ```py
    >>> forget_class_weights([0, 0, 0, 1], 2)     # class 1 is rare: its forget pairs count 3x
    tensor([0.6667, 2.0000])
    ```
    """
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long).flatten(), minlength=num_classes).double()
    present = counts > 0
    if not present.any() or counts[present].max() == counts[present].min():
        return None
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def _make_tracker(args: UntrainingArguments, validation_loader):
    if not args.eval_every:
        return None
    if validation_loader is None:
        raise ValueError("eval_every > 0 needs a validation_loader (the job carves one from the training data).")
    from .convergence import ConvergenceTracker

    return ConvergenceTracker(target_forget_acc=args.target_forget_acc, patience=args.patience,
                              min_retain_delta=args.min_retain_delta)


def _convergence_check(tracker, model, validation_loader, num_classes, args, step, accelerator, bar):
    """Measure the rows on the validation split; every rank decides as rank 0 does."""
    from accelerate.utils import broadcast

    from .convergence import measure_rows

    # Every rank measures the whole split with the same filters (no sharding, no gather), so the
    # trackers agree; the broadcast below makes the decision rank 0's regardless.
    measurement = measure_rows(accelerator.unwrap_model(model), validation_loader, num_classes,
                               retain_rows=args.validation_retain_rows, max_set_size=args.max_set_size,
                               seed=args.seed, device=accelerator.device)
    reason = tracker.update(step, measurement)
    flag = broadcast(torch.tensor([1 if reason else 0], device=accelerator.device), from_process=0)
    accelerator.log({f"val/{k}": v for k, v in measurement.items() if isinstance(v, (int, float))}, step=step)
    if args.progress and accelerator.is_main_process:
        bar.write(f"step {step}: validation worst-row FA {measurement['worst_forget_acc']:.2f}% "
                  f"(mean {measurement['mean_forget_acc']:.2f}%), retain drop {measurement.get('retain_drop', 0):.2f} pt"
                  + (f", sets FA {measurement['set_forget_acc']:.2f}% drop {measurement['set_retain_drop']:.2f} pt"
                     if "set_forget_acc" in measurement else ""))
    from .convergence import STOP_CONVERGED

    return STOP_CONVERGED if int(flag.item()) else None


def _final_stop_reason(tracker, stop_reason, accelerator, total_steps: int) -> str:
    from .convergence import STOP_BUDGET, STOP_BUDGET_TARGET_NOT_MET, STOP_EPOCHS

    if tracker is None:
        return STOP_EPOCHS
    if stop_reason:
        return stop_reason
    if tracker.target_met():
        return STOP_BUDGET
    import warnings

    last = tracker.history[-1] if tracker.history else {}
    message = (f"The forget target ({tracker.target_forget_acc:g}% on every row) was not met within the budget of "
               f"{total_steps} steps: the worst row is at {last.get('worst_forget_acc', float('nan')):.2f}% on the "
               "validation split. The adapter is saved as it is; raise --max_steps (or the learning rate) to go on.")
    warnings.warn(message, stacklevel=3)
    accelerator.print(f"WARNING: {message}")
    return STOP_BUDGET_TARGET_NOT_MET


def _save_tracker(tracker, accelerator, output_dir: str, step: int) -> None:
    """The convergence state next to a checkpoint, so that a resumed run decides as the whole one."""
    if tracker is None or not accelerator.is_main_process:
        return
    path = Path(output_dir) / f"checkpoint-{step}" / TRACKER_FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(tracker.state_dict(), default=float))
    os.replace(tmp, path)


def _load_tracker(tracker, checkpoint: Path) -> None:
    path = Path(checkpoint) / TRACKER_FILENAME
    if tracker is not None and path.is_file():
        tracker.load_state_dict(json.loads(path.read_text()))
