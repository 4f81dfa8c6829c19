"""The GPU check's in-process cases: training steps (WF untraining vs fine-tuning) and inference latency.

```py
>>> from hf_unlearn.benchmark.gpu.cases import inference_case, step_case
>>> case = step_case("resnet-50", base, TensorDictDataset(pixels, labels), accelerator, args)
>>> case["ratio"]          # WF step time / fine-tuning step time
1.31
```
"""

from __future__ import annotations

import copy
import math
import statistics

import torch
import torch.nn.functional as F

from ...adapter import UnlearnAdapter
from ...data.tensors import collate_batches
from ...training.untrain import UntrainingArguments, untrain
from ..timing import PeakMemory, StepTimer, time_interleaved
from .settings import FORGET_CLASS, NUM_LABELS, all_finite, filters_of

__all__ = ["finetune_steps", "untraining_steps", "step_case", "precision_name", "release", "inference_case"]


def _batches(loader):
    """Batches of ``loader`` without end."""
    while True:  # as many epochs as the steps need
        yield from loader


def finetune_steps(model, dataset, accelerator, args) -> dict:
    """Plain fine-tuning: every weight trainable, train mode, AdamW, cross-entropy; timed per step."""
    model.train()
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate_batches,
                                         generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    timer, losses, skipped = StepTimer(accelerator.device), [], 0
    batches = _batches(loader)
    with PeakMemory(accelerator.device) as memory:
        for _ in range(args.warmup_steps + args.timed_steps):
            batch = next(batches)
            timer.mark()
            with accelerator.autocast():
                logits = model(pixel_values=batch["pixel_values"]).logits
            loss = F.cross_entropy(logits.float(), batch["labels"])
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            skipped += int(accelerator.optimizer_step_was_skipped)
            losses.append(loss.detach())
        timer.mark()
    seconds = timer.step_seconds(skip=args.warmup_steps)
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "images_per_s": args.batch_size / statistics.median(seconds),
        "timed_steps": len(seconds),
        "losses_finite": all_finite(losses),
        "params_finite": all_finite(accelerator.unwrap_model(model).parameters()),
        "steps_skipped_by_grad_scaler": skipped,
        "memory": memory.to_dict(),
    }


def untraining_steps(model, dataset, accelerator, args) -> dict:
    """The weight-filter untraining step, run by ``hf_unlearn.training.untrain`` itself; timed per step."""
    adapter = UnlearnAdapter.attach(model)
    before = [p.detach().clone() for p in filters_of(adapter)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate_batches,
                                         generator=torch.Generator().manual_seed(args.seed))
    # The library's defaults (the paper's objective, T = 1 retain row per sample); log_every=1 so that
    # every step's losses are checked (the timer already waits on the device once per step).
    targs = UntrainingArguments(batch_size=args.batch_size, max_steps=args.warmup_steps + args.timed_steps,
                                log_every=1, progress=False, seed=args.seed)
    timer, skipped = StepTimer(accelerator.device), [0]

    def on_batch(batch, epoch, acc):
        if timer.wall:  # the step before this batch's
            skipped[0] += int(acc.optimizer_step_was_skipped)
        timer.mark()

    with PeakMemory(accelerator.device) as memory:
        summary = untrain(adapter, loader, targs, accelerator=accelerator, on_batch=on_batch)
        timer.mark()
    skipped[0] += int(accelerator.optimizer_step_was_skipped)
    seconds = timer.step_seconds(skip=args.warmup_steps)
    history = summary["history"]
    loss_values = [v for record in history for k, v in record.items() if k != "step"]
    after = filters_of(adapter)
    return {
        "median_ms": statistics.median(seconds) * 1e3,
        "images_per_s": args.batch_size / statistics.median(seconds),
        "rows_per_step": args.batch_size * (1 + targs.retain_rows),
        "timed_steps": len(seconds),
        "losses_finite": bool(history) and all(math.isfinite(v) for v in loss_values),
        "filters_finite": all_finite(after),
        "filters_changed": any(not torch.equal(a.detach().cpu(), b.cpu()) for a, b in zip(after, before)),
        "last_loss": history[-1]["loss"] if history else None,
        "steps_skipped_by_grad_scaler": skipped[0],
        "memory": memory.to_dict(),
    }


def step_case(name, base, dataset, accelerator, args) -> dict:
    """A fine-tuning step against a WF untraining step on the same model copy and batches."""
    case = {"model": name, "precision": precision_name(accelerator), "batch_size": args.batch_size}
    case["finetune"] = finetune_steps(copy.deepcopy(base), dataset, accelerator, args)
    release(accelerator, args)
    case["untrain"] = untraining_steps(copy.deepcopy(base), dataset, accelerator, args)
    release(accelerator, args)
    case["ratio"] = case["untrain"]["median_ms"] / case["finetune"]["median_ms"]
    return case


def precision_name(accelerator) -> str:
    """fp32 / bf16 / fp16 as it really runs: accelerate leaves fp16 off on CPU (no autocast there)."""
    mp = accelerator.mixed_precision
    if mp == "no":
        return "fp32"
    return mp if accelerator.native_amp else f"{mp} (inactive here: fp32)"


def release(accelerator, args) -> None:
    """Free the last case's models before the next one, so that its peak memory is its own.

    ``free_memory`` drops accelerate's references, collects garbage and empties the device cache.
    At smoke size on CPU the models are tiny and no memory is measured: the collection (a second
    per call on a busy 2-core box) is skipped.
    """
    if accelerator.device.type == "cpu" and args.smoke:
        return
    accelerator.free_memory()


def inference_case(name, base, pixels, accelerator, args) -> dict:
    """Latency of the five ways to run a model, per batch size, as ratios to the base model."""
    device = accelerator.device
    base_model = copy.deepcopy(base).eval().to(device)
    adapter = UnlearnAdapter.attach(copy.deepcopy(base))
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():  # trained-looking filters: a random value per unit and class
        for p in filters_of(adapter):
            p.copy_(torch.empty(p.shape).uniform_(-3, 3, generator=gen))
    adapter.eval().to(device)
    exported = adapter.export(forget=FORGET_CLASS)
    rows = []
    for batch in args.inference_batch_sizes:
        x = pixels[:batch]
        per_sample = torch.arange(batch) % NUM_LABELS
        calls = {
            "base": lambda x=x: base_model(pixel_values=x),
            "adapter, nothing selected": lambda x=x: adapter(pixel_values=x),
            "one row per batch": lambda x=x: adapter(pixel_values=x, forget=FORGET_CLASS),
            "row per sample": lambda x=x, s=per_sample: adapter(pixel_values=x, forget=s),
            "exported": lambda x=x: exported(pixel_values=x),
        }

        def under_precision(fn):
            def run():
                with torch.inference_mode(), accelerator.autocast():
                    return fn()
            return run

        variants = {k: under_precision(fn) for k, fn in calls.items()}
        times = time_interleaved(variants, device, repeats=args.inference_repeats, warmup=args.inference_warmup)
        memory = {}
        for key, fn in variants.items():
            with PeakMemory(device) as mem:
                fn()
            memory[key] = mem.to_dict()
        with torch.inference_mode():
            logits = {k: variants[k]().logits.float() for k in ("base", "adapter, nothing selected",
                                                               "one row per batch", "exported")}
        scale = float(logits["base"].abs().max().clamp_min(1e-12))
        base_ms = times["base"]["median_ms"]
        rows.append({
            "model": name, "precision": precision_name(accelerator), "batch": batch,
            "base_ms": base_ms, "times": times,
            "ratios": {k: v["median_ms"] / base_ms for k, v in times.items()},
            "memory": memory,
            # With nothing selected the adapter runs the base layers themselves: equal to the base.
            "nothing_selected_vs_base_rel": float((logits["adapter, nothing selected"] - logits["base"]).abs().max()) / scale,
            "exported_vs_one_row_rel": float((logits["exported"] - logits["one row per batch"]).abs().max())
            / float(logits["one row per batch"].abs().max().clamp_min(1e-12)),
        })
    return {"model": name, "precision": precision_name(accelerator), "rows": rows,
            "filters_per_class": sum(m.out_features for m in adapter.filter_layers().values()),
            "base_params": sum(p.numel() for p in base.parameters())}
