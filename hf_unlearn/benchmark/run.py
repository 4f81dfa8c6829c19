"""The benchmark: the weight-filter adapter (WF) against every peer unlearning method, same data, same
model, same machine. ``recipes/benchmark.py`` is its command line; its docstring says what runs where
and what each number means.

```py
>>> from hf_unlearn.benchmark.arguments import BenchmarkArguments
>>> from hf_unlearn.benchmark.run import run_benchmark
>>> result = run_benchmark(BenchmarkArguments(output_dir="/tmp/bench-smoke", smoke=True, num_threads=1,
...                                           wf_config="recipes/configs/fashion_mnist_resnet.yaml"))
>>> sorted(result["methods"])[:3], result["methods"]["wf"]["cost"]["all_classes_extrapolated"]
(['base', 'boundary_shrink', 'finetune'], False)
```

Outputs in ``output_dir``: ``benchmark.json`` (everything), ``benchmark.md`` (tables), ``benchmark.png``
(forget vs retain accuracy, marker area = time to serve all classes) and ``tradeoff.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from ..adapter import UnlearnAdapter
from ..adapter_files import read_adapter_config
from ..baselines import BASELINES, get_baseline, param_bytes, tensor_loaders
from ..baselines.tuning import stratified_split, tune_peer
from ..data.loaders import subsample
from ..data.loading import load_image_dataset
from ..data.transforms import to_tensor_dataset
from ..evaluation.definitions import format_definitions
from ..evaluation.report import to_jsonable
from ..evaluation.suite import EXACT_MATRIX_LIMIT, evaluate_unlearning
from ..files import atomic_write_text
from ..environment import environment_info
from ..commands.arguments import load_config
from ..commands.train_base import TrainBaseArguments
from ..training.base import train_base
from ..training.job import ARGUMENT_CLASSES, run_untraining, untraining_job_arguments
from ..training.retrain import RETRAIN_INFO, retrain_dirs_from_root, retrain_folder_name
from .arguments import ALL_METHODS, SMOKE_HPARAMS, BenchmarkArguments
from .rows import (evaluate, mean, method_cost, representation_kwargs, row_from_set_report, rows_from_adapter_report,
                   summarize)
from .tables import fmt, markdown, scatter, tradeoff
from .timing import time_forward

__all__ = ["run_benchmark", "BenchmarkSetup", "train_or_load_base", "train_or_load_wf", "BENCHMARK_COLUMNS", "benchmark_definitions"]

# What the benchmark's own columns mean (the suite's definitions come with the run's settings filled in).
BENCHMARK_COLUMNS = {
    "RA drop": "base model's RA on the same test samples minus the method's RA (pt); negative = better "
               "than base (removing a class removes its confusions).",
    "time to serve all N": "WF: its one untraining round; a peer run on every class: the measured sum; "
                           "otherwise N x mean per-class time (extrapolated).",
    "storage for all N": "peers: N full models (N x parameter bytes); WF: backbone + filters of every "
                         "class; base: one model.",
    "latency": "median wall time of one forward of a batch (interleaved rounds over every model).",
}


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class BenchmarkSetup:
    """What every stage of the run shares: the base model, the data, and which classes each method runs on."""

    out: Path
    device: torch.device
    base_dir: Path
    base: Any
    processor: Any
    base_metrics: dict
    train_eval: Any
    test: Any
    x_train: torch.Tensor
    y_train: torch.Tensor
    names: list
    peer_classes: list
    all_classes: list
    methods: list
    classes_of: dict
    eval_classes: list
    overrides: dict

    @property
    def num_classes(self) -> int:
        return len(self.all_classes)


# --------------------------------------------------------------------------------------------- models


def train_or_load_base(args, out: Path):
    """``(base_dir, model, processor, metrics)``: ``--base_dir``, the adapter's own base, or one trained here."""
    if not args.base_dir and args.adapter:  # the adapter's own base model, never a fresh one
        named = read_adapter_config(args.adapter).get("base_model_name_or_path")
        if not named or not Path(named).is_dir():
            raise SystemExit(f"--adapter {args.adapter} names the base model {named!r}, which is not a local folder: "
                             "pass --base_dir.")
        args.base_dir = named
    base_dir = Path(args.base_dir) if args.base_dir else out / "base"
    metrics_path = base_dir / "metrics.json"
    if not (base_dir / "config.json").is_file():
        log(f"[base] training {args.preset} on {args.dataset} for {args.base_epochs} epochs -> {base_dir}")
        opts = {"preset": args.preset, "dataset": args.dataset, "epochs": args.base_epochs,
                "output_dir": str(base_dir), "seed": args.seed, "no_progress": True}
        if args.num_threads:
            opts["num_threads"] = args.num_threads
        train_base(TrainBaseArguments(**opts))
    model = AutoModelForImageClassification.from_pretrained(str(base_dir), use_safetensors=True).eval()
    processor = AutoImageProcessor.from_pretrained(str(base_dir))
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return base_dir, model, processor, metrics


# What the benchmark records of a given adapter's untraining_metrics.json.
WF_METRIC_KEYS = ("untraining_time_s", "untraining_cpu_time_s", "steps", "stop_reason", "num_processes")


def train_or_load_wf(args, out: Path, base_dir: Path):
    """``(adapter, untraining seconds, info)``: ``--adapter`` loaded, or one round untrained here."""
    if args.adapter:
        folder = Path(args.adapter)
        adapter = UnlearnAdapter.from_pretrained(str(folder), base_model=str(base_dir))
        metrics_path = folder / "untraining_metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        seconds = metrics.get("untraining_time_s")
        log(f"[wf] loaded {folder} (untraining time {seconds} s from its metrics)")
        summary = {k: metrics[k] for k in WF_METRIC_KEYS if k in metrics}  # not its whole history
        return adapter.eval(), seconds, {"adapter": str(folder), "trained_here": False, "metrics": summary}
    folder = out / "wf"
    options = {**load_config(args.wf_config, ARGUMENT_CLASSES), "base_model": str(base_dir),
               "output_dir": str(folder), "dataset": args.dataset, "eval_split": "", "eval_pairs": 0,
               "no_progress": True}
    if args.wf_epochs:  # an epoch schedule, as `--epochs` on the command line: no step budget, no check
        options.update(epochs=args.wf_epochs, eval_every=0, max_steps=0)
    if args.max_train_samples:
        options["max_train_samples"] = args.max_train_samples
    if args.num_threads:
        options["num_threads"] = args.num_threads
    log(f"[wf] untraining every class in one round ({args.wf_config}) -> {folder}")
    metrics = run_untraining(*untraining_job_arguments(**options))
    adapter = UnlearnAdapter.from_pretrained(str(folder), base_model=str(base_dir))
    return adapter.eval(), metrics["untraining_time_s"], {"adapter": str(folder), "trained_here": True,
                                                          "config": args.wf_config, "options": options}


# --------------------------------------------------------------------------------------------- set-up


def check_one_process() -> None:
    """Methods are timed one by one: a multi-process launch would time them against each other."""
    try:
        from accelerate import PartialState  # optional here: without accelerate there is one process
    except ImportError:
        return
    if PartialState().num_processes > 1:
        raise SystemExit("recipes/benchmark.py times methods one by one: run it in ONE process "
                         "(accelerate launch --num_processes 1, or python).")


def classes_per_method(args, methods, peer_classes, all_classes) -> dict:
    """WF: every class (one round serves them all); retrain: --retrain_classes; fast peers: every class;
    the other peers: the peer classes."""
    retrain_classes = all_classes if args.retrain_classes == ["all"] else sorted({int(c) for c in args.retrain_classes})
    classes_of = {}
    for m in methods:
        if m == "wf":
            classes_of[m] = all_classes if args.wf_rows == "all" and not args.smoke else peer_classes
            if len(classes_of[m]) > EXACT_MATRIX_LIMIT:
                # The benchmark compares per-class rows, which need WF's exact accuracy rows; above the
                # limit the suite only estimates RA (sampled), so say so before anything is trained.
                raise ValueError(f"{len(all_classes)} classes: the benchmark evaluates WF's rows exactly, at most "
                                 f"{EXACT_MATRIX_LIMIT} of them; pass --wf_rows peer (WF on the peer classes; its one "
                                 "round still trains every row), and evaluate every row with recipes/evaluate.py.")
        elif m == "retrain":
            classes_of[m] = retrain_classes
        elif m in args.all_class_methods:
            classes_of[m] = all_classes
        else:
            classes_of[m] = peer_classes
    return classes_of


def prepare(args) -> BenchmarkSetup:
    """The base model (trained if missing), the data as tensors, and the classes of every method."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.hparams) if args.hparams else {}
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
    methods = [m for m in ALL_METHODS if m in args.methods]
    classes_of = classes_per_method(args, methods, peer_classes, all_classes)
    eval_classes = sorted({c for cs in classes_of.values() for c in cs} | set(peer_classes))
    log(f"[setup] {args.dataset}: {len(y_train)} train / {test.num_rows} test samples, {n} classes; "
        f"peer classes {peer_classes}; device {device}, {torch.get_num_threads()} thread(s)")
    return BenchmarkSetup(out=out, device=device, base_dir=base_dir, base=base, processor=processor,
                          base_metrics=base_metrics, train_eval=train_eval, test=test, x_train=x_train,
                          y_train=y_train, names=names, peer_classes=peer_classes, all_classes=all_classes,
                          methods=methods, classes_of=classes_of, eval_classes=eval_classes, overrides=overrides)


def new_result(args, s: BenchmarkSetup) -> dict:
    """The result's settings and base-model entries; the stages fill ``methods`` and ``tuning``."""
    base, metrics = s.base, s.base_metrics
    return {
        "settings": {**dataclasses.asdict(args), "num_classes": s.num_classes, "class_names": s.names,
                     "peer_classes": s.peer_classes, "classes_per_method": s.classes_of, "device": str(s.device),
                     "torch_threads": torch.get_num_threads(),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                     "versions": environment_info()["versions"]},
        "base": {"dir": str(s.base_dir), "model_type": base.config.model_type,
                 "num_parameters": sum(p.numel() for p in base.parameters()), "param_bytes": param_bytes(base),
                 "test_accuracy_pct": (100.0 * metrics["test_accuracy"]) if "test_accuracy" in metrics else None,
                 "train_time_s": metrics.get("train_time_s")},
        "methods": {}, "tuning": {},
        "definitions": benchmark_definitions(args),
    }


def benchmark_definitions(args) -> dict[str, str]:
    """Every column's definition, the suite's with this run's shot count and relearning budget."""
    suite = format_definitions(shots=args.few_shot_shots, relearn_steps=args.relearn_steps)
    return {**suite, **BENCHMARK_COLUMNS}


def fixed_hparams(args, s: BenchmarkSetup, name: str) -> dict:
    """A peer's hyperparameters set before any tuning: the smoke budgets, then the user's --hparams."""
    return {**(SMOKE_HPARAMS.get(name, {}) if args.smoke else {}), **s.overrides.get(name, {})}


# --------------------------------------------------------------------------------------------- stages


def tune_peers(args, s: BenchmarkSetup, result: dict) -> dict:
    """Equal-budget search for every tunable peer on a validation split carved from train; returns
    ``{peer: best hparams}`` and records every trial in ``result["tuning"]``."""
    tuned: dict[str, dict] = {}
    val = torch.from_numpy(stratified_split(s.y_train.numpy(), args.val_fraction, args.seed))
    x_fit, y_fit, x_val, y_val = s.x_train[~val], s.y_train[~val], s.x_train[val], s.y_train[val]
    tune_class = args.tune_class if args.tune_class is not None else s.peer_classes[0]
    for name in s.methods:
        if name in ("wf", "retrain") or not BASELINES[name].search_space:
            continue
        rec = tune_peer(name, s.base, x_fit, y_fit, x_val, y_val, tune_class, trials=args.tune_trials,
                        batch_size=args.batch_size, seed=args.seed, device=s.device,
                        fixed=fixed_hparams(args, s, name), pinned=set(s.overrides.get(name, {})), log=log)
        rec["val_fraction"] = args.val_fraction
        result["tuning"][name] = rec
        tuned[name] = rec["best"]
    result["tuning_note"] = ("each peer: the same number of configurations, scored on a stratified validation "
                             "split carved from train that the unlearning run never sees; WF's hyperparameters "
                             "come from its own search recorded in recipes/README.md.")
    return tuned


def load_or_train_retrain(args, s: BenchmarkSetup, folder: Path, found: dict, c: int):
    """``(model, seconds, reused)`` of the retrain reference of class ``c``: reused from disk when there."""
    if c in found and (Path(found[c]) / RETRAIN_INFO).is_file():
        info = json.loads((Path(found[c]) / RETRAIN_INFO).read_text())
        model = AutoModelForImageClassification.from_pretrained(found[c], use_safetensors=True).eval()
        return model, info.get("wall_time_s"), True
    hp = {"base_dir": str(s.base_dir), "output_dir": str(folder),
          "overrides": {"no_progress": True, **({"num_threads": args.num_threads} if args.num_threads else {})}}
    r = get_baseline("retrain").unlearn(s.base, [c], hparams=hp, seed=args.seed, device=s.device)
    return r.model, r.seconds, False


def run_retrain(args, s: BenchmarkSetup, result: dict, latency_models: dict) -> dict:
    """The retrain references (models on disk, reused when present), evaluated; returns ``{class: model}``."""
    retrain_root = Path(args.retrain_root) if args.retrain_root else s.out / "retrain"
    found = retrain_dirs_from_root(retrain_root) if retrain_root.is_dir() else {}
    retrain_models, per_class, seconds, reused = {}, {}, {}, {}
    for c in s.classes_of["retrain"]:
        model, seconds[c], reused[c] = load_or_train_retrain(args, s, retrain_root / retrain_folder_name(c), found, c)
        model.to(s.device).eval()
        retrain_models[c] = model
        per_class[c] = {**row_from_set_report(evaluate(model, s.train_eval, s.test, s.processor, [c], args)),
                        "seconds": seconds[c], "reused": reused[c]}
        log(f"[retrain] class {c}: FA {per_class[c]['forget_acc']:.2f}% RA {per_class[c]['retain_acc']:.2f}% "
            f"({'reused' if reused[c] else 'trained'}, {seconds[c]} s)")
    latency_models["retrain"] = next(iter(retrain_models.values()))
    result["methods"]["retrain"] = {"per_class": per_class, "hparams": {"recipe": str(s.base_dir)},
                                    "root": str(retrain_root), "_seconds": seconds}
    return retrain_models


def run_base_rows(args, s: BenchmarkSetup, result: dict, retrain_models: dict) -> dict:
    """The unmodified model's rows on every evaluated class (after the retrain references, so that CKA and
    relearning read as gaps to them); the base goes first in the tables."""
    base_rows = {}
    for c in s.eval_classes:
        base_rows[c] = row_from_set_report(evaluate(s.base, s.train_eval, s.test, s.processor, [c], args,
                                                    retrain_models))
    result["methods"]["base"] = {"per_class": base_rows, "hparams": None,
                                 "summary_all": summarize(base_rows, base_rows, s.eval_classes),
                                 "summary_peer_classes": summarize(base_rows, base_rows, s.peer_classes),
                                 "cost": {"seconds_one_class": None, "seconds_all_classes": None,
                                          "storage_bytes_all_classes": param_bytes(s.base)},
                                 "note": "the unmodified model, for reference (nothing forgotten)."}
    log(f"[base] test accuracy {result['base']['test_accuracy_pct']}%")
    result["methods"] = {"base": result["methods"].pop("base"), **result["methods"]}
    return base_rows


def run_wf(args, s: BenchmarkSetup, result: dict, retrain_models: dict):
    """WF: one untraining round (or a given adapter) for every class, evaluated per row; returns the adapter."""
    adapter, wf_seconds, wf_info = train_or_load_wf(args, s.out, s.base_dir)
    adapter.to(s.device)
    classes = s.classes_of["wf"]
    report = evaluate_unlearning(adapter, s.train_eval, s.test, rows=classes, image_processor=s.processor,
                                 seed=args.seed, progress=False, batch_size=args.eval_batch_size,
                                 exact_limit=max(s.num_classes, EXACT_MATRIX_LIMIT),  # these rows, exactly
                                 max_mia_samples=args.max_mia_samples, max_probe_samples=args.max_probe_samples,
                                 **representation_kwargs(args, retrain_models, classes))
    test_counts = np.bincount(np.asarray(s.test.dataset[s.test.label_column]), minlength=s.num_classes).tolist()
    per_class = rows_from_adapter_report(report, classes, test_counts)
    filter_bytes = sum(p.numel() * p.element_size() for name, p in adapter.model.named_parameters()
                       if "weight_filter_theta" in name)
    result["methods"]["wf"] = {
        "per_class": per_class, "hparams": wf_info, "_seconds": {"round": wf_seconds},
        "filter_bytes": int(filter_bytes),
        "note": "one untraining round serves every class; evaluated per row (row c = class c forgotten), "
                "equal to the exported (merged) model of that class.",
    }
    log(f"[wf] mean FA {fmt(mean(r['forget_acc'] for r in per_class.values()))}% "
        f"RA {fmt(mean(r['retain_acc'] for r in per_class.values()))}% (round {wf_seconds} s)")
    return adapter


def run_peer(args, s: BenchmarkSetup, name: str, hp: dict, retrain_models: dict, latency_models: dict) -> dict:
    """One peer on each of its classes: unlearn, evaluate, time (and save when asked)."""
    method = get_baseline(name)
    per_class, seconds, infos = {}, {}, {}
    for c in s.classes_of[name]:
        retain_loader, forget_loader = tensor_loaders(s.x_train, s.y_train, [c], batch_size=args.batch_size,
                                                      seed=args.seed)
        r = method.unlearn(s.base, [c], retain_loader, forget_loader, hparams=hp, seed=args.seed, device=s.device)
        seconds[c] = r.seconds
        infos[c] = json.loads(json.dumps(r.info, default=str))
        row = row_from_set_report(evaluate(r.model, s.train_eval, s.test, s.processor, [c], args, retrain_models))
        per_class[c] = {**row, "seconds": r.seconds}
        if args.save_models:
            r.model.save_pretrained(str(s.out / "models" / name / retrain_folder_name(c)))
        if name not in latency_models:
            latency_models[name] = r.model
        log(f"[{name}] class {c}: FA {row['forget_acc']:.2f}% RA {row['retain_acc']:.2f}% "
            f"MIA {fmt(row['mia_efficacy'])} probe {fmt(row['probe'])} 5-shot {fmt(row['few_shot_probe'])} "
            f"({r.seconds:.2f} s)")
    return {"per_class": per_class, "hparams": r.hparams, "info": infos,
            "hparams_source": (sys.modules[type(method).__module__].__doc__ or "").strip().splitlines()[0],
            "_seconds": seconds}


def measure_latency(args, s: BenchmarkSetup, latency_models: dict, adapter) -> dict:
    """Median forward time of one batch for every model, interleaved (WF: three ways to serve it)."""
    pixels = torch.randn(args.latency_batch, int(s.base.config.num_channels), *processor_size(s.processor),
                         device=s.device)
    variants = {k: (lambda m: (lambda x: m(pixel_values=x)))(m.eval()) for k, m in latency_models.items()}
    if adapter is not None:
        c0 = s.peer_classes[0]
        per_sample = torch.arange(args.latency_batch, device=s.device) % s.num_classes
        exported = adapter.export(forget=c0).to(s.device).eval()
        variants["wf (adapter, one row per request)"] = lambda x: adapter(pixel_values=x, forget=c0)
        variants["wf (adapter, a row per sample)"] = lambda x: adapter(pixel_values=x, forget=per_sample)
        variants["wf (exported)"] = lambda x: exported(pixel_values=x)
    return time_forward(variants, pixels, args.latency_repeats)


def add_costs_and_summaries(s: BenchmarkSetup, result: dict, base_rows: dict, latency: dict) -> None:
    """Every method's summaries (all its classes; the peer classes) and costs; drops the raw timings."""
    base_bytes = param_bytes(s.base)
    for name, m in result["methods"].items():
        if name == "base":
            m["cost"]["latency_ms"] = latency.get("base")
            continue
        cls = list(m["per_class"])
        m["summary_all"] = summarize(m["per_class"], base_rows, cls)
        m["summary_peer_classes"] = summarize(m["per_class"], base_rows, s.peer_classes)
        m["cost"] = method_cost(name, m, latency, s.all_classes, base_bytes)
        if name == "logit_mask":
            m["note"] = ("stored here as N full models like every peer; a runtime mask on ONE model would serve every "
                         "class, which is exactly why it is only a control: nothing is removed from the weights.")
    for m in result["methods"].values():
        m.pop("_seconds", None)


def processor_size(processor) -> tuple[int, int]:
    """``(height, width)`` the image processor produces (224 x 224 when it does not say)."""
    size = getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    return 224, 224


def write_outputs(result: dict, out: Path) -> None:
    """benchmark.json, benchmark.md, benchmark.png and tradeoff.png (each written atomically)."""
    atomic_write_text(out / "benchmark.json", json.dumps(to_jsonable(result), indent=2, default=str) + "\n")
    atomic_write_text(out / "benchmark.md", markdown(result))
    scatter(result, out / "benchmark.png")
    tradeoff(result, out / "tradeoff.png")
    log(markdown(result).split("## Notes")[0])
    log(f"wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}, {out / 'benchmark.png'} "
        f"({result['total_wall_time_s']:.1f} s in all)")


# --------------------------------------------------------------------------------------------- the run


def run_benchmark(args: BenchmarkArguments) -> dict:
    """Run every stage in order (the order fixes the RNG streams: keep it) and write the outputs."""
    check_one_process()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    started = time.perf_counter()
    s = prepare(args)
    result = new_result(args, s)
    tuned = tune_peers(args, s, result) if args.tune else {}
    latency_models: dict[str, Any] = {"base": s.base}
    retrain_models = run_retrain(args, s, result, latency_models) if "retrain" in s.methods else {}
    base_rows = run_base_rows(args, s, result, retrain_models)
    adapter = run_wf(args, s, result, retrain_models) if "wf" in s.methods else None
    for name in s.methods:
        if name in ("wf", "retrain"):
            continue
        hp = {**(SMOKE_HPARAMS.get(name, {}) if args.smoke else {}), **tuned.get(name, {}),
              **s.overrides.get(name, {})}
        result["methods"][name] = {**run_peer(args, s, name, hp, retrain_models, latency_models),
                                   "tuned": name in tuned}
    result["latency_ms"] = latency = measure_latency(args, s, latency_models, adapter)
    add_costs_and_summaries(s, result, base_rows, latency)
    result["total_wall_time_s"] = round(time.perf_counter() - started, 3)
    write_outputs(result, s.out)
    return result
