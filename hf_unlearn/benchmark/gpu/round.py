"""The GPU check's launched round: a short untraining round per model in a process started by
``accelerate launch --mixed_precision bf16`` (what a user's job gets), then the saved adapter reloaded
on CPU and the exported model's logits compared between CPU and the device.

```py
>>> from hf_unlearn.benchmark.gpu.round import launch_round
>>> result = launch_round(args, work_dir, cpu=True, timeout=600, log=print)
>>> result["mixed_precision"], [e["loads_on_cpu"] for e in result["models"]]
('bf16', [True, True, True])
```
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from ...adapter import UnlearnAdapter
from ...data.tensors import TensorDictDataset, collate_batches
from ...files import atomic_write_text
from ...training.untrain import UntrainingArguments, untrain
from ..timing import PeakMemory, device_info
from .cases import release
from .settings import FORGET_CLASS, REPO, Log, all_finite, build_base, filters_of, load_images

__all__ = ["round_child", "round_untrain", "round_reload", "launch_round"]


def round_child(args) -> int:
    """Runs inside ``accelerate launch --mixed_precision bf16``: one short untraining round per model."""
    result_path = Path(args.child_result)
    # No mixed_precision here: the launcher's --mixed_precision decides (what a user's job gets).
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(even_batches=False, use_seedable_sampler=True))
    result = {"mixed_precision": accelerator.mixed_precision, "native_amp": bool(accelerator.native_amp),
              "device": device_info(accelerator.device), "models": []}
    pixels, labels, data_info = load_images(args, args.round_images)
    result["data"] = data_info
    work = Path(args.work_dir)
    for name in args.round_models:
        entry = {"model": name, "steps": args.round_steps}
        result["models"].append(entry)
        try:
            base_dir, adapter_dir = work / f"base-{name}", work / f"adapter-{name}"
            theta = round_untrain(name, pixels, labels, base_dir, adapter_dir, accelerator, args, entry)
            round_reload(pixels, base_dir, adapter_dir, theta, accelerator, args, entry)
        except Exception as err:  # one model's failure must not hide the others' results
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            print(entry["traceback"], file=sys.stderr, flush=True)
        atomic_write_text(result_path, json.dumps(result, indent=2))
    accelerator.wait_for_everyone()  # no rank tears the process group down while another still talks
    accelerator.end_training()
    return 0


def round_untrain(name, pixels, labels, base_dir: Path, adapter_dir: Path, accelerator, args, entry: dict) -> list:
    """Untrain a fresh model for ``args.round_steps`` steps, save base and adapter; returns its filters (CPU)."""
    base = build_base(args, name)
    base.save_pretrained(base_dir)  # safetensors
    adapter = UnlearnAdapter.attach(base)
    loader = torch.utils.data.DataLoader(TensorDictDataset(pixels, labels), batch_size=args.batch_size, shuffle=True,
                                         collate_fn=collate_batches,
                                         generator=torch.Generator().manual_seed(args.seed))
    targs = UntrainingArguments(batch_size=args.batch_size, max_steps=args.round_steps,
                                log_every=max(1, args.round_steps // 30), progress=False, seed=args.seed)
    with PeakMemory(accelerator.device) as memory:
        summary = untrain(adapter, loader, targs, accelerator=accelerator)
    losses = [v for record in summary["history"] for k, v in record.items() if k != "step"]
    theta = [p.detach().float().cpu() for p in filters_of(adapter)]
    alpha = torch.cat([torch.sigmoid(t).flatten() for t in theta])
    entry.update(
        seconds=summary["seconds"], steps=summary["steps"], memory=memory.to_dict(),
        losses_finite=bool(losses) and all(math.isfinite(v) for v in losses),
        first_loss=summary["history"][0]["loss"] if summary["history"] else None,
        last_loss=summary["history"][-1]["loss"] if summary["history"] else None,
        filters_finite=all_finite(theta),
        filters_min=float(alpha.min()), filters_mean=float(alpha.mean()),
    )
    adapter.save_pretrained(adapter_dir)
    del adapter, base
    release(accelerator, args)
    return theta


def round_reload(pixels, base_dir: Path, adapter_dir: Path, theta: list, accelerator, args, entry: dict) -> None:
    """A fresh load of the saved adapter on CPU (as a user without a GPU does), then the exported model's
    logits on CPU against the device, in fp32 and under the launched autocast."""
    loaded = UnlearnAdapter.from_pretrained(adapter_dir, base_model=str(base_dir))
    loaded_theta = [p.detach().float() for p in filters_of(loaded)]
    devices = sorted({p.device.type for p in loaded.model.parameters()})
    entry["loaded_devices"] = devices
    entry["loaded_vs_trained_max_abs"] = max(float((a - b).abs().max()) for a, b in zip(loaded_theta, theta))
    entry["loads_on_cpu"] = (devices == ["cpu"] and len(loaded_theta) == len(theta)
                             and entry["loaded_vs_trained_max_abs"] == 0.0)

    exported = loaded.export(forget=FORGET_CLASS)
    x = pixels[:8]
    with torch.no_grad():
        cpu_logits = exported(pixel_values=x).logits.float()
        on_device = copy.deepcopy(exported).to(accelerator.device)
        device_fp32 = on_device(pixel_values=x.to(accelerator.device)).logits.float().cpu()
        with accelerator.autocast():
            device_amp = on_device(pixel_values=x.to(accelerator.device)).logits.float().cpu()
    scale = float(cpu_logits.abs().max().clamp_min(1e-12))
    entry.update(
        logits_fp32_rel=float((device_fp32 - cpu_logits).abs().max()) / scale,
        logits_amp_rel=float((device_amp - cpu_logits).abs().max()) / scale,
        argmax_agree_fp32=float((device_fp32.argmax(-1) == cpu_logits.argmax(-1)).float().mean()),
        argmax_agree_amp=float((device_amp.argmax(-1) == cpu_logits.argmax(-1)).float().mean()),
        logit_scale=scale, compared_images=int(x.shape[0]),
    )
    del on_device, exported, loaded
    release(accelerator, args)


def launch_round(args, work_dir: Path, cpu: bool, timeout: float, log: Log) -> dict:
    """Start the round under ``accelerate launch --mixed_precision bf16`` and read what it wrote."""
    settings = work_dir / "round-settings.json"
    result = work_dir / "round-result.json"
    child = copy.copy(args)
    child.child, child.work_dir, child.child_result = "round", str(work_dir), str(result)
    settings.write_text(json.dumps(asdict(child)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    if cpu:
        cmd.append("--cpu")
    cmd += ["--module", "hf_unlearn.benchmark.gpu.check", "--child", "round", "--child_settings", str(settings)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    log("round: " + " ".join(cmd[1:]))
    start = time.perf_counter()
    with open(log.path, "a") as sink:
        try:
            proc = subprocess.run(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    out = json.loads(result.read_text()) if result.is_file() else {"models": []}
    out.update(command="accelerate launch --num_processes 1 --mixed_precision bf16 "
                       + ("--cpu " if cpu else "") + "-m hf_unlearn.benchmark.gpu.check --child round",
               returncode=returncode, wall_s=time.perf_counter() - start)
    if returncode != 0:
        out["error"] = f"the launched round ended with {returncode} (its output is in gpu_check.log)"
    return out
