"""One prepared check of the CUDA path: mixed precision, real-size step cost and latency, a launched round.

    bash scripts/gpu_check.sh                          # full size on a GPU (about 3-5 min on an H200)
    bash scripts/gpu_check.sh --output_dir $OUT        # the report somewhere else
    bash scripts/gpu_check.sh --smoke --cpu            # tiny models on CPU, ~1 min: what the test suite runs

(`scripts/gpu_check.sh` sets the environment and calls ``recipes/gpu_check.py``, which calls
:func:`main`; its header says how to run it on a lent GPU machine.) Offline; needs torch, transformers,
peft and accelerate, not `datasets`/`evaluate`. It writes ``gpu_check.json``, ``gpu_check.md`` and
``gpu_check.log`` into ``--output_dir`` (rewritten after every case, so a run stopped early still leaves
what it measured) and nothing else there.

1. Models: ViT-B/16 (224), ConvNeXt-T and ResNet-50 from transformers configs, random weights, a
   100-class head; data: the built-in 100-class Fashion-MNIST composites when ``hf_unlearn.data.builtin`` has
   them and they load here, else Fashion-MNIST's training images resized to 224 (IDX files).
2. For each precision (bf16 autocast, fp16 autocast with accelerate's grad scaler, fp32), each model
   (``cases``):
   - a weight-filter untraining step (``hf_unlearn.training.untrain``'s own loop) against a plain
     fine-tuning step (all weights, AdamW) at the same input batch: step times, images/s, the ratio,
     peak memory, and finite filters and losses;
   - inference latency of the base model, the adapter with nothing selected, one row for the batch,
     a row per sample, and the exported model, at batch 1, 8 and 64, as ratios to the base.
3. A short untraining round per model in a separate process started by ``accelerate launch
   --mixed_precision bf16`` (``round``; this module is what it launches): filters and losses finite, the
   saved adapter loads on CPU, and the exported model's logits on CPU and on the device agree within a
   stated tolerance.
4. GPU name, numeric settings, versions; peak GPU memory per case (``report``: checks, targets, files).

All device placement, autocast and grad scaling go through accelerate (``Accelerator(mixed_precision=...)``,
``accelerator.autocast()``, ``accelerator.backward``, prepared optimizers); timings synchronise the
device properly (CUDA events for training steps, a synchronised wall clock per inference call);
every ratio is measured within this one run.

```py
>>> from hf_unlearn.benchmark.gpu.check import main
>>> main(["--smoke", "--cpu", "--output_dir", "/tmp/gpu-check"])   # 0: every check passed
0
```
"""

from __future__ import annotations

import datetime
import gc
import json
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from ...commands.arguments import parse_arguments
from ...data.tensors import TensorDictDataset
from ..timing import device_info, fresh_accelerator
from .cases import inference_case, release, step_case
from .report import write_report
from .round import launch_round, round_child
from .settings import GpuCheckArguments, Log, build_base, load_images, resolve, versions

__all__ = ["run_check", "parse", "main"]


def new_report(args: GpuCheckArguments) -> dict:
    """The report's skeleton: settings, versions, and empty results of every part."""
    return {
        "schema": 1, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "settings": asdict(args), "versions": versions(), "device": None, "data": None,
        "precisions": {}, "steps": [], "inference": [], "round": None, "parts": {}, "skipped_cases": [],
    }


def run_case(part: str, name: str, precision: str, base, on_device: TensorDictDataset, accelerator, args,
             report: dict, log: Log) -> None:
    """One step or inference case, appended to the report; an error is recorded and the run goes on."""
    t0 = time.perf_counter()
    try:
        if part == "steps":
            case = step_case(name, base, on_device, accelerator, args)
            report["steps"].append(case)
            log(f"steps {name} {precision}: "
                f"FT {case['finetune']['median_ms']:.1f} ms, WF {case['untrain']['median_ms']:.1f} ms, "
                f"ratio {case['ratio']:.3f} ({time.perf_counter() - t0:.1f} s)")
        else:
            case = inference_case(name, base, on_device.pixel_values, accelerator, args)
            report["inference"].append(case)
            last = case["rows"][-1]
            log(f"inference {name} {precision}: batch {last['batch']} base "
                f"{last['base_ms']:.2f} ms, per sample {last['ratios']['row per sample']:.3f}x, "
                f"exported {last['ratios']['exported']:.3f}x ({time.perf_counter() - t0:.1f} s)")
    except Exception as err:  # recorded; the other cases still run
        info = report["parts"][part]
        info["status"] = "error"
        info["error"] = "; ".join(filter(None, [info.get("error"), f"{name}, {precision}: "
                                                f"{type(err).__name__}: {err}"]))
        log(traceback.format_exc())


def run_in_process(args, parts: list, report: dict, out: Path, cpu: bool, deadline: float, log: Log) -> None:
    """The steps and inference cases, precision by precision, model by model, within the time budget
    (keeping ``round_reserve_s`` for the round); the report is rewritten after every case."""
    for part in parts:
        report["parts"][part] = {"status": "ok"}
    pixels, labels, data_info = load_images(args, args.step_images)
    report["data"] = data_info
    log(f"data: {data_info['source']} ({data_info['reason']})")
    bases = {name: build_base(args, name) for name in args.models}
    keep_for_round = args.round_reserve_s if "round" in args.parts else 0.0
    on_device = None
    for precision in args.precisions:
        accelerator = fresh_accelerator(precision, cpu=cpu)
        report["device"] = device_info(accelerator.device)
        if on_device is None:
            on_device = TensorDictDataset(pixels.to(accelerator.device), labels.to(accelerator.device))
        report["precisions"][precision] = {
            "accelerator_mixed_precision": accelerator.mixed_precision,
            "native_amp": bool(accelerator.native_amp), "grad_scaler": accelerator.scaler is not None}
        log(f"precision {precision}: {report['precisions'][precision]}")
        for name in args.models:
            for part in parts:
                if time.perf_counter() > deadline - keep_for_round:
                    report["skipped_cases"].append(f"{part}: {name}, {precision} (time budget)")
                    continue
                run_case(part, name, precision, bases[name], on_device, accelerator, args, report, log)
                release(accelerator, args)
                write_report(report, out)
    del on_device, bases
    gc.collect()


def run_round(args, report: dict, work_dir: Path, cpu: bool, deadline: float, log: Log) -> None:
    """The launched round, given what is left of the budget (the in-process parts kept round_reserve_s)."""
    timeout = max(60.0, deadline - time.perf_counter())
    report["round"] = launch_round(args, work_dir, cpu, timeout, log)
    report["parts"]["round"] = ({"status": "error", "error": report["round"]["error"]}
                                if report["round"].get("error") else {"status": "ok"})
    for e in report["round"].get("models", []):
        if "error" not in e:
            log(f"round {e['model']}: {e['steps']} steps in {e['seconds']:.1f} s, filters finite "
                f"{e['filters_finite']}, loads on CPU {e['loads_on_cpu']}, fp32 vs CPU {e['logits_fp32_rel']:.1e}")


def run_check(args: GpuCheckArguments) -> int:
    """Every part asked for, the report written as it goes; 0 when every check passed, else 1."""
    start = time.perf_counter()
    deadline = start + args.time_budget_s
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").write_text("")
    log = Log(out / "gpu_check.log")
    cpu = args.cpu or not torch.cuda.is_available()
    report = new_report(args)
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="hf_unlearn-gpu-check-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"gpu_check: {'smoke' if args.smoke else 'full size'} on {'CPU' if cpu else torch.cuda.get_device_name(0)}; "
        f"report in {out}")
    try:
        in_process = [p for p in ("steps", "inference") if p in args.parts]
        if in_process:
            try:
                run_in_process(args, in_process, report, out, cpu, deadline, log)
            except Exception as err:
                for part in in_process:
                    report["parts"][part] = {"status": "error", "error": f"{type(err).__name__}: {err}"}
                log(traceback.format_exc())
            write_report(report, out)
        if "round" in args.parts:
            run_round(args, report, work_dir, cpu, deadline, log)
    finally:
        report["wall_s"] = time.perf_counter() - start
        write_report(report, out)
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    log(f"{report['verdict']}; {out / 'gpu_check.md'}")
    return 0 if all(c["passed"] for c in report["checks"]) else 1


def parse(argv=None) -> GpuCheckArguments:
    """The command line as resolved ``GpuCheckArguments`` (in the launched round: the parent's settings)."""
    (args,) = parse_arguments((GpuCheckArguments,), argv, prog="recipes/gpu_check.py",
                              description=__doc__.split("\n")[0])
    if args.child_settings:  # the launched round: every setting comes from the parent, resolved
        return GpuCheckArguments(**json.loads(Path(args.child_settings).read_text()))
    return resolve(args)


def main(argv=None) -> int:
    args = parse(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.child == "round":
        return round_child(args)
    return run_check(args)


if __name__ == "__main__":  # what the round's `accelerate launch --module` runs
    sys.exit(main())
