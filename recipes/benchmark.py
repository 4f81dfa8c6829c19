"""Benchmark: the weight-filter adapter (WF) against every peer unlearning method, same data,
same model, same machine.

Full run (Fashion-MNIST, ``resnet-tiny`` preset; reuses what exists, trains what is missing):

    OMP_NUM_THREADS=1 accelerate launch --num_processes 1 recipes/benchmark.py \\
        --base_dir runs/fm-base-resnet --retrain_root runs/fm-retrain-resnet \\
        --output_dir runs/benchmark-resnet --num_threads 1 --tune

(add ``--adapter runs/<wf folder>`` to reuse a trained adapter). Expected cost on the 2-core CPU box
with one thread: about 23 s per evaluation (~70 of them: base, retrain, WF rows and the fast peers
on all 10 classes, the other peers on 3), 13-53 s per peer run and class, 4 trials per tunable
peer, ~100 s per missing retrain model: about an hour. ``--eval_max_train_samples`` and
``--max_mia_samples`` shorten the evaluations (and say so in the JSON).

Without ``--base_dir`` a base model is trained (``--preset``, ``--base_epochs``) into
``<output_dir>/base``; without ``--adapter`` the adapter is untrained with ``--wf_config`` into
``<output_dir>/wf``; retrain models missing under ``--retrain_root`` (default
``<output_dir>/retrain``) are trained there. Smoke test (digits, micro preset, one class, tiny
budgets; seconds):

    python recipes/benchmark.py --smoke --output_dir /tmp/bench-smoke

What runs on which classes (N = number of classes):

- WF: one untraining round serves every class; every row is evaluated (all N classes);
- retrain and the fast gradient-free peers (``svd_projection``, ``ssd``, ``logit_mask``): all N
  classes (``--retrain_classes``, ``--all_class_methods``);
- the other peers: ``--classes`` (default: 3 classes drawn with ``--seed``).

For every (method, class): ``evaluate_unlearning`` on the test split (FA, RA, test accuracy) and the
training split (MIA-efficacy, ZRF, linear probe, 5-shot probe), see ``hf_unlearn.evaluation.definitions.DEFINITIONS``.
Costs:

- time to forget one class: the method's wall time for one class (WF: its single round, which
  serves every class);
- time to serve all N classes: WF: its single round; a peer run on all N classes: the measured sum;
  otherwise N x the mean per-class time, marked *extrapolated*;
- bytes stored to serve every class: a peer ships one full model per class, N x its parameter
  bytes; WF: the backbone plus the filters of all classes;
- per-request latency: the median forward time of one batch of ``--latency_batch`` (64) images,
  interleaved rounds over every model (WF: adapter with one row per request, a row per sample,
  and the exported/merged model).

``--tune``: each tunable peer gets the same budget, ``--tune_trials`` configurations (its defaults
plus random draws from its ``search_space``), each run on ``--tune_class`` with the training split
minus a stratified validation split (``--val_fraction``), scored on that validation split by
``RA - FA`` (both %); the best configuration is then used for every class on the full training
split. All trials are recorded in the JSON. WF's hyperparameters come from its own search
(``recipes/README.md``).

Outputs in ``--output_dir``: ``benchmark.json`` (everything), ``benchmark.md`` (tables),
``benchmark.png`` (forget vs retain accuracy, marker area = time to serve all classes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

try:
    import hf_unlearn  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = Path(__file__).resolve().parents[1]
FAST_METHODS = ("svd_projection", "ssd", "logit_mask")
PEERS = ("finetune", "neggrad", "random_labels", "salun", "scrub", "ssd", "boundary_shrink", "svd_projection",
         "logit_mask")
ALL_METHODS = ("wf", "retrain") + PEERS

# Smoke mode: tiny budgets so that the whole pipeline runs in seconds on digits.
SMOKE_HPARAMS = {
    "finetune": {"epochs": 1.0},
    "neggrad": {"epochs": 2.0},
    "random_labels": {"epochs": 2.0},
    "salun": {"epochs": 2.0},
    "scrub": {"lr": 0.005},  # 3 forget batches per epoch on digits: see scrub.py
    "boundary_shrink": {"epochs": 2.0},
    "svd_projection": {"num_samples": 300},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--smoke", action="store_true",
                   help="digits + resnet-micro, class 0 only, tiny budgets: the pipeline in seconds (add --tune "
                        "--tune_trials 2 to exercise the tuning too)")
    m = p.add_argument_group("models")
    m.add_argument("--base_dir", default=None, help="base model folder (train_base output); trained if absent")
    m.add_argument("--preset", default="resnet-tiny", help="preset for a base trained here")
    m.add_argument("--base_epochs", type=int, default=8)
    m.add_argument("--adapter", default=None, help="trained WF adapter folder; untrained here if absent")
    m.add_argument("--wf_config", default=str(REPO / "recipes" / "configs" / "fashion_mnist_resnet.yaml"),
                   help="untraining config for an adapter trained here")
    m.add_argument("--wf_epochs", type=float, default=None, help="override the config's epochs")
    m.add_argument("--retrain_root", default=None,
                   help="folder of class-<c>/ retrain models (recipes/retrain.py); missing ones are trained there "
                        "(default <output_dir>/retrain)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="fashion_mnist")
    d.add_argument("--max_train_samples", type=int, default=None, help="seeded subset of the train split")
    d.add_argument("--max_test_samples", type=int, default=None, help="seeded subset of the test split")
    d.add_argument("--batch_size", type=int, default=128, help="batch size of the peers' retain/forget loaders")
    w = p.add_argument_group("what to run")
    w.add_argument("--methods", nargs="+", default=list(ALL_METHODS), help=f"subset of {list(ALL_METHODS)}")
    w.add_argument("--classes", nargs="+", type=int, default=None,
                   help="classes for the peers (default: 3 drawn with --seed)")
    w.add_argument("--num_peer_classes", type=int, default=3)
    w.add_argument("--all_class_methods", nargs="*", default=list(FAST_METHODS),
                   help="peers run on every class (fast, gradient-free)")
    w.add_argument("--retrain_classes", nargs="+", default=["all"], help="'all' or class ids")
    w.add_argument("--hparams", default=None,
                   help='JSON {"method": {"name": value}} overriding defaults (and tuning results)')
    t = p.add_argument_group("tuning")
    t.add_argument("--tune", action="store_true", help="equal-budget search per peer on a validation split")
    t.add_argument("--tune_trials", type=int, default=4, help="configurations per peer (defaults included)")
    t.add_argument("--tune_class", type=int, default=None, help="class tuned on (default: the first peer class)")
    t.add_argument("--val_fraction", type=float, default=0.1)
    e = p.add_argument_group("evaluation and run")
    e.add_argument("--eval_max_train_samples", type=int, default=None,
                   help="seeded subset of the train split for MIA/ZRF/probe (default: all)")
    e.add_argument("--max_mia_samples", type=int, default=None)
    e.add_argument("--max_probe_samples", type=int, default=10_000)
    e.add_argument("--eval_batch_size", type=int, default=256)
    e.add_argument("--few_shot_shots", type=int, default=5, help="few-shot probe: labelled samples per class")
    e.add_argument("--relearn_shots", type=int, nargs="*", default=[],
                   help="k-shot relearning budgets (samples per class), e.g. 1 5 25; none = skip")
    e.add_argument("--relearn_steps", type=int, default=30, help="k-shot relearning: optimiser steps")
    e.add_argument("--relearn_modes", nargs="+", default=["head", "full"], choices=["head", "full"])
    e.add_argument("--latency_batch", type=int, default=64)
    e.add_argument("--latency_repeats", type=int, default=20)
    e.add_argument("--save_models", action="store_true", help="save every peer model under <output_dir>/models/")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--num_threads", type=int, default=None, help="torch.set_num_threads (1 on a shared CPU box)")
    e.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    unknown = sorted(set(args.methods) - set(ALL_METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {list(ALL_METHODS)}")
    if args.smoke:
        args.dataset = "digits"
        args.preset = "resnet-micro"
        args.base_epochs = 15
        args.wf_epochs = args.wf_epochs or 3.0
        args.classes = args.classes or [0]
        args.retrain_classes = [str(c) for c in args.classes]
        args.all_class_methods = []
        args.latency_repeats = 3
        args.batch_size = 64
        args.max_probe_samples = None
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------


def _versions() -> dict:
    from hf_unlearn.run_utils import package_versions

    return package_versions()


def train_or_load_base(args, out: Path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if not args.base_dir and args.adapter:  # the adapter's own base model, never a fresh one
        from hf_unlearn.adapter import read_adapter_config

        named = read_adapter_config(args.adapter).get("base_model_name_or_path")
        if not named or not Path(named).is_dir():
            raise SystemExit(f"--adapter {args.adapter} names the base model {named!r}, which is not a local folder: "
                             "pass --base_dir.")
        args.base_dir = named
    base_dir = Path(args.base_dir) if args.base_dir else out / "base"
    metrics_path = base_dir / "metrics.json"
    if not (base_dir / "config.json").is_file():
        from hf_unlearn.training.base import train_base

        log(f"[base] training {args.preset} on {args.dataset} for {args.base_epochs} epochs -> {base_dir}")
        opts = {"preset": args.preset, "dataset": args.dataset, "epochs": args.base_epochs,
                "output_dir": str(base_dir), "seed": args.seed, "no_progress": True}
        if args.num_threads:
            opts["num_threads"] = args.num_threads
        train_base(opts)
    model = AutoModelForImageClassification.from_pretrained(str(base_dir), use_safetensors=True).eval()
    processor = AutoImageProcessor.from_pretrained(str(base_dir))
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return base_dir, model, processor, metrics


def train_or_load_wf(args, out: Path, base_dir: Path):
    from hf_unlearn import UnlearnAdapter

    if args.adapter:
        folder = Path(args.adapter)
        adapter = UnlearnAdapter.from_pretrained(str(folder), base_model=str(base_dir))
        metrics_path = folder / "untraining_metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        seconds = metrics.get("untraining_time_s")
        log(f"[wf] loaded {folder} (untraining time {seconds} s from its metrics)")
        return adapter.eval(), seconds, {"adapter": str(folder), "trained_here": False, "metrics": metrics}
    from hf_unlearn.training.job import parse_args as untrain_args
    from hf_unlearn.training.job import run as untrain_run

    folder = out / "wf"
    argv = ["--config", args.wf_config, "--base_model", str(base_dir), "--output_dir", str(folder),
            "--dataset", args.dataset, "--eval_split", "", "--eval_pairs", "0", "--no_progress"]
    if args.wf_epochs:
        argv += ["--epochs", str(args.wf_epochs)]
    if args.max_train_samples:
        argv += ["--max_train_samples", str(args.max_train_samples)]
    if args.num_threads:
        argv += ["--num_threads", str(args.num_threads)]
    log(f"[wf] untraining every class in one round ({args.wf_config}) -> {folder}")
    metrics = untrain_run(untrain_args(argv))
    adapter = UnlearnAdapter.from_pretrained(str(folder), base_model=str(base_dir))
    return adapter.eval(), metrics["untraining_time_s"], {"adapter": str(folder), "trained_here": True,
                                                          "config": args.wf_config, "argv": argv}


def stratified_split(labels, fraction: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        val[rng.choice(idx, size=k, replace=False)] = True
    return val


def val_accuracy(model, x, y, classes, device, batch_size=512):
    import torch

    model.eval()
    with torch.no_grad():
        preds = torch.cat([model(pixel_values=x[i:i + batch_size].to(device)).logits.argmax(-1).cpu()
                           for i in range(0, len(x), batch_size)])
    forget = torch.isin(y, torch.as_tensor(classes))
    fa = 100.0 * (preds[forget] == y[forget]).float().mean().item()
    ra = 100.0 * (preds[~forget] == y[~forget]).float().mean().item()
    return fa, ra


def candidate_configs(space: dict, trials: int, seed: int) -> list[dict]:
    """The defaults ({}) plus ``trials - 1`` distinct random configurations from the grid."""
    import itertools
    import random

    grid = [dict(zip(space, values)) for values in itertools.product(*space.values())] if space else []
    rng = random.Random(seed)
    rng.shuffle(grid)
    return [{}] + grid[: max(0, trials - 1)]


def tune_peer(name, base, x_fit, y_fit, x_val, y_val, cls, args, device, fixed: dict, pinned=()) -> dict:
    """Equal-budget search: ``args.tune_trials`` configurations (defaults first) of the peer's
    ``search_space`` minus the ``pinned`` names (fixed by the user), each scored on the validation split."""
    from hf_unlearn.baselines import get_baseline, tensor_loaders

    method = get_baseline(name)
    retain_loader, forget_loader = tensor_loaders(x_fit, y_fit, [cls], batch_size=args.batch_size, seed=args.seed)
    space = {k: v for k, v in method.search_space.items() if k not in pinned}
    trials = []
    for config in candidate_configs(space, args.tune_trials, args.seed):
        hp = {**fixed, **config}
        r = method.unlearn(base, [cls], retain_loader, forget_loader, hparams=hp, seed=args.seed, device=device)
        fa, ra = val_accuracy(r.model, x_val, y_val, [cls], device)
        trials.append({"hparams": config, "val_forget_acc": fa, "val_retain_acc": ra, "score": ra - fa,
                       "seconds": r.seconds})
        log(f"[tune] {name} {config or '(defaults)'}: val FA {fa:.2f}% RA {ra:.2f}% ({r.seconds:.1f} s)")
    best = max(trials, key=lambda t: (t["score"], -t["seconds"]))
    return {"class": cls, "trials": trials, "best": best["hparams"], "criterion": "val RA - val FA (%)",
            "budget_trials": len(trials), "search_space": space, "fixed": fixed}


def representation_kwargs(args, retrain_models: dict, classes) -> dict:
    """The evaluation options of the representation tests: shots, relearning, and the retrain references
    of ``classes`` (for CKA and the relearning oracle) when they are loaded."""
    refs = {c: retrain_models[c] for c in classes if c in retrain_models}
    return {"few_shot_shots": args.few_shot_shots, "relearn_shots": args.relearn_shots,
            "relearn_steps": args.relearn_steps, "relearn_modes": args.relearn_modes,
            **({"retrain_dirs": refs} if refs else {})}


def evaluate(model, train_eval, test, processor, forget, args, retrain_models=None, **kwargs) -> dict:
    from hf_unlearn.evaluation import evaluate_unlearning

    return evaluate_unlearning(model, train_eval, test, forget=forget, image_processor=processor, seed=args.seed,
                               progress=False, batch_size=args.eval_batch_size,
                               max_mia_samples=args.max_mia_samples, max_probe_samples=args.max_probe_samples,
                               **representation_kwargs(args, retrain_models or {}, forget), **kwargs)


def representation_values(report: dict, pick) -> dict:
    """CKA to the retrain and k-shot relearning results of the unlearned model (``pick`` selects the class)."""
    out = {}
    if report.get("cka_to_retrain", {}).get("unlearned") is not None:
        out["cka_to_retrain"] = pick(report["cka_to_retrain"]["unlearned"])
    for setting, by_model in (report.get("relearn") or {}).items():
        out[f"relearn_{setting}"] = pick(by_model["unlearned"])
    return out


def row_from_set_report(report: dict) -> dict:
    acc = report["accuracy"]
    n_f, n_r = acc["n_forget"], acc["n_retain"]
    return {
        "forget_acc": acc["forget_acc"], "retain_acc": acc["retain_acc"],
        "test_acc": (acc["forget_acc"] * n_f + acc["retain_acc"] * n_r) / max(n_f + n_r, 1),
        "mia_efficacy": report["mia_efficacy"]["unlearned"], "zrf": report["zrf"]["unlearned"],
        "probe": report["probe"]["unlearned"], "probe_auc": report["probe_auc"]["unlearned"],
        "few_shot_probe": report["few_shot_probe"]["unlearned"],
        **representation_values(report, lambda v: v),
    }


def rows_from_adapter_report(report: dict, classes, counts) -> dict:
    """Per-class rows from an adapter's rows-mode report; ``counts`` = test samples per class."""
    acc = report["accuracy"]
    matrix = acc["matrix"]
    out = {}
    total = float(sum(counts))
    for c in classes:
        row = matrix[c]
        fa = float(acc["forget_acc_per_class"][c])
        ra = float(acc["retain_acc_per_class"][c])
        test_acc = sum(float(row[y]) * counts[y] for y in range(len(counts)) if counts[y]) / max(total, 1.0)
        out[c] = {"forget_acc": fa, "retain_acc": ra, "test_acc": test_acc,
                  "mia_efficacy": report["mia_efficacy"]["unlearned"][c], "zrf": report["zrf"]["unlearned"][c],
                  "probe": report["probe"]["unlearned"][c], "probe_auc": report["probe_auc"]["unlearned"][c],
                  "few_shot_probe": report["few_shot_probe"]["unlearned"][c],
                  **representation_values(report, lambda v, c=c: v[c])}
    return out


def time_forward(variants: dict, pixels, repeats: int, warmup: int = 2) -> dict:
    import torch

    times = {k: [] for k in variants}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in variants.values():
                fn(pixels)
        for _ in range(repeats):
            for k, fn in variants.items():  # interleaved: machine drift hits every variant alike
                start = time.perf_counter()
                fn(pixels)
                times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _mean(values):
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def summarize(per_class: dict, base_rows: dict, classes) -> dict:
    classes = [c for c in classes if c in per_class]
    if not classes:
        return {}
    keys = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy", "zrf", "probe", "probe_auc", "few_shot_probe")
    extra = sorted({k for c in classes for k in per_class[c] if k == "cka_to_retrain" or k.startswith("relearn_")})
    out = {k: _mean(per_class[c].get(k) for c in classes) for k in keys + tuple(extra)}
    drops = [base_rows[c]["retain_acc"] - per_class[c]["retain_acc"] for c in classes if c in base_rows]
    out["retain_drop"] = _mean(drops)
    out["classes"] = list(classes)
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def _fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _bytes(n):
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _seconds(s, extrapolated=False):
    if s is None:
        return "–"
    text = f"{s:.1f}" if s >= 1 else f"{s:.3f}"
    return text + (" (extrap.)" if extrapolated else "")


def markdown(result: dict) -> str:
    n = result["settings"]["num_classes"]
    names = result["settings"]["class_names"]
    lines = [f"# Unlearning benchmark: {result['settings']['dataset']}, {result['base']['model_type']} "
             f"({result['base']['num_parameters']:,} parameters, base test accuracy "
             f"{_fmt(result['base'].get('test_accuracy_pct'))}%)", ""]
    s = result["settings"]
    lines.append(f"Machine: {s['machine']}; torch threads {s['torch_threads']}; device {s['device']}; seed {s['seed']}. "
                 f"Peer classes: {', '.join(f'{c} ({names[c]})' for c in s['peer_classes'])}.")
    lines.append("")
    shots = s.get("few_shot_shots", 5)
    extra = sorted({k for m in result["methods"].values() for key in ("summary_peer_classes", "summary_all")
                    for k in (m.get(key) or {}) if k == "cka_to_retrain" or k.startswith("relearn_")})
    extra_titles = [("CKA to retrain" if k == "cka_to_retrain" else
                     "relearn " + k[len("relearn_"):].replace("-", " ").replace("shot", "-shot") + " %") for k in extra]
    header = ["method", "classes", "FA %", "RA %", "RA drop pt", "test acc %", "MIA-eff. %", "ZRF",
              "probe bal. acc %", f"{shots}-shot probe %"] + extra_titles + [
              "s to forget 1 class", f"s to serve all {n}", f"storage for all {n}",
              f"ms / request ({s['latency_batch']})"]

    def table(key, title):
        lines.extend([f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        for name, m in result["methods"].items():
            summ = m.get(key) or {}
            if not summ:
                continue
            cost = m["cost"]
            lines.append("| " + " | ".join([
                name, str(len(summ["classes"])), _fmt(summ["forget_acc"]), _fmt(summ["retain_acc"]),
                _fmt(summ.get("retain_drop")), _fmt(summ["test_acc"]), _fmt(summ["mia_efficacy"]),
                _fmt(summ["zrf"], 3), _fmt(summ["probe"]), _fmt(summ.get("few_shot_probe")),
                *[_fmt(summ.get(k), 3 if k == "cka_to_retrain" else 2) for k in extra],
                _seconds(cost.get("seconds_one_class")),
                _seconds(cost.get("seconds_all_classes"), cost.get("all_classes_extrapolated", False)),
                _bytes(cost.get("storage_bytes_all_classes")), _fmt(cost.get("latency_ms")),
            ]) + " |")
        lines.append("")

    table("summary_peer_classes", f"All methods on the same classes ({', '.join(map(str, s['peer_classes']))})")
    table("summary_all", "Every class each method was run on")
    lines += ["## Notes", ""]
    lines += [f"- {k}: {v}" for k, v in result["definitions"].items()]
    for name, m in result["methods"].items():
        if m.get("note"):
            lines.append(f"- {name}: {m['note']}")
    if result.get("tuning"):
        lines += ["", "## Tuning (equal budget per peer)", "",
                  "| method | class | trials | best hparams | val FA % | val RA % |", "|---|---|---|---|---|---|"]
        for name, t in result["tuning"].items():
            best = max(t["trials"], key=lambda r: (r["score"], -r["seconds"]))
            lines.append(f"| {name} | {t['class']} | {t['budget_trials']} | `{json.dumps(t['best'])}` | "
                         f"{_fmt(best['val_forget_acc'])} | {_fmt(best['val_retain_acc'])} |")
    lines += ["", "## Hyperparameters used", ""]
    for name, m in result["methods"].items():
        lines.append(f"- {name}: `{json.dumps(m.get('hparams'), default=str)}`")
    return "\n".join(lines) + "\n"


def scatter(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = []
    for name, m in result["methods"].items():
        summ = m.get("summary_peer_classes") or m.get("summary_all") or {}
        if summ.get("forget_acc") is None or summ.get("retain_acc") is None:
            continue
        cost = m["cost"].get("seconds_all_classes") or 0.0
        points.append((name, summ["forget_acc"], summ["retain_acc"], cost))
    if points:
        costs = [p[3] for p in points if p[3] > 0]
        lo = min(costs) if costs else 1.0
        for name, fa, ra, cost in points:
            size = 40 + 120 * math.log10(1 + (cost / lo if lo > 0 else 0.0))
            color = "#d62728" if name == "wf" else ("#1f77b4" if name == "retrain" else
                                                    "#7f7f7f" if name in ("base", "logit_mask") else "#2ca02c")
            ax.scatter([fa], [ra], s=size, color=color, alpha=0.6, edgecolors="black", linewidths=0.5)
            ax.annotate(f"{name} ({_seconds(cost)} s)", (fa, ra), textcoords="offset points", xytext=(6, 4),
                        fontsize=8)
    ax.set_xlabel("forget accuracy % (lower = more forgotten)")
    ax.set_ylabel("retain accuracy %")
    ax.set_title(f"{result['settings']['dataset']}: mean over the peer classes; marker area ~ log time to serve "
                 f"all {result['settings']['num_classes']} classes", fontsize=9)
    ax.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    os.replace(tmp, path)


def tradeoff(result: dict, path: Path) -> None:
    """Few-shot probe (x) vs retain drop (y) over the peer classes, one point per method (issue 12)."""
    from hf_unlearn.evaluation.plots import plot_probe_tradeoff

    points = {}
    for name, m in result["methods"].items():
        summ = m.get("summary_peer_classes") or {}
        x = summ.get("few_shot_probe")
        y = 0.0 if name == "base" else summ.get("retain_drop")
        if x is not None and y is not None:
            points[name] = (x, y)
    if points:
        plot_probe_tradeoff(points, path, shots=result["settings"].get("few_shot_shots", 5),
                            title=f"{result['settings']['dataset']}: mean over the peer classes")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from hf_unlearn.baselines import BASELINES, get_baseline, param_bytes, tensor_loaders
    from hf_unlearn.data.loading import load_image_dataset, subsample, to_tensor_dataset
    from hf_unlearn.evaluation.definitions import DEFINITIONS
    from hf_unlearn.training.retrain import RETRAIN_INFO, retrain_dirs_from_root, retrain_folder_name

    try:
        from accelerate import PartialState

        if PartialState().num_processes > 1:
            raise SystemExit("recipes/benchmark.py times methods one by one: run it in ONE process "
                             "(accelerate launch --num_processes 1, or python).")
    except ImportError:
        pass
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.hparams) if args.hparams else {}

    # ---- base model and data
    base_dir, base, processor, base_metrics = train_or_load_base(args, out)
    base.to(device)
    num_channels = int(base.config.num_channels)
    train = subsample(load_image_dataset(args.dataset, split="train"), args.max_train_samples, seed=args.seed)
    test = subsample(load_image_dataset(args.dataset, split="test"), args.max_test_samples, seed=args.seed)
    train_eval = subsample(train, args.eval_max_train_samples, seed=args.seed)
    n = int(base.config.num_labels)
    names = [base.config.id2label[i] for i in range(n)]
    tensors = to_tensor_dataset(train, processor, num_channels=num_channels, progress=False)
    x_train, y_train = tensors.tensors
    if args.classes:
        peer_classes = sorted(set(args.classes))
    else:
        peer_classes = sorted(np.random.default_rng(args.seed).choice(n, size=min(args.num_peer_classes, n),
                                                                      replace=False).tolist())
    all_classes = list(range(n))
    retrain_classes = all_classes if args.retrain_classes == ["all"] else sorted({int(c) for c in args.retrain_classes})
    methods = [m for m in ALL_METHODS if m in args.methods]
    classes_of = {}
    for m in methods:
        if m == "wf":
            classes_of[m] = all_classes if not args.smoke else peer_classes
        elif m == "retrain":
            classes_of[m] = retrain_classes
        elif m in args.all_class_methods:
            classes_of[m] = all_classes
        else:
            classes_of[m] = peer_classes
    eval_classes = sorted({c for cs in classes_of.values() for c in cs} | set(peer_classes))
    log(f"[setup] {args.dataset}: {len(y_train)} train / {test.num_rows} test samples, {n} classes; "
        f"peer classes {peer_classes}; device {device}, {torch.get_num_threads()} thread(s)")

    result: dict[str, Any] = {
        "settings": {**{k: v for k, v in vars(args).items()}, "num_classes": n, "class_names": names,
                     "peer_classes": peer_classes, "classes_per_method": classes_of, "device": str(device),
                     "torch_threads": torch.get_num_threads(),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "versions": _versions()},
        "base": {"dir": str(base_dir), "model_type": base.config.model_type,
                 "num_parameters": sum(p.numel() for p in base.parameters()), "param_bytes": param_bytes(base),
                 "test_accuracy_pct": (100.0 * base_metrics["test_accuracy"]) if "test_accuracy" in base_metrics
                 else None, "train_time_s": base_metrics.get("train_time_s")},
        "methods": {}, "tuning": {},
        "definitions": {
            **DEFINITIONS,
            "RA drop": "base model's RA on the same test samples minus the method's RA (pt); negative = better "
                       "than base (removing a class removes its confusions).",
            "time to serve all N": "WF: its one untraining round; a peer run on every class: the measured sum; "
                                   "otherwise N x mean per-class time (extrapolated).",
            "storage for all N": "peers: N full models (N x parameter bytes); WF: backbone + filters of every "
                                 "class; base: one model.",
            "latency": "median wall time of one forward of a batch (interleaved rounds over every model).",
        },
    }

    # ---- tuning on a validation split carved from train
    tuned: dict[str, dict] = {}
    if args.tune:
        val = torch.from_numpy(stratified_split(y_train.numpy(), args.val_fraction, args.seed))
        x_fit, y_fit, x_val, y_val = x_train[~val], y_train[~val], x_train[val], y_train[val]
        tune_class = args.tune_class if args.tune_class is not None else peer_classes[0]
        for name in methods:
            if name in ("wf", "retrain") or not BASELINES[name].search_space:
                continue
            fixed = {**(SMOKE_HPARAMS.get(name, {}) if args.smoke else {}), **overrides.get(name, {})}
            rec = tune_peer(name, base, x_fit, y_fit, x_val, y_val, tune_class, args, device, fixed=fixed,
                            pinned=set(overrides.get(name, {})))
            rec["val_fraction"] = args.val_fraction
            result["tuning"][name] = rec
            tuned[name] = rec["best"]
        result["tuning_note"] = ("each peer: the same number of configurations, scored on a stratified validation "
                                 "split carved from train that the unlearning run never sees; WF's hyperparameters "
                                 "come from its own search recorded in recipes/README.md.")

    latency_models: dict[str, Any] = {"base": base}

    # ---- retrain references (models on disk, reused when present)
    retrain_root = Path(args.retrain_root) if args.retrain_root else out / "retrain"
    retrain_models: dict[int, Any] = {}
    if "retrain" in methods:
        found = retrain_dirs_from_root(retrain_root) if retrain_root.is_dir() else {}
        per_class, seconds, reused = {}, {}, {}
        method = get_baseline("retrain")
        for c in classes_of["retrain"]:
            folder = retrain_root / retrain_folder_name(c)
            if c in found and (Path(found[c]) / RETRAIN_INFO).is_file():
                from transformers import AutoModelForImageClassification

                info = json.loads((Path(found[c]) / RETRAIN_INFO).read_text())
                model = AutoModelForImageClassification.from_pretrained(found[c], use_safetensors=True).eval()
                seconds[c] = info.get("wall_time_s")
                reused[c] = True
            else:
                hp = {"base_dir": str(base_dir), "output_dir": str(folder),
                      "overrides": {"no_progress": True, **({"num_threads": args.num_threads} if args.num_threads
                                                              else {})}}
                r = method.unlearn(base, [c], hparams=hp, seed=args.seed, device=device)
                model, seconds[c], reused[c] = r.model, r.seconds, False
            model.to(device).eval()
            retrain_models[c] = model
            per_class[c] = {**row_from_set_report(evaluate(model, train_eval, test, processor, [c], args)),
                            "seconds": seconds[c], "reused": reused[c]}
            log(f"[retrain] class {c}: FA {per_class[c]['forget_acc']:.2f}% RA {per_class[c]['retain_acc']:.2f}% "
                f"({'reused' if reused[c] else 'trained'}, {seconds[c]} s)")
        latency_models["retrain"] = next(iter(retrain_models.values()))
        result["methods"]["retrain"] = {"per_class": per_class, "hparams": {"recipe": str(base_dir)},
                                        "root": str(retrain_root), "_seconds": seconds}

    # ---- base reference rows (FA/RA/MIA/ZRF/probes of the unmodified model, per class; after the retrain
    # references, so that CKA and relearning read as gaps to them)
    base_rows = {}
    for c in eval_classes:
        base_rows[c] = row_from_set_report(evaluate(base, train_eval, test, processor, [c], args, retrain_models))
    result["methods"]["base"] = {"per_class": base_rows, "hparams": None,
                                 "summary_all": summarize(base_rows, base_rows, eval_classes),
                                 "summary_peer_classes": summarize(base_rows, base_rows, peer_classes),
                                 "cost": {"seconds_one_class": None, "seconds_all_classes": None,
                                          "storage_bytes_all_classes": param_bytes(base)},
                                 "note": "the unmodified model, for reference (nothing forgotten)."}
    log(f"[base] test accuracy {result['base']['test_accuracy_pct']}%")
    result["methods"] = {"base": result["methods"].pop("base"), **result["methods"]}  # base first in the tables

    # ---- WF: one round for every class
    adapter = None
    if "wf" in methods:
        adapter, wf_seconds, wf_info = train_or_load_wf(args, out, base_dir)
        adapter.to(device)
        from hf_unlearn.evaluation import evaluate_unlearning

        report = evaluate_unlearning(adapter, train_eval, test, rows=classes_of["wf"], image_processor=processor,
                                     seed=args.seed, progress=False, batch_size=args.eval_batch_size,
                                     max_mia_samples=args.max_mia_samples, max_probe_samples=args.max_probe_samples,
                                     **representation_kwargs(args, retrain_models, classes_of["wf"]))
        test_counts = np.bincount(np.asarray(test.dataset[test.label_column]), minlength=n).tolist()
        per_class = rows_from_adapter_report(report, classes_of["wf"], test_counts)
        filter_bytes = sum(p.numel() * p.element_size() for name, p in adapter.model.named_parameters()
                           if "weight_filter_theta" in name)
        result["methods"]["wf"] = {
            "per_class": per_class, "hparams": wf_info, "_seconds": {"round": wf_seconds},
            "filter_bytes": int(filter_bytes),
            "note": "one untraining round serves every class; evaluated per row (row c = class c forgotten), "
                    "equal to the exported (merged) model of that class.",
        }
        log(f"[wf] mean FA {_fmt(_mean(r['forget_acc'] for r in per_class.values()))}% "
            f"RA {_fmt(_mean(r['retain_acc'] for r in per_class.values()))}% (round {wf_seconds} s)")

    # ---- peers
    for name in methods:
        if name in ("wf", "retrain"):
            continue
        method = get_baseline(name)
        hp = {**(SMOKE_HPARAMS.get(name, {}) if args.smoke else {}), **tuned.get(name, {}),
              **overrides.get(name, {})}
        per_class, seconds, infos = {}, {}, {}
        for c in classes_of[name]:
            retain_loader, forget_loader = tensor_loaders(x_train, y_train, [c], batch_size=args.batch_size,
                                                          seed=args.seed)
            r = method.unlearn(base, [c], retain_loader, forget_loader, hparams=hp, seed=args.seed, device=device)
            seconds[c] = r.seconds
            infos[c] = json.loads(json.dumps(r.info, default=str))
            row = row_from_set_report(evaluate(r.model, train_eval, test, processor, [c], args, retrain_models))
            per_class[c] = {**row, "seconds": r.seconds}
            if args.save_models:
                r.model.save_pretrained(str(out / "models" / name / retrain_folder_name(c)))
            if name not in latency_models:
                latency_models[name] = r.model
            log(f"[{name}] class {c}: FA {row['forget_acc']:.2f}% RA {row['retain_acc']:.2f}% "
                f"MIA {_fmt(row['mia_efficacy'])} probe {_fmt(row['probe'])} 5-shot {_fmt(row['few_shot_probe'])} "
                f"({r.seconds:.2f} s)")
        result["methods"][name] = {"per_class": per_class, "hparams": r.hparams, "info": infos,
                                   "hparams_source": (sys.modules[type(method).__module__].__doc__ or "")
                                   .strip().splitlines()[0], "_seconds": seconds,
                                   "tuned": name in tuned}

    # ---- latency (interleaved over every model)
    pixels = torch.randn(args.latency_batch, num_channels, *processor_size(processor), device=device)
    variants = {k: (lambda m: (lambda x: m(pixel_values=x)))(m.eval()) for k, m in latency_models.items()}
    if adapter is not None:
        c0 = peer_classes[0]
        per_sample = torch.arange(args.latency_batch, device=device) % n
        exported = adapter.export(forget=c0).to(device).eval()
        variants["wf (adapter, one row per request)"] = lambda x: adapter(pixel_values=x, forget=c0)
        variants["wf (adapter, a row per sample)"] = lambda x: adapter(pixel_values=x, forget=per_sample)
        variants["wf (exported)"] = lambda x: exported(pixel_values=x)
    latency = time_forward(variants, pixels, args.latency_repeats)
    result["latency_ms"] = latency

    # ---- costs and summaries
    base_bytes = param_bytes(base)
    for name, m in result["methods"].items():
        if name == "base":
            m["cost"]["latency_ms"] = latency.get("base")
            continue
        cls = list(m["per_class"])
        m["summary_all"] = summarize(m["per_class"], base_rows, cls)
        m["summary_peer_classes"] = summarize(m["per_class"], base_rows, peer_classes)
        if name == "wf":
            round_s = m["_seconds"]["round"]
            m["cost"] = {"seconds_one_class": round_s, "seconds_all_classes": round_s,
                         "all_classes_extrapolated": False,
                         "storage_bytes_all_classes": base_bytes + m["filter_bytes"],
                         "latency_ms": latency.get("wf (adapter, one row per request)"),
                         "latency_ms_exported": latency.get("wf (exported)"),
                         "latency_ms_row_per_sample": latency.get("wf (adapter, a row per sample)")}
            continue
        secs = [s for s in m["_seconds"].values() if s is not None]
        mean_s = _mean(secs)
        covered = set(m["_seconds"]) >= set(all_classes) and len(secs) == len(m["_seconds"])
        m["cost"] = {"seconds_one_class": mean_s,
                     "seconds_all_classes": sum(secs) if covered else (n * mean_s if mean_s is not None else None),
                     "all_classes_extrapolated": not covered,
                     "storage_bytes_all_classes": n * base_bytes,
                     "latency_ms": latency.get(name)}
        if name == "logit_mask":
            m["note"] = ("stored here as N full models like every peer; a runtime mask on ONE model would serve every "
                         "class, which is exactly why it is only a control: nothing is removed from the weights.")
    for m in result["methods"].values():
        m.pop("_seconds", None)
    result["total_wall_time_s"] = round(time.perf_counter() - started, 3)

    # ---- write
    from hf_unlearn.evaluation.report import to_jsonable

    _write(out / "benchmark.json", json.dumps(to_jsonable(result), indent=2, default=str) + "\n")
    _write(out / "benchmark.md", markdown(result))
    scatter(result, out / "benchmark.png")
    tradeoff(result, out / "tradeoff.png")
    log(markdown(result).split("## Notes")[0])
    log(f"wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}, {out / 'benchmark.png'} "
        f"({result['total_wall_time_s']:.1f} s in all)")
    return result


def processor_size(processor) -> tuple[int, int]:
    size = getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    return 224, 224


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
