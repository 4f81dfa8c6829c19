"""The GPU check's verdicts (correctness checks, the issue's targets) and its report files.

```py
>>> from hf_unlearn.benchmark.gpu.report import write_report
>>> write_report(report, Path("runs/gpu_check"))     # fills checks/targets/verdict, writes .json and .md
>>> report["verdict"]
'all checks passed; targets met 10, missed 17, not measured 0'
```
"""

from __future__ import annotations

import json
from pathlib import Path

from ...files import atomic_write_text
from .settings import MODEL_TITLES

__all__ = ["evaluate", "checks_of", "targets_of", "markdown", "write_report"]


def evaluate(report: dict) -> None:
    """Fill report['checks'] (correctness: pass/fail) and report['targets'] (the issue's: met/missed)."""
    report["checks"], report["targets"] = checks_of(report), targets_of(report)


def checks_of(report: dict) -> list[dict]:
    """Correctness checks: finite filters and losses, the adapter with nothing selected equals the base,
    the launched round (precision, reload on CPU, exported logits), every part ran."""
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "passed": bool(ok), "detail": detail})

    for case in report["steps"]:
        wf, ft = case["untrain"], case["finetune"]
        tag = f"{MODEL_TITLES[case['model']]}, {case['precision']}"
        check(f"untraining steps: filters and losses finite ({tag})", wf["filters_finite"] and wf["losses_finite"],
              f"filters finite {wf['filters_finite']}, losses finite {wf['losses_finite']}, "
              f"{wf['steps_skipped_by_grad_scaler']} steps skipped by the grad scaler")
        check(f"untraining steps: filters learn ({tag})", wf["filters_changed"], "filters changed from their start")
        check(f"fine-tuning steps: finite ({tag})", ft["losses_finite"] and ft["params_finite"],
              f"losses finite {ft['losses_finite']}, weights finite {ft['params_finite']}")
    for case in report["inference"]:
        worst = max(r["nothing_selected_vs_base_rel"] for r in case["rows"])
        check(f"adapter with nothing selected = base ({MODEL_TITLES[case['model']]}, {case['precision']})",
              worst <= 1e-4, f"max |diff| / max |logit| = {worst:.2e} (≤ 1e-4)")
    rnd = report.get("round") or {}
    if rnd:
        check("round: launched with --mixed_precision bf16", rnd.get("mixed_precision") == "bf16",
              f"the launched process's accelerator: {rnd.get('mixed_precision')}")
        for entry in rnd.get("models", []):
            t = MODEL_TITLES[entry["model"]]
            if "error" in entry:
                check(f"round: {t}", False, entry["error"])
                continue
            check(f"round: filters and losses finite ({t}, {entry['steps']} steps)",
                  entry["filters_finite"] and entry["losses_finite"],
                  f"filters finite {entry['filters_finite']}, losses finite {entry['losses_finite']}")
            check(f"round: saved adapter loads on CPU ({t})", entry["loads_on_cpu"],
                  f"parameters on {entry['loaded_devices']}, max |loaded - trained| = {entry['loaded_vs_trained_max_abs']}")
            tol = report["settings"]["logit_rtol_fp32"]
            check(f"round: exported logits, device fp32 vs CPU ({t})", entry["logits_fp32_rel"] <= tol,
                  f"max |diff| / max |logit| = {entry['logits_fp32_rel']:.2e} (≤ {tol:g}); argmax agrees on "
                  f"{entry['argmax_agree_fp32']:.0%}")
        if rnd.get("error"):
            check("round: the launched process", False, rnd["error"])
    for part, info in report["parts"].items():
        if info.get("status") == "error":
            check(f"part '{part}' ran", False, info.get("error", ""))
    return checks


def targets_of(report: dict) -> list[dict]:
    """The issue's targets (step cost, latency ratios, no NaN/Inf under bf16/fp16): met, missed or not measured."""
    targets = []
    rnd = report.get("round") or {}

    def target(name, case, value, limit, unit="x"):
        met = None if value is None else value <= limit
        targets.append({"target": name, "case": case, "value": value, "limit": limit, "met": met, "unit": unit})

    steps = {(c["model"], c["precision"]): c for c in report["steps"]}
    for model, limit in (("vit-b16", 1.0), ("resnet-50", 0.6), ("convnext-t", 0.6)):
        c = steps.get((model, "bf16"))
        target(f"WF untraining step ≤ {limit:g}x a fine-tuning step (bf16)", MODEL_TITLES[model],
               c["ratio"] if c else None, limit)
    batches = report["settings"]["inference_batch_sizes"]
    big = 64 if 64 in batches else max(batches)
    for case in report["inference"]:
        row = next((r for r in case["rows"] if r["batch"] == big), None)
        tag = f"{MODEL_TITLES[case['model']]}, {case['precision']}, batch {big}"
        target(f"row per sample ≤ 1.10x base latency at batch {big}", tag,
               row["ratios"]["row per sample"] if row else None, 1.10)
        target(f"exported ≤ 1.02x base latency at batch {big}", tag, row["ratios"]["exported"] if row else None, 1.02)
    finite = [(f"untraining steps, {MODEL_TITLES[c['model']]}, {c['precision']}",
               c["untrain"]["filters_finite"] and c["untrain"]["losses_finite"])
              for c in report["steps"] if c["precision"] in ("bf16", "fp16")]
    finite += [(f"round, {MODEL_TITLES[e['model']]}, {rnd.get('mixed_precision')}",
                e.get("filters_finite", False) and e.get("losses_finite", False)) for e in rnd.get("models", [])]
    for case, ok in finite:
        targets.append({"target": "no NaN/Inf in filters or losses under bf16 or fp16", "case": case,
                        "value": None, "limit": None, "met": ok, "unit": ""})
    if report["settings"]["smoke"]:
        for t in targets:
            t["note"] = "smoke size: not the targets' conditions"
    return targets


def _fmt(v, spec=".2f", none="–"):
    """``v`` formatted with ``spec``; ``none`` when it is None."""
    return none if v is None else format(v, spec)


def _mb(m):
    """Peak MB of a PeakMemory dict (a dash off CUDA)."""
    return _fmt((m or {}).get("peak_mb"), ",.0f")


def markdown(report: dict) -> str:
    """gpu_check.md: device, versions, verdict, targets, checks and the tables of every part."""
    dev = report.get("device") or {}
    s = report["settings"]
    v = report["versions"]
    lines = [
        f"# GPU check ({'SMOKE: tiny models, numbers mean nothing' if s['smoke'] else 'full size'})",
        "",
        f"- device: **{dev.get('name')}** ({dev.get('device')}, {dev.get('total_memory_gb')} GiB, compute capability "
        f"{dev.get('capability')}, CUDA {dev.get('cuda')}, cuDNN {dev.get('cudnn')}); TF32 matmul "
        f"{dev.get('cuda_matmul_allow_tf32')}, TF32 cuDNN {dev.get('cudnn_allow_tf32')}, {dev.get('torch_threads')} CPU threads",
        f"- versions: torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}, accelerate "
        f"{v.get('accelerate')}, huggingface_hub {v.get('huggingface_hub')}, hf_unlearn {v.get('hf_unlearn')} "
        f"(commit {v.get('git_commit')}), Python {v.get('python')}; datasets {v.get('datasets')}",
        f"- data: {(report.get('data') or {}).get('source')} — {(report.get('data') or {}).get('reason')}",
        "- precisions (accelerate): " + "; ".join(
            f"{k}: mixed_precision={p['accelerator_mixed_precision']}, autocast {'on' if p['native_amp'] else 'OFF'}, "
            f"grad scaler {'yes' if p['grad_scaler'] else 'no'}" for k, p in report.get("precisions", {}).items()),
        f"- command: `{report['command']}`; started {report['started_utc']}, took {_fmt(report.get('wall_s'), '.0f')} s",
        f"- result: **{report.get('verdict')}**",
        "",
        "## Targets (issue 14; ratios measured within this run)",
        "",
        "| target | case | measured | met |",
        "|---|---|---|---|",
    ]
    for t in report["targets"]:
        value = "" if t["value"] is None and t["unit"] == "" else _fmt(t["value"], ".3f") + t["unit"]
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['case']} | {value} | {met}{' (' + t['note'] + ')' if t.get('note') else ''} |")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    for c in report["checks"]:
        lines.append(f"| {c['check']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |")
    lines += steps_lines(report) + inference_lines(report) + round_lines(report)
    skipped = [f"{k}: {v.get('status')} {v.get('error', '') or v.get('note', '')}".strip()
               for k, v in report["parts"].items() if v.get("status") != "ok"]
    if skipped or report.get("skipped_cases"):
        lines += ["", "## Not run", ""] + [f"- {x}" for x in skipped + report.get("skipped_cases", [])]
    return "\n".join(lines) + "\n"


def steps_lines(report: dict) -> list[str]:
    """The training-steps table."""
    s = report["settings"]
    lines = [
        "", f"## Training steps (input batch {s['batch_size']}, median of {s['timed_steps']} steps after "
        f"{s['warmup_steps']} warm-up)", "",
        "WF = one step of `hf_unlearn.training.untrain` (B forget rows + B retain rows in one forward, gradients "
        "to the filters only, Adam); FT = plain fine-tuning (all weights, train mode, AdamW). Images/s count "
        "input images. On CUDA a step is the interval between CUDA events recorded at the start of consecutive "
        "steps. Peak memory: `torch.cuda.max_memory_allocated`, reset before each case.", "",
        "| model | precision | FT ms | FT img/s | WF ms | WF img/s | WF / FT | FT peak MB | WF peak MB | grad-scaler skips (WF) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["steps"]:
        ft, wf = c["finetune"], c["untrain"]
        lines.append(f"| {MODEL_TITLES[c['model']]} | {c['precision']} | {ft['median_ms']:.1f} | {ft['images_per_s']:,.0f} | "
                     f"{wf['median_ms']:.1f} | {wf['images_per_s']:,.0f} | **{c['ratio']:.3f}x** | {_mb(ft['memory'])} | "
                     f"{_mb(wf['memory'])} | {wf['steps_skipped_by_grad_scaler']} |")
    return lines


def inference_lines(report: dict) -> list[str]:
    """The inference-latency table."""
    s = report["settings"]
    lines = [
        "", f"## Inference latency (median of {s['inference_repeats']} interleaved rounds after {s['inference_warmup']} "
        "warm-up; device synchronised around every call; ratios to the base model)", "",
        "| model | precision | batch | base ms | nothing selected | one row/batch | row per sample | exported | peak MB (base / per sample) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in report["inference"]:
        for r in case["rows"]:
            q = r["ratios"]
            lines.append(f"| {MODEL_TITLES[r['model']]} | {r['precision']} | {r['batch']} | {r['base_ms']:.2f} | "
                         f"{q['adapter, nothing selected']:.3f}x | {q['one row per batch']:.3f}x | "
                         f"{q['row per sample']:.3f}x | {q['exported']:.3f}x | {_mb(r['memory']['base'])} / "
                         f"{_mb(r['memory']['row per sample'])} |")
    return lines


def round_lines(report: dict) -> list[str]:
    """The launched round's table (none when the round did not run)."""
    s = report["settings"]
    rnd = report.get("round")
    lines = []
    if rnd:
        lines += [
            "", f"## Untraining round under `{rnd.get('command')}`", "",
            f"Accelerator mixed precision in the launched process: **{rnd.get('mixed_precision')}**; "
            f"{s['round_steps']} steps at batch {s['batch_size']} per model; the exported model's logits compared on "
            f"{min(8, s['round_images'])} images "
            f"(tolerance: fp32 {s['logit_rtol_fp32']:g}, autocast {s['logit_rtol_amp']:g}, relative to max |CPU logit|). "
            "Random weights: ConvNeXt's layer scale starts at 1e-6, so its blocks, and their filters, barely act "
            "before training; the round checks numerics, not forgetting.", "",
            "| model | steps | s | loss first → last | filters min / mean | peak MB | loads on CPU | fp32 vs CPU | autocast vs CPU | argmax agree (fp32 / autocast) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in rnd.get("models", []):
            if "error" in e:
                lines.append(f"| {MODEL_TITLES[e['model']]} | error: {e['error']} |||||||||")
                continue
            lines.append(
                f"| {MODEL_TITLES[e['model']]} | {e['steps']} | {e['seconds']:.1f} | {_fmt(e['first_loss'], '.3f')} → "
                f"{_fmt(e['last_loss'], '.3f')} | {e['filters_min']:.3f} / {e['filters_mean']:.3f} | {_mb(e['memory'])} | "
                f"{'yes' if e['loads_on_cpu'] else 'NO'} | {e['logits_fp32_rel']:.1e} | {e['logits_amp_rel']:.1e} | "
                f"{e['argmax_agree_fp32']:.0%} / {e['argmax_agree_amp']:.0%} |")
    return lines


def write_report(report: dict, out: Path) -> None:
    """Judge the report (checks, targets, verdict) and write gpu_check.json and gpu_check.md into ``out``."""
    evaluate(report)
    failed = [c for c in report["checks"] if not c["passed"]]
    report["verdict"] = (f"{len(failed)} check(s) FAILED" if failed else "all checks passed") + (
        f"; targets met {sum(t['met'] is True for t in report['targets'])}, missed "
        f"{sum(t['met'] is False for t in report['targets'])}, not measured "
        f"{sum(t['met'] is None for t in report['targets'])}")
    # atomic: a reader (or a run stopped at its limit) never sees half a report
    atomic_write_text(out / "gpu_check.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "gpu_check.md", markdown(report))
