"""Untraining: teach every row of the weight filters at once (WF-Net's one training round).

:func:`untrain` runs the loop: each optimiser step draws the batch's forget and retain sets
(:func:`hf_unlearn.training.objective.expand_batch`, seeded by ``(seed, step, rank)`` so a resumed run
draws the same ones), runs them as one forward and minimises
:func:`hf_unlearn.training.objective.untraining_loss` (the objective, described there). The backbone is
frozen and in eval mode (BatchNorm statistics fixed); only the filters learn. Runs on ``accelerate``
(one or many processes, DDP over gloo on CPU), with checkpoints that a killed run resumes from exactly
(:mod:`hf_unlearn.training.checkpoint`), and optionally a convergence check that ends the round
(:mod:`hf_unlearn.training.convergence`).

    from hf_unlearn import UnlearnAdapter
    from hf_unlearn.training.untrain import UntrainingArguments, untrain

    adapter = UnlearnAdapter.attach(model)
    summary = untrain(adapter, loader, UntrainingArguments(epochs=3))
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..modeling import classifier_weight
from .checkpoint import config_hash, find_checkpoint, load_checkpoint, save_checkpoint
from .convergence import convergence_check, final_stop_reason, make_tracker
from .objective import (base_model_targets, expand_batch, filter_values, maybe_features, similar_classes,
                        untraining_loss)


@dataclass
class UntrainingArguments:
    """Hyperparameters and run controls of one untraining round (all classes at once).

    Defaults follow the paper's objective (inverse CE on forget pairs, CE on retain pairs) with the
    measured best settings on Fashion-MNIST; the ResNet recipe config measured ``forget_loss="boundary"``
    better there (recipes/README.md records the search). On the command line every field is a flag
    (``hf-unlearn train --learning_rate 0.05``).

    Example:
        >>> args = UntrainingArguments(max_steps=1500, eval_every=100, forget_loss="boundary")
        >>> args.to_dict()["forget_loss"]
        'boundary'
    """

    epochs: float = field(default=3.0, metadata={"help": "passes over the training split (when max_steps is 0)"})
    batch_size: int = field(default=128, metadata={"help": "training images per step and process"})
    learning_rate: float = field(default=0.1, metadata={"help": "learning rate of the filter logits"})
    optimizer: str = field(default="adam", metadata={"help": "adam | adamw | sgd (momentum 0.9)"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay of the optimiser"})
    lr_scheduler: str = field(default="constant", metadata={"help": "constant | cosine | linear (transformers' schedules)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps of the learning rate"})
    lambda_retain: float = field(default=1.0, metadata={"help": "weight of the retain term"})
    retain_loss: str = field(default="ce", metadata={
        "help": "ce (labels) | kd (match the base model with the set's logits masked)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "temperature of retain_loss=kd"})
    forget_loss: str = field(default="inverse_ce", metadata={
        "help": "inverse_ce (bounded 1/CE, the paper) | boundary (CE to the base's nearest other class)"})
    lambda_forget: float = field(default=1.0, metadata={"help": "weight of the forget term"})
    lambda_reg: float = field(default=0.0, metadata={"help": "weight of the mean(1 - filter) regulariser"})
    feature_loss: str = field(default="none", metadata={
        "help": "none | centroid (cosine pull to the base's nearest-other-class centroid) | prototype"})
    lambda_feature: float = field(default=1.0, metadata={"help": "weight of the feature term"})
    feature_temperature: float = field(default=0.1, metadata={
        "help": "prototype: cosine similarities are divided by this"})
    inverse_ce_eps: float = field(default=1e-2, metadata={"help": "eps of the bounded forget term 1 / (CE + eps)"})
    retain_rows: int = field(default=1, metadata={"help": "random other rows (retain pairs) each sample runs with"})
    retain_neighbours: int = field(default=0, metadata={
        "help": "k > 0: draw retain pairs' sets from the k classes nearest in the classifier (with neighbour_prob)"})
    neighbour_prob: float = field(default=0.5, metadata={
        "help": "share of retain pairs drawn from the neighbours when retain_neighbours > 0"})
    max_set_size: int = field(default=2, metadata={"help": "largest random forget set drawn during training"})
    set_prob: float = field(default=0.5, metadata={"help": "probability that a pair's forget set has 2+ classes"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimiser step"})
    # "" = as launched (`accelerate launch --mixed_precision ...` / accelerate config), else fp32;
    # an explicit "no" would override the launcher's choice.
    mixed_precision: str = field(default="", metadata={
        "help": "'' (as `accelerate launch` was given) | no | fp16 | bf16"})
    seed: int = field(default=0, metadata={"help": "seed of the forget sets, the shuffling and the subsamples"})
    checkpoint_every: int = field(default=0, metadata={"help": "steps between checkpoints; 0 = none"})
    max_steps: int = field(default=0, metadata={
        "help": "stop after this many optimiser steps (0 = use epochs); the budget with eval_every"})
    # Convergence-driven rounds (hf_unlearn.training.convergence): with eval_every > 0 and a validation loader the
    # round measures every row every eval_every steps and stops when the worst row's forget accuracy is
    # <= target_forget_acc (%) and the retain accuracy stopped improving (patience measurements).
    eval_every: int = field(default=0, metadata={
        "help": "steps between validation measurements; 0 = no convergence check"})
    target_forget_acc: float = field(default=1.0, metadata={"help": "forget accuracy (%%) every row must reach"})
    # With many classes the validation split holds few images per class (30 at 100 classes), and "every row
    # <= 1%" there means no miss at all on any image: a round meets it by chance. This asks instead that no
    # row be significantly above the target.
    forget_confidence: Optional[float] = field(default=None, metadata={
        "help": "e.g. 0.95: a row counts as forgotten unless its validation forget accuracy is above "
                "target_forget_acc with this confidence (one-sided exact binomial test); default: every row "
                "at or under the target"})
    patience: int = field(default=2, metadata={"help": "measurements without retain improvement before stopping"})
    min_retain_delta: float = field(default=0.05, metadata={
        "help": "points of retain accuracy that count as an improvement"})
    validation_retain_rows: int = field(default=2, metadata={
        "help": "random other rows each validation sample runs with"})
    balance_forget: bool = field(default=True, metadata={
        "help": "weight forget pairs by inverse class frequency: every row gets the same signal"})
    log_every: int = field(default=20, metadata={"help": "steps between loss records"})
    progress: bool = field(default=True, metadata={"help": "show the progress bar"})

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Reject unknown objective names at once (a job checks them before it writes anything)."""
        if self.retain_loss not in ("ce", "kd"):
            raise ValueError(f"Unknown retain_loss {self.retain_loss!r}: use 'ce' (labels) or 'kd' (match the base model).")
        if self.forget_loss not in ("inverse_ce", "boundary"):
            raise ValueError(f"Unknown forget_loss {self.forget_loss!r}: use 'inverse_ce' or 'boundary'.")
        if self.forget_confidence is not None and not 0 < self.forget_confidence < 1:
            raise ValueError(f"forget_confidence={self.forget_confidence}: give a probability in (0, 1), e.g. 0.95, "
                             "or leave it unset for 'every row at or under the target'.")
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
        if self.retain_neighbours < 0 or not 0.0 <= self.neighbour_prob <= 1.0:
            raise ValueError(f"retain_neighbours={self.retain_neighbours}, neighbour_prob={self.neighbour_prob}: "
                             "give retain_neighbours >= 0 (0 = off) and neighbour_prob in [0, 1].")

    def to_dict(self) -> dict:
        return asdict(self)


SCHEDULERS = ("constant", "cosine", "linear")


def make_optimizer(params, args: UntrainingArguments) -> torch.optim.Optimizer:
    """The optimiser ``args.optimizer`` names over the filter parameters."""
    name = args.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=0.9, weight_decay=args.weight_decay)
    raise ValueError(f"Unknown optimizer {args.optimizer!r}: use adam, adamw or sgd.")


def make_scheduler(optimizer, args: UntrainingArguments, total_steps: int, warmup_steps: int):
    """transformers' schedule ``args.lr_scheduler`` over ``total_steps`` scheduler steps.

    ``constant`` with warm-up steps is transformers' ``constant_with_warmup``. transformers' linear
    warm-up multiplies the rate by ``step / warmup`` (0 on the first step).
    """
    if args.lr_scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown lr_scheduler {args.lr_scheduler!r}: use constant, cosine or linear.")
    name = "constant_with_warmup" if args.lr_scheduler == "constant" and warmup_steps else args.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=max(0, warmup_steps), num_training_steps=total_steps)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one micro-batch's forget sets: from ``(seed, step, rank)`` alone, so that a
    resumed run draws the same sets as an uninterrupted one."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63))


def default_accelerator(args: UntrainingArguments) -> Accelerator:
    """The accelerator a round makes when it is given none (what ``accelerate launch`` configured)."""
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision or None,  # None: as launched
        # even_batches=False: no padding, every example exactly once per epoch under DDP (the loop
        # keeps ranks with unequal shares in step).
        dataloader_config=DataLoaderConfiguration(even_batches=False, use_seedable_sampler=True),
    )


class _Round:
    """The state of one round that every micro-batch step needs (model, optimiser, objective inputs)."""

    def __init__(self, adapter, args: UntrainingArguments, accelerator, forget_class_weights):
        model = adapter.model
        model.eval()  # frozen backbone: BatchNorm statistics and dropout stay as trained
        for name, param in model.named_parameters():
            param.requires_grad = "weight_filter_theta" in name
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("The adapter has no trainable filters: load it with is_trainable=True.")
        self.args, self.accelerator, self.num_classes = args, accelerator, adapter.num_classes
        self.model, self.optimizer, self.weights = model, make_optimizer(params, args), forget_class_weights
        self.micro = 0  # micro-batches since the last optimiser step (carried across epochs)
        # The base's classifier is frozen, so the neighbours are fixed for the whole round.
        self.neighbours = (similar_classes(classifier_weight(model), args.retain_neighbours)
                           if args.retain_neighbours > 0 else None)

    def prepare(self, total_steps: int) -> None:
        # A prepared scheduler advances once per process for every optimizer step: lay the schedule
        # out in those units so that it ends with the run, whatever the number of processes.
        n = self.accelerator.num_processes
        scheduler = make_scheduler(self.optimizer, self.args, total_steps * n, self.args.warmup_steps * n)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.model, self.optimizer, scheduler)

    def train_on(self, batch, weight: float, micro_index: int):
        """One micro-batch: forward the forget and retain pairs, backward, and (when synced) step."""
        args, accelerator = self.args, self.accelerator
        plain = accelerator.unwrap_model(self.model)
        labels = batch["labels"]
        gen = step_generator(args.seed, micro_index, accelerator.process_index)
        pixels, targets, selection = expand_batch(batch["pixel_values"], labels.cpu(), self.num_classes, args, gen,
                                                  self.neighbours)
        pixels, targets = pixels.to(accelerator.device), targets.to(accelerator.device)
        b = labels.shape[0]
        extra = base_model_targets(plain, pixels, targets, selection, b, self.num_classes, args)
        use_features = args.feature_loss != "none"
        with accelerator.accumulate(self.model):
            with maybe_features(plain, use_features) as store:
                logits = self.model(pixel_values=pixels, forget=selection).logits
            if use_features:
                extra["forget_features"] = store[-1][:b]
            loss, parts = untraining_loss(
                logits, targets, b, filter_values(plain), args,
                forget_weights=None if self.weights is None else self.weights[labels.cpu()], **extra)
            accelerator.backward(loss * weight)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss, parts

    def watch(self, total_steps: int, completed: int, tracker, validation_loader, output_dir, run_config_hash):
        """What happens after each optimiser step: the bar, the log, validation and checkpoints."""
        args, accelerator = self.args, self.accelerator
        self.total_steps, self.tracker, self.validation_loader = total_steps, tracker, validation_loader
        self.output_dir, self.run_config_hash, self.history = output_dir, run_config_hash, []
        self.bar = tqdm(total=total_steps, initial=completed, desc="untraining", unit="step",
                        disable=not (args.progress and accelerator.is_main_process))

    def after_step(self, step: int, loss, parts) -> Optional[str]:
        """Log, validate and checkpoint after optimiser step ``step``; returns a stop reason or None."""
        args, accelerator, stop_reason = self.args, self.accelerator, None
        self.bar.update(1)
        if step % max(1, args.log_every) == 0 or step == self.total_steps:
            record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
            self.history.append(record)
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", forget_ce=f"{record['forget_ce']:.2f}")
            accelerator.log(record, step=step)
        if self.tracker is not None and (step % args.eval_every == 0 or step >= self.total_steps):
            stop_reason = convergence_check(self.tracker, self.model, self.validation_loader, self.num_classes,
                                            args, step, accelerator, self.bar)
        if self.output_dir and args.checkpoint_every and step % args.checkpoint_every == 0:
            save_checkpoint(accelerator, self.output_dir, step, self.run_config_hash, self.tracker)
        return stop_reason


def untrain(
    adapter,
    train_loader,
    args: UntrainingArguments,
    *,
    accelerator=None,
    output_dir: Optional[str] = None,
    resume_from: Optional[str] = None,
    steps_per_epoch: Optional[int] = None,
    on_batch: Optional[Callable] = None,
    on_step: Optional[Callable] = None,
    validation_loader=None,
    forget_class_weights: Optional[torch.Tensor] = None,
    run_config_hash: Optional[str] = None,
) -> dict:
    """Run one untraining round on ``adapter`` (an ``UnlearnAdapter``) and return a summary dict.

    Args:
        train_loader: a DataLoader yielding ``{"pixel_values", "labels"}`` over the training split
            (all classes). Map-style loaders are sharded by ``accelerator.prepare``; pass an
            ``IterableDataset`` loader already sharded per rank only if you know what you do (see
            ``hf_unlearn.data.loaders``).
        accelerator: an ``accelerate.Accelerator`` (:func:`default_accelerator` if None).
        output_dir: where ``checkpoint-<step>`` folders go (with ``args.checkpoint_every``).
        resume_from: a checkpoint folder, or ``"latest"`` for the newest one in ``output_dir``.
        steps_per_epoch: needed for streaming loaders without ``len()`` (optimiser steps per epoch).
        on_batch: optional ``fn(batch, epoch, accelerator)`` called with every batch a process trains on.
        on_step: optional ``fn(step, accelerator)`` called after every optimiser step, once its
            logging, validation and checkpoint are done (progress reporting, custom logging, or a
            test that stops the process there).
        run_config_hash: identifies the run's whole configuration; stored with each checkpoint, and
            resuming from a checkpoint of another configuration is refused. Default: a hash of ``args``.
        validation_loader: with ``args.eval_every > 0``, an unshuffled loader over a validation split
            (every class present): the round is measured on it every ``eval_every`` steps and stops when
            it has converged (see :mod:`hf_unlearn.training.convergence`); ``args.max_steps`` is the budget.
        forget_class_weights: optional ``(num_classes,)`` weights of the forget term per class (inverse
            class frequency from :func:`hf_unlearn.training.objective.forget_class_weights`).

    The summary's ``stop_reason`` says why the round ended (``"epochs"``, ``"converged"``, ``"budget"``
    or ``"budget_target_not_met"``) and ``convergence`` holds every validation measurement.

    Example:

    ```py
    >>> adapter = UnlearnAdapter.attach(model)
    >>> summary = untrain(adapter, loader, UntrainingArguments(epochs=3))
    ```
    """
    args.validate()  # fields may have been changed since construction
    accelerator = accelerator or default_accelerator(args)
    set_seed(args.seed)
    round_ = _Round(adapter, args, accelerator, forget_class_weights)
    is_iterable = isinstance(getattr(train_loader, "dataset", None), torch.utils.data.IterableDataset)
    steps_per_epoch = steps_per_epoch or _steps_per_epoch(train_loader, args, accelerator)
    total_steps = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    tracker = make_tracker(args, validation_loader)
    round_.prepare(total_steps)
    if not is_iterable:
        # accelerate shards map-style data; with even_batches=False nothing is padded or repeated.
        train_loader = accelerator.prepare(train_loader)
    run_config_hash = run_config_hash or config_hash(args)
    completed = 0
    if resume_from:
        checkpoint = find_checkpoint(output_dir, resume_from, run_config_hash)
        completed = load_checkpoint(accelerator, checkpoint, tracker)
        accelerator.print(f"Resumed from {checkpoint} at step {completed}.")

    round_.watch(total_steps, completed, tracker, validation_loader, output_dir, run_config_hash)
    start, cpu_start = time.perf_counter(), time.process_time()
    step, stop_reason = completed, None
    epoch = completed // steps_per_epoch
    while step < total_steps and stop_reason is None:
        # Resume mid-epoch: this rank's batches already trained on are skipped (a stream replays
        # the same order for the same epoch).
        skip = (step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
        loader = _epoch_loader(train_loader, accelerator, epoch, is_iterable, skip)
        steps_this_epoch = 0
        for loss, parts in _micro_batches(round_, loader, step, epoch, on_batch):
            step += 1
            steps_this_epoch += 1
            stop_reason = round_.after_step(step, loss, parts)
            if on_step is not None:
                on_step(step, accelerator)
            if step >= total_steps or stop_reason is not None:
                break
        epoch += 1
        if steps_this_epoch == 0:
            break
    round_.bar.close()
    accelerator.wait_for_everyone()
    return {
        "stop_reason": final_stop_reason(tracker, stop_reason, accelerator, total_steps),
        "budget_steps": total_steps,
        "convergence": None if tracker is None else tracker.state_dict(),
        "steps": step,
        "epochs": step / steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "seconds": time.perf_counter() - start,
        # this process's CPU time: comparable on a shared machine
        "cpu_seconds": time.process_time() - cpu_start,
        "num_processes": accelerator.num_processes,
        "history": round_.history,
        "args": args.to_dict(),
    }


def _micro_batches(round_: _Round, loader, step: int, epoch: int, on_batch):
    """Train on ``loader``'s batches; yields ``(loss, parts)`` after every optimiser step.

    Ranks can hold unequal shares (every example exactly once, no padding). All ranks step together;
    a rank out of data replays its last batch with weight 0, and each rank's loss is weighted by its
    share, so the averaged gradient is the mean over all real samples of the step.
    """
    accelerator, args = round_.accelerator, round_.args
    iterator = iter(loader)
    last = None
    while True:
        batch = next(iterator, None)
        n_local = 0 if batch is None else int(batch["labels"].shape[0])
        total = int(accelerator.gather(torch.tensor([n_local], device=accelerator.device)).sum())
        if total == 0:
            return
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
        loss, parts = round_.train_on(batch, weight, step * args.gradient_accumulation_steps + round_.micro)
        round_.micro += 1
        if not accelerator.sync_gradients:
            continue
        round_.micro = 0
        step += 1
        yield loss, parts


def _steps_per_epoch(train_loader, args: UntrainingArguments, accelerator) -> int:
    try:
        batches = len(train_loader)
    except TypeError as err:
        raise ValueError("A streaming loader has no length: pass steps_per_epoch=.") from err
    # After sharding, each rank sees about 1/world of the batches.
    batches = math.ceil(batches / accelerator.num_processes)
    return max(1, math.ceil(batches / args.gradient_accumulation_steps))


def _epoch_loader(train_loader, accelerator, epoch: int, is_iterable: bool, skip: int):
    """The loader for one epoch on this rank, its first ``skip`` batches skipped (a resumed epoch).

    Map-style loaders were prepared (sharded) by accelerate. A stream is sharded here, once, with
    ``split_dataset_by_node`` and is NOT prepared: sharding it twice would silently drop half of
    the examples with two ranks.
    """
    if not is_iterable:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loader = train_loader
    else:
        dataset = train_loader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = train_loader
        if accelerator.num_processes > 1:
            from datasets.distributed import split_dataset_by_node  # datasets: only for a distributed stream

            shard = split_dataset_by_node(dataset, rank=accelerator.process_index,
                                          world_size=accelerator.num_processes)
            loader = torch.utils.data.DataLoader(shard, batch_size=train_loader.batch_size,
                                                 collate_fn=train_loader.collate_fn, drop_last=train_loader.drop_last)
    return accelerator.skip_first_batches(loader, skip) if skip > 0 else loader
